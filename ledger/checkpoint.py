"""C2SP checkpoints, signed notes and Ed25519 cosignatures (tlog-checkpoint, signed-note,
tlog-cosignature v1).

Invariants:

* Every formatter has a strict parser that accepts only the canonical form it produces:
  decimal sizes without leading zeros, canonical base64, a final newline, no control
  characters but newline, bounded sizes (:data:`MAX_NOTE_SIZE`, :data:`MAX_SIGNATURES`).
* Signatures are made and checked over the exact UTF-8 bytes of the note text.
* A key is a (name, key ID, public key) triple. Signature lines whose (name, key ID) match no
  known key are ignored; a line that matches a known key must verify or the whole note is
  rejected, as must a second line by the same known key; a note with no verified line is
  rejected (signed-note).
* A signer's output is verified before its line is emitted, so a faulty or mis-keyed signer
  (for example an HSM holding the wrong key) can never publish a bad signature.
* Any failure to open or verify a note or checkpoint raises :class:`ledger.errors.NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.errors import KeyFormatError, NoteError, SignatureError
from ledger.merkle import HASH_SIZE, MAX_TREE_SIZE

ALG_ED25519 = 0x01
"""signed-note signature type: Ed25519 over the note text."""

ALG_COSIGNATURE_V1 = 0x04
"""signed-note signature type: timestamped Ed25519 checkpoint cosignature (tlog-cosignature)."""

MAX_NOTE_SIZE = 1 << 20
MAX_SIGNATURES = 100
MAX_TIMESTAMP = 2**63 - 1
DEFAULT_MAX_SKEW = 60
"""Seconds a cosignature timestamp may lie ahead of the verifier's clock."""

_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_SIG_PREFIX = "\u2014 "  # em dash, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
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


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for what, line in [("origin", self.origin), *(("extension", e) for e in self.extensions)]:
            if not line or "\n" in line or _CONTROL.search(line):
                raise NoteError(
                    f"checkpoint {what} line {line[:80]!r} is empty or has control characters"
                )
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint size {self.size} is out of range", size=self.size)
        if len(self.root) != HASH_SIZE:
            raise NoteError(f"checkpoint root is {len(self.root)} bytes, want {HASH_SIZE}")

    def to_text(self) -> str:
        """The checkpoint body, each line ending in a newline."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly (the inverse of :meth:`to_text`).

        Raises:
            NoteError: not exactly a canonical checkpoint body.
        """
        _check_text(text, "checkpoint")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(f"checkpoint has {len(lines)} lines, want at least 3")
        if not _DECIMAL.fullmatch(lines[1]):
            raise NoteError(f"checkpoint size {lines[1][:40]!r} is not a canonical decimal")
        root = _b64decode(lines[2])
        if root is None:
            raise NoteError(f"checkpoint root {lines[2][:80]!r} is not canonical base64")
        return cls(lines[0], int(lines[1]), root, tuple(lines[3:]))


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint body; same as :meth:`Checkpoint.to_text`."""
    return checkpoint.to_text()


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body strictly; same as :meth:`Checkpoint.parse`."""
    return Checkpoint.parse(text)


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
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
        raise KeyFormatError(f"vkey {vkey[:120]!r} is not name+hash8+base64")
    material = _b64decode(parts[2])
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


# --- signed notes --------------------------------------------------------------------------


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


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose text is vouched for by at least one known key.

    Attributes:
        text: the note text, ending in a newline.
        verified_by: names of the known keys whose signatures verified, in note order.
        signatures: every distinct signature line, verified or not, in note order.
    """

    text: str
    verified_by: tuple[str, ...]
    signatures: tuple[NoteSignature, ...]


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """A signed note: ``text``, a blank line, one signature line per signer.

    Raises:
        NoteError: ``text`` is not valid note text, or no or duplicate signers.
        SignatureError: a signer produced a signature that does not verify.
    """
    _check_text(text, "note text")
    if not signers:
        raise NoteError("a note needs at least one signer")
    keys = {(s.name, s.verifier.key_id) for s in signers}
    if len(keys) != len(signers) or len(signers) > MAX_SIGNATURES:
        raise NoteError(f"{len(signers)} signers include duplicates or exceed {MAX_SIGNATURES}")
    return text + "\n" + "".join(s.sign_line(text) + "\n" for s in signers)


def split_note(note: str | bytes) -> tuple[str, tuple[str, ...]]:
    """Split a signed note into its text and signature lines (without newlines).

    Checks the structure only; verifies nothing.

    Raises:
        NoteError: the note is malformed or over the size or signature limits.
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_SIZE:
            raise NoteError(f"note is {len(note)} bytes, limit {MAX_NOTE_SIZE}", size=len(note))
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteError("note is not valid UTF-8") from e
    _check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    lines = note[split + 2 : -1].split("\n")
    if lines == [""]:
        raise NoteError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, limit {MAX_SIGNATURES}")
    for line in lines:
        _parse_line(line)
    return note[: split + 1], tuple(lines)


def verify_note(
    note: str | bytes,
    verifiers: Sequence[NoteVerifier],
    *,
    now: int | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> VerifiedNote:
    """Open a signed note with the known keys ``verifiers``.

    Args:
        note: the note as received.
        verifiers: the known keys; lines by other keys are ignored.
        now: if given (POSIX seconds), cosignatures dated after ``now + max_skew`` reject
            the note.
        max_skew: allowed clock skew in seconds.

    Raises:
        NoteError: malformed; a known key's signature fails or appears twice; a future
            cosignature; ambiguous verifiers; or no signature by a known key.
    """
    text, lines = split_note(note)
    known: dict[tuple[str, int], set[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), set()).add(v)
    data = text.encode()
    seen: set[str] = set()
    used: set[tuple[str, int]] = set()
    signatures: list[NoteSignature] = []
    for line in lines:
        sig = _parse_line(line)
        key = (sig.name, sig.key_id)
        candidates = known.get(key)
        if not candidates:
            if line not in seen:
                seen.add(line)
                signatures.append(sig)
            continue
        if len(candidates) > 1:
            raise NoteError(f"several known keys are {sig.name}+{sig.key_id:08x}")
        if key in used:
            raise NoteError(f"known key {sig.name}+{sig.key_id:08x} signs the note twice")
        used.add(key)
        timestamp = next(iter(candidates)).verify(data, sig.signature)
        _check_fresh(timestamp, now, max_skew, sig.name)
        signatures.append(replace(sig, verified=True, timestamp=timestamp))
    verified_by = tuple(s.name for s in signatures if s.verified)
    if not verified_by:
        raise NoteError("note has no signature by a known key", lines=len(lines))
    return VerifiedNote(text, verified_by, tuple(signatures))


def open_note(note: str | bytes, vkey: str) -> str:
    """The text of ``note`` if it carries a valid signature by ``vkey``.

    Raises:
        NoteError: ``vkey`` is malformed, or :func:`verify_note` fails.
    """
    try:
        verifier = parse_verifier_key(vkey)
    except KeyFormatError as e:
        raise NoteError(f"cannot open note: {e.message}") from e
    return verify_note(note, [verifier]).text


def add_signatures(note: str, lines: Sequence[str]) -> str:
    """Merge signature lines (e.g. witnesses' cosignatures) into a signed note.

    A new line replaces an existing line by the same (name, key ID); other existing lines are
    kept, new lines follow them. The lines are checked for form only: verify cosignatures
    (:func:`verify_cosignature`) before merging them.

    Raises:
        NoteError: malformed note or line, two new lines by one key, or too many signatures.
    """
    text, existing = split_note(note)
    new = {}
    for line in lines:
        sig = _parse_line(line)
        if (sig.name, sig.key_id) in new:
            raise NoteError(f"two new signature lines by {sig.name}+{sig.key_id:08x}")
        new[(sig.name, sig.key_id)] = line
    kept = [line for line in existing if _key(_parse_line(line)) not in new]
    merged = [*kept, *new.values()]
    if len(merged) > MAX_SIGNATURES:
        raise NoteError(f"note would have {len(merged)} signatures, limit {MAX_SIGNATURES}")
    result = text + "\n" + "".join(line + "\n" for line in merged)
    _check_text(result, "note")
    return result


# --- cosignatures --------------------------------------------------------------------------


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a tlog-cosignature/v1 signs: header, time line, then the checkpoint body."""
    return _cosigned_message(Checkpoint.parse(checkpoint_text).to_text().encode(), timestamp)


def cosign(checkpoint_text: str, name: str, signer: RawEd25519Signer, timestamp: int) -> str:
    """A tlog-cosignature/v1 signature line (no trailing newline) on a checkpoint body.

    Raises:
        NoteError: ``checkpoint_text`` is not a checkpoint or ``timestamp`` is out of range.
        KeyFormatError: bad name or public key.
        SignatureError: the signer produced a signature that does not verify.
    """
    Checkpoint.parse(checkpoint_text)
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range")
    verifier = NoteVerifier(name, bytes(signer.public_raw), ALG_COSIGNATURE_V1)
    message = _cosigned_message(checkpoint_text.encode(), timestamp)
    return _signature_line(verifier, signer, message, timestamp.to_bytes(8, "big"))


def verify_cosignature(
    checkpoint_text: str,
    line: str,
    verifier: NoteVerifier,
    *,
    now: int | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> int:
    """Check one cosignature line on a checkpoint body and return its timestamp.

    Raises:
        NoteError: not a checkpoint, the line is not by ``verifier`` (which must be a
            type 0x04 key), the signature fails, or it is dated after ``now + max_skew``.
    """
    Checkpoint.parse(checkpoint_text)
    if verifier.alg != ALG_COSIGNATURE_V1:
        raise NoteError(f"key {verifier.name} is not a cosignature/v1 key")
    sig = _parse_line(line)
    if _key(sig) != (verifier.name, verifier.key_id):
        raise NoteError(f"line by {sig.name}+{sig.key_id:08x} is not by cosigner {verifier.vkey}")
    timestamp = verifier.verify(checkpoint_text.encode(), sig.signature)
    if timestamp is None:  # unreachable for a 0x04 key; keeps the type honest
        raise NoteError(f"cosignature by {verifier.name} has no timestamp")
    _check_fresh(timestamp, now, max_skew, verifier.name)
    return timestamp


# --- internals -----------------------------------------------------------------------------


def _key(sig: NoteSignature) -> tuple[str, int]:
    return (sig.name, sig.key_id)


def _valid_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" or c < " " for c in name)


def _check_text(text: str, what: str) -> None:
    if len(text) > MAX_NOTE_SIZE:
        raise NoteError(f"{what} is over {MAX_NOTE_SIZE} bytes", limit=MAX_NOTE_SIZE)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise NoteError(f"{what} is not valid UTF-8 (lone surrogate)") from e
    if size > MAX_NOTE_SIZE:
        raise NoteError(f"{what} is {size} bytes, limit {MAX_NOTE_SIZE}", limit=MAX_NOTE_SIZE)
    if not text.endswith("\n"):
        raise NoteError(f"{what} does not end with a newline")
    bad = _CONTROL.search(text)
    if bad:
        raise NoteError(f"{what} has control character {bad.group()!r} at {bad.start()}")


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64: alphabet, padding and trailing bits all canonical."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def _parse_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(f"signature line {line[:80]!r} does not start with an em dash and space")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    raw = _b64decode(b64)
    if not _valid_name(name) or raw is None or len(raw) < 5:
        raise NoteError(f"signature line {line[:80]!r} is malformed")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def _cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def _ed25519_ok(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    if len(signature) != _SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


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


def _check_fresh(timestamp: int | None, now: int | None, max_skew: int, name: str) -> None:
    if timestamp is not None and now is not None and timestamp > now + max_skew:
        raise NoteError(
            f"cosignature by {name} is dated {timestamp}, after now {now} + {max_skew}s",
            timestamp=timestamp,
            now=now,
        )


__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "DEFAULT_MAX_SKEW",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "Checkpoint",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "RawEd25519Signer",
    "VerifiedNote",
    "add_signatures",
    "cosign",
    "cosignature_message",
    "cosigner_vkey",
    "format_checkpoint",
    "key_id",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "sign_note",
    "split_note",
    "verifier_key",
    "verify_cosignature",
    "verify_note",
]
