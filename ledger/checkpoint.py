"""C2SP checkpoints and their Ed25519 cosignatures (tlog-checkpoint, tlog-cosignature v1).

Signed notes and their keys are in :mod:`ledger.note` and :mod:`ledger.notekeys`; every public
name of those is re-exported here, so ``ledger.checkpoint`` stays the one import for callers.

Invariants:

* Every formatter has a strict parser that accepts only the canonical form it produces:
  decimal sizes without leading zeros, canonical base64, a final newline, no control
  characters but newline, bounded sizes.
* A cosignature signs the exact checkpoint body it is given, prefixed with its header and
  time line; its signer's output is verified before the line is emitted.
* Any failure to parse a checkpoint or verify a cosignature raises
  :class:`ledger.errors.NoteError`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ledger.errors import NoteError
from ledger.merkle import HASH_SIZE, MAX_TREE_SIZE
from ledger.note import (
    _CONTROL,
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    DEFAULT_MAX_SKEW,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    RawEd25519Signer,
    VerifiedNote,
    _check_fresh,
    _check_text,
    _key,
    add_signatures,
    cosigner_vkey,
    key_id,
    note_signer,
    open_note,
    parse_verifier_key,
    sign_note,
    split_note,
    verifier_key,
    verify_note,
)
from ledger.notekeys import _b64decode as _b64decode  # also imported from here by ledger.witness
from ledger.notekeys import _cosigned_message, _parse_line, _signature_line

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


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
    "note_signer",
    "open_note",
    "parse_checkpoint",
    "parse_verifier_key",
    "sign_note",
    "split_note",
    "verifier_key",
    "verify_cosignature",
    "verify_note",
]
