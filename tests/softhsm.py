"""Real SoftHSM2 tokens for tests, one token directory per test.

How per-test tokens work in one process: SoftHSM2 reads ``SOFTHSM2_CONF`` (and scans its token
directory) at ``C_Initialize``, and ``C_Finalize`` discards all of its state, so the next
``C_Initialize`` reads the configuration again. :class:`ledger.hsm.Pkcs11Context` finalises the
module when it is closed. So each test writes its own ``softhsm2.conf`` and token directory under
``tmp_path``, points ``SOFTHSM2_CONF`` at it (the ``softhsm_token`` fixture does so through
``monkeypatch``), and opens a context that the fixture closes again. Two rules follow:

* only one context per module may be open at a time in a process (a second ``C_Initialize``
  fails with a clear ``HSMError``): tests close theirs, or use the ``pkcs11_context`` fixture;
* tokens are seen as they were at ``C_Initialize``: make every token a test needs (call
  :func:`make_token` again with the same directory and another label) before opening a context.

Nodes started as subprocesses get a token each the same way, through ``SoftHSMToken.env``.
SoftHSM2 missing is an error, never a skip: run ``make bootstrap``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ledger.hsm import Pkcs11Uri

SO_PIN = "5678"
_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


class SoftHSMMissingError(RuntimeError):
    """SoftHSM2 is not installed; the tests need it."""


@dataclass(frozen=True)
class SoftHSMToken:
    """An initialised SoftHSM2 token in a private directory.

    Attributes:
        env: the variables a process needs to use this token as turtles does
            (``SOFTHSM2_CONF``, ``TURTLES_PKCS11_MODULE``, ``TURTLES_PKCS11_PIN``).
    """

    conf_path: Path
    token_dir: Path
    module: str
    label: str
    pin: str = field(repr=False)
    pin_file: Path
    env: dict[str, str] = field(repr=False)

    def uri(self, obj: str, *, key_id: bytes | None = None) -> str:
        """A ``pkcs11:`` KEYREF for object ``obj`` on this token."""
        return Pkcs11Uri(token=self.label, object=obj, id=key_id).format()


def find_module() -> str:
    """Path of libsofthsm2.so (``$SOFTHSM2_MODULE`` overrides the search)."""
    override = os.environ.get("SOFTHSM2_MODULE")
    for path in (override,) if override else _MODULE_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise SoftHSMMissingError(
        f"SoftHSM2 module not found (looked at {override or ', '.join(_MODULE_CANDIDATES)}): "
        "run `make bootstrap`"
    )


def make_token(
    tmp_path: Path,
    label: str = "test",
    pin: str = "1234",
    *,
    reset_on_fork: bool = False,
) -> SoftHSMToken:
    """Write ``tmp_path/softhsm2.conf`` (once) and initialise a token labelled ``label`` in it.

    Several tokens may share one directory, each with its own label.

    Raises:
        SoftHSMMissingError: softhsm2-util or the module is missing.
        ValueError: a token with this label already exists in ``tmp_path``.
    """
    module = find_module()
    util = shutil.which("softhsm2-util")
    if util is None:
        raise SoftHSMMissingError("softhsm2-util not found on PATH: run `make bootstrap`")
    tmp_path.mkdir(parents=True, exist_ok=True)
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(exist_ok=True)
    conf_path = tmp_path / "softhsm2.conf"
    conf = (
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
        f"library.reset_on_fork = {'true' if reset_on_fork else 'false'}\n"
    )
    if conf_path.exists() and conf_path.read_text() != conf:
        raise ValueError(f"{conf_path} exists with other settings (reset_on_fork differs)")
    conf_path.write_text(conf)
    pin_file = tmp_path / f"{label}.pin"
    if pin_file.exists():
        raise ValueError(f"a token labelled {label!r} already exists in {tmp_path}")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf_path)}
    done = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"softhsm2-util --init-token failed: {done.stderr.strip() or done.stdout.strip()}"
        )
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    return SoftHSMToken(
        conf_path=conf_path,
        token_dir=token_dir,
        module=module,
        label=label,
        pin=pin,
        pin_file=pin_file,
        env={
            "SOFTHSM2_CONF": str(conf_path),
            "TURTLES_PKCS11_MODULE": module,
            "TURTLES_PKCS11_PIN": pin,
        },
    )
