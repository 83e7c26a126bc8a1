"""Key references (KEYREF): a PEM file path or an RFC 7512 ``pkcs11:`` URI, made into keys.

Invariants:
* Where a PKCS#11 module path and PIN come from is decided in one place,
  :func:`resolve_pkcs11_access`, always in the same order: explicit argument, then the URI's
  query attributes, then the environment (``TURTLES_PKCS11_MODULE``, ``TURTLES_PKCS11_PIN``).
* One :class:`Pkcs11ContextCache` holds at most one :class:`~ledger.hsm.Pkcs11Context` per
  module (by real path): PKCS#11 allows one initialisation per process. Callers pass the cache
  around; there is no global one.
* PINs and passphrases never appear in messages; secret files are read up to a size cap and
  only their first line counts.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from ledger.errors import KeyFormatError
from ledger.hsm import (
    Pin,
    Pkcs11Context,
    Pkcs11Signer,
    Pkcs11Uri,
    as_pin,
    parse_pkcs11_uri,
    read_public_key,
)
from ledger.keys import PublicKey, Signer, SoftwareSigner

ENV_MODULE = "TURTLES_PKCS11_MODULE"
ENV_PIN = "TURTLES_PKCS11_PIN"
ENV_PASSPHRASE = "TURTLES_KEY_PASSPHRASE"
_MAX_KEY_FILE = 64 * 1024
_MAX_SECRET_FILE = 4096


def is_pkcs11_uri(keyref: str) -> bool:
    """Whether ``keyref`` is a ``pkcs11:`` URI rather than a file path."""
    return keyref[:7].lower() == "pkcs11:"


def read_secret_file(path: str, *, what: str = "PIN") -> str:
    """The first line of a small secret file, stripped of surrounding whitespace.

    Raises:
        KeyFormatError: the file cannot be read, is too large, or its first line is empty.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as e:
        raise KeyFormatError(f"cannot read {what} file {path}: {e.strerror}", path=path) from e
    if len(data) > _MAX_SECRET_FILE:
        raise KeyFormatError(
            f"{what} file {path} is larger than {_MAX_SECRET_FILE} bytes", path=path
        )
    try:
        line = data.decode("utf-8").split("\n", 1)[0].strip()
    except UnicodeDecodeError as e:
        raise KeyFormatError(f"{what} file {path} is not UTF-8", path=path) from e
    if not line:
        raise KeyFormatError(f"{what} file {path} has an empty first line", path=path)
    return line


@dataclass(frozen=True)
class Pkcs11Access:
    """What it takes to use a ``pkcs11:`` key: the parsed URI, module path and PIN (if any)."""

    uri: Pkcs11Uri
    module: str
    pin: Pin | None


def resolve_pkcs11_access(
    uri: Pkcs11Uri | str,
    *,
    module: str | None = None,
    pin: Pin | str | None = None,
    pin_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Pkcs11Access:
    """Decide the module path and PIN for a URI.

    Module: ``module`` argument, else the URI's ``module-path``, else ``$TURTLES_PKCS11_MODULE``.
    PIN: ``pin`` or ``pin_file`` argument (not both), else the URI's ``pin-value`` or
    ``pin-source`` (``file:PATH`` or a path; first line), else ``$TURTLES_PKCS11_PIN``.
    No PIN at all is allowed here (reading a public key needs none).

    Raises:
        KeyFormatError: no module anywhere, both ``pin`` and ``pin_file``, an unusable
            ``pin-source``, a ``module-name`` with nothing else to go on, or an unreadable file.
    """
    parsed = uri if isinstance(uri, Pkcs11Uri) else parse_pkcs11_uri(uri)
    env = os.environ if environ is None else environ
    if pin is not None and pin_file is not None:
        raise KeyFormatError("give a PIN or a PIN file, not both")
    chosen_module = module or parsed.module_path or env.get(ENV_MODULE) or None
    if chosen_module is None:
        extra = (
            f" (module-name={parsed.module_name!r} is not looked up: give a path)"
            if parsed.module_name
            else ""
        )
        raise KeyFormatError(
            f"no PKCS#11 module for {parsed}{extra}: give --pkcs11-module, module-path in the "
            f"URI, or set {ENV_MODULE}"
        )
    if pin is not None:
        secret = as_pin(pin)
    elif pin_file is not None:
        secret = Pin(read_secret_file(pin_file))
    elif parsed.pin_value is not None:
        secret = Pin(parsed.pin_value)
    elif parsed.pin_source is not None:
        secret = Pin(read_secret_file(_pin_source_path(parsed.pin_source)))
    else:
        secret = as_pin(env.get(ENV_PIN) or None)
    return Pkcs11Access(uri=parsed, module=chosen_module, pin=secret)


def _pin_source_path(source: str) -> str:
    """RFC 7512 leaves pin-source's form open; a file (``file:PATH`` or a path) is all we read."""
    if source.startswith("file:"):
        path = source[5:]
        # file:///etc/pin and file:/etc/pin both name /etc/pin
        return path[2:] if path.startswith("///") else path
    if ":" in source.split("/", 1)[0] or source.startswith("|"):
        raise KeyFormatError(f"pin-source {source!r} is not supported: want file:PATH or a path")
    return source


class Pkcs11ContextCache:
    """At most one open :class:`~ledger.hsm.Pkcs11Context` per module for this process.

    Thread-safe. Close it (or use it as a context manager) when the process is done with keys.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[str, Pkcs11Context] = {}

    def get(self, module: str) -> Pkcs11Context:
        """The context for ``module``, opened on first use."""
        path = os.path.realpath(module)
        with self._lock:
            context = self._contexts.get(path)
            if context is None:
                context = self._contexts[path] = Pkcs11Context(path)
            return context

    def close(self) -> None:
        """Close every context."""
        with self._lock:
            contexts, self._contexts = list(self._contexts.values()), {}
        for context in contexts:
            context.close()

    def __enter__(self) -> Pkcs11ContextCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_signer(
    keyref: str,
    *,
    pkcs11_module: str | None = None,
    pin: Pin | str | None = None,
    pin_file: str | None = None,
    passphrase: bytes | None = None,
    context_cache: Pkcs11ContextCache | None = None,
    environ: Mapping[str, str] | None = None,
) -> Signer:
    """A signer for a KEYREF: a PEM private key file, or a ``pkcs11:`` URI.

    A PEM key may be passphrase-encrypted; the passphrase comes from ``passphrase`` or
    ``$TURTLES_KEY_PASSPHRASE`` (the latter only used when the key is encrypted). For a URI,
    see :func:`resolve_pkcs11_access`. Without ``context_cache``, a PKCS#11 signer gets a context
    of its own, closed when the signer is garbage-collected; prefer passing a cache.

    Raises:
        KeyFormatError: unreadable, malformed or unsupported key; missing passphrase.
        HSMError: the token cannot be used (wrong PIN, missing token, ...).
        NotFoundError: the token holds no such key.
    """
    env = os.environ if environ is None else environ
    if not is_pkcs11_uri(keyref):
        return _load_pem_signer(keyref, passphrase=passphrase, environ=env)
    access = resolve_pkcs11_access(
        keyref, module=pkcs11_module, pin=pin, pin_file=pin_file, environ=env
    )
    if context_cache is not None:
        return Pkcs11Signer(context_cache.get(access.module), access.uri, pin=access.pin)
    context = Pkcs11Context(access.module)
    try:
        signer = Pkcs11Signer(context, access.uri, pin=access.pin)
    except BaseException:
        context.close()
        raise
    weakref.finalize(signer, context.close)
    return signer


def load_public_key(
    path_or_keyref: str,
    *,
    pkcs11_module: str | None = None,
    pin: Pin | str | None = None,
    pin_file: str | None = None,
    passphrase: bytes | None = None,
    context_cache: Pkcs11ContextCache | None = None,
    environ: Mapping[str, str] | None = None,
) -> PublicKey:
    """A public key from a PEM public key file, a PEM private key file or a ``pkcs11:`` URI.

    Raises:
        KeyFormatError: unreadable or malformed file, or unsupported key.
        NotFoundError: the token holds no such public key.
    """
    env = os.environ if environ is None else environ
    if not is_pkcs11_uri(path_or_keyref):
        pem = _read_key_file(path_or_keyref)
        if b"-----BEGIN PUBLIC KEY-----" in pem:
            try:
                return PublicKey.from_pem(pem)
            except KeyFormatError as e:
                raise KeyFormatError(f"{path_or_keyref}: {e.message}", path=path_or_keyref) from e
        return _load_pem_signer(path_or_keyref, passphrase=passphrase, environ=env).public_key
    access = resolve_pkcs11_access(
        path_or_keyref, module=pkcs11_module, pin=pin, pin_file=pin_file, environ=env
    )
    if context_cache is not None:
        return read_public_key(context_cache.get(access.module), access.uri, pin=access.pin)
    with Pkcs11Context(access.module) as context:
        return read_public_key(context, access.uri, pin=access.pin)


class KeyLoader:
    """Turns KEYREFs into signers and public keys with one process's settings and contexts.

    Holds the defaults a CLI or node is configured with (module, PIN file, passphrase,
    environment) and a :class:`Pkcs11ContextCache`, so every key on one module shares one
    context. Pass it around; close it when done.
    """

    def __init__(
        self,
        *,
        pkcs11_module: str | None = None,
        pin: Pin | str | None = None,
        pin_file: str | None = None,
        passphrase: bytes | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._module = pkcs11_module
        self._pin = as_pin(pin)
        self._pin_file = pin_file
        self._passphrase = passphrase
        self._environ = environ
        self.contexts = Pkcs11ContextCache()

    def signer(self, keyref: str) -> Signer:
        """See :func:`load_signer`."""
        return load_signer(
            keyref,
            pkcs11_module=self._module,
            pin=self._pin,
            pin_file=self._pin_file,
            passphrase=self._passphrase,
            context_cache=self.contexts,
            environ=self._environ,
        )

    def public_key(self, path_or_keyref: str) -> PublicKey:
        """See :func:`load_public_key`."""
        return load_public_key(
            path_or_keyref,
            pkcs11_module=self._module,
            pin=self._pin,
            pin_file=self._pin_file,
            passphrase=self._passphrase,
            context_cache=self.contexts,
            environ=self._environ,
        )

    def close(self) -> None:
        """Close every PKCS#11 context this loader opened."""
        self.contexts.close()

    def __enter__(self) -> KeyLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyLoader(pkcs11_module={self._module!r}, pin_file={self._pin_file!r})"


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFormatError(f"cannot read key file {path}: {e.strerror}", path=path) from e
    if len(data) > _MAX_KEY_FILE:
        raise KeyFormatError(f"key file {path} is larger than {_MAX_KEY_FILE} bytes", path=path)
    return data


def _load_pem_signer(
    path: str, *, passphrase: bytes | None, environ: Mapping[str, str]
) -> SoftwareSigner:
    pem = _read_key_file(path)
    if b"PRIVATE KEY-----" not in pem:
        what = "a public key" if b"PUBLIC KEY-----" in pem else "not a PEM private key"
        raise KeyFormatError(f"{path} is {what}: signing needs a private key", path=path)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem
    if encrypted and passphrase is None:
        from_env = environ.get(ENV_PASSPHRASE)
        if not from_env:
            raise KeyFormatError(
                f"private key {path} is encrypted: give its passphrase (or set {ENV_PASSPHRASE})",
                path=path,
            )
        passphrase = from_env.encode("utf-8")
    try:
        return SoftwareSigner.from_pem(pem, passphrase)
    except KeyFormatError as e:
        raise KeyFormatError(f"{path}: {e.message}", path=path) from e


__all__ = [
    "ENV_MODULE",
    "ENV_PASSPHRASE",
    "ENV_PIN",
    "KeyLoader",
    "Pkcs11Access",
    "Pkcs11ContextCache",
    "is_pkcs11_uri",
    "load_public_key",
    "load_signer",
    "read_secret_file",
    "resolve_pkcs11_access",
]
