"""C2SP signed-note keys: key IDs, verifier keys, signers and the signature lines they make.

The layer below :mod:`ledger.note` and :mod:`ledger.checkpoint`; it imports neither.

Invariants:

* A key is a (name, key ID, public key) triple; the key ID is derived from the other two
  (signed-note), and :func:`parse_verifier_key` rejects a vkey whose ID does not match.
* Signatures are made and checked over exact bytes. A signer's output is verified before its
  line is emitted, so a faulty or mis-keyed signer (for example an HSM holding the wrong key)
  can never publish a bad signature.
* Parsers accept only canonical input: strict base64, key names without spaces, ``+`` or
  control characters, cosignature timestamps below 2**63.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol

from ledger._ed25519 import ed25519_verify
from ledger.encoding import is_unicode
from ledger.errors import KeyFormatError, NoteError, SignatureError
from ledger.keys import Signer

ALG_ED25519 = 0x01
"""signed-note signature type: Ed25519 over the note text."""

ALG_COSIGNATURE_V1 = 0x04
"""signed-note signature type: timestamped Ed25519 checkpoint cosignature (tlog-cosignature)."""

MAX_TIMESTAMP = 2**63 - 1

_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_SIG_PREFIX = "\u2014 "  # em dash, space
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")


class RawEd25519Signer(Protocol):
    """Anything that signs with an Ed25519 key whose raw 32-byte public key it can show.

    Satisfied by an HSM-backed signer as well as by a software key wrapper.
    """

    @property
    def public_raw(self) -> bytes:
        """The raw 32-byte Ed25519 public key (RFC 8032 encoding)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``data``."""
        ...


# --- keys ----------------------------------------------------------------------------------


def key_id(name: str, alg: int, public_raw: bytes) -> int:
    """signed-note key ID: first 4 bytes of SHA-256(name || "\\n" || alg || public key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_raw).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class NoteVerifier:
    """A known note key: name, raw Ed25519 public key and signature type."""

    name: str
    public_raw: bytes
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise KeyFormatError(
                f"key name {self.name[:80]!r} is empty or has spaces, '+' or controls"
            )
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise KeyFormatError(f"signature type 0x{self.alg:02x} is not supported")
        if len(self.public_raw) != _PUBLIC_KEY_SIZE:
            raise KeyFormatError(f"Ed25519 public key is {len(self.public_raw)} bytes, want 32")

    @property
    def key_id(self) -> int:
        """The 32-bit key ID signatures by this key carry."""
        return key_id(self.name, self.alg, self.public_raw)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+hash+base64(alg || key)``."""
        material = base64.b64encode(bytes([self.alg]) + self.public_raw).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """Check a signature (the bytes after the key ID) over note ``text``.

        Returns:
            The cosignature timestamp for :data:`ALG_COSIGNATURE_V1` keys, else None.

        Raises:
            NoteError: the signature does not verify.
        """
        timestamp = None
        message = text
        if self.alg == ALG_COSIGNATURE_V1:
            if len(signature) != 8 + _SIGNATURE_SIZE:
                raise NoteError(f"cosignature by {self.name} is {len(signature)} bytes, want 72")
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                raise NoteError(f"cosignature by {self.name} has timestamp {timestamp} >= 2**63")
            message, signature = _cosigned_message(text, timestamp), signature[8:]
        if not _ed25519_ok(self.public_raw, signature, message):
            raise NoteError(
                f"signature by known key {self.name}+{self.key_id:08x} does not verify",
                name=self.name,
                key_id=self.key_id,
            )
        return timestamp


def verifier_key(name: str, public_raw: bytes) -> str:
    """The Ed25519 (type 0x01) vkey for ``name`` and a raw public key."""
    return NoteVerifier(name, public_raw, ALG_ED25519).vkey


def cosigner_vkey(name: str, public_raw: bytes) -> str:
    """The tlog-cosignature/v1 (type 0x04) vkey for ``name`` and a raw public key."""
    return NoteVerifier(name, public_raw, ALG_COSIGNATURE_V1).vkey


def parse_verifier_key(vkey: str) -> NoteVerifier:
    """Parse a vkey ``name+hash+base64(alg || key)`` of type 0x01 or 0x04.

    Raises:
        KeyFormatError: malformed, unsupported type, or the key ID does not match.
    """
    if not isinstance(vkey, str) or not vkey.isprintable() or not is_unicode(vkey):
        raise KeyFormatError(f"vkey {vkey[:120]!r} holds characters that are not valid text")
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise KeyFormatError(f"vkey {vkey[:120]!r} is not name+hash8+base64")
    material = b64decode_strict(parts[2])
    if material is None or len(material) < 2:
        raise KeyFormatError(f"vkey {vkey[:120]!r} has bad key material")
    verifier = NoteVerifier(parts[0], material[1:], material[0])
    if verifier.key_id != int(parts[1], 16):
        raise KeyFormatError(
            f"vkey {vkey[:120]!r} key ID does not match, want {verifier.key_id:08x}"
        )
    return verifier


@dataclass(frozen=True)
class NoteSigner:
    """Signs notes as ``name`` with an Ed25519 key that may live in an HSM."""

    name: str
    signer: RawEd25519Signer
    verifier: NoteVerifier = field(init=False, repr=False, compare=False)
    """The matching verifier, fixed at construction (the public key is read once)."""

    def __post_init__(self) -> None:
        verifier = NoteVerifier(self.name, bytes(self.signer.public_raw), ALG_ED25519)
        object.__setattr__(self, "verifier", verifier)

    @property
    def vkey(self) -> str:
        """The matching vkey."""
        return self.verifier.vkey

    def sign_line(self, text: str) -> str:
        """The signature line (no trailing newline) for note ``text``.

        Raises:
            SignatureError: the signer produced a signature that does not verify.
        """
        return _signature_line(self.verifier, self.signer, text.encode(), b"")


@dataclass(frozen=True)
class _KeySigner:
    """Shows a :class:`ledger.keys.Signer` (software or PKCS#11) as a RawEd25519Signer."""

    signer: Signer

    @property
    def public_raw(self) -> bytes:
        return self.signer.public_key.raw

    def sign(self, data: bytes) -> bytes:
        return self.signer.sign(data)


def note_signer(name: str, signer: Signer) -> NoteSigner:
    """A NoteSigner for ``name`` over any Ed25519 :class:`ledger.keys.Signer`.

    Raises:
        KeyFormatError: the key is not Ed25519 (C2SP notes here are Ed25519 only).
    """
    if signer.public_key.alg != "ed25519":
        raise KeyFormatError(f"note key for {name} must be Ed25519, not {signer.public_key.alg}")
    return NoteSigner(name, _KeySigner(signer))


# --- signature lines -----------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note. ``timestamp`` is set for verified cosignatures."""

    name: str
    key_id: int
    signature: bytes
    verified: bool = False
    timestamp: int | None = None

    @property
    def line(self) -> str:
        """The signature line, without its newline."""
        raw = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(raw).decode()}"


def b64decode_strict(text: str) -> bytes | None:
    """Decode strict standard base64: alphabet, padding and trailing bits all canonical.

    Returns:
        The bytes, or None when ``text`` is not the canonical base64 of any bytes (so
        ``base64.b64encode(result).decode() == text`` whenever a result is returned).
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


_b64decode = b64decode_strict  # the former private name, still imported by ledger.checkpoint


# --- internals -----------------------------------------------------------------------------


def _valid_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" or c < " " for c in name)


def _parse_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(f"signature line {line[:80]!r} does not start with an em dash and space")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    raw = b64decode_strict(b64)
    if not _valid_name(name) or raw is None or len(raw) < 5:
        raise NoteError(f"signature line {line[:80]!r} is malformed")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def _ed25519_ok(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    return ed25519_verify(public_raw, signature, message)


def _signature_line(
    verifier: NoteVerifier, signer: RawEd25519Signer, message: bytes, prefix: bytes
) -> str:
    """Sign ``message``, check the signature, and format the line as key ID || prefix || sig."""
    signature = bytes(signer.sign(message))
    if not _ed25519_ok(verifier.public_raw, signature, message):
        raise SignatureError(
            f"signer for {verifier.name} produced a signature that does not verify",
            name=verifier.name,
        )
    return NoteSignature(verifier.name, verifier.key_id, prefix + signature).line


__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_TIMESTAMP",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "RawEd25519Signer",
    "b64decode_strict",
    "cosigner_vkey",
    "key_id",
    "note_signer",
    "parse_verifier_key",
    "verifier_key",
]
