"""C2SP signed notes: signing, splitting, verifying, opening and merging signatures.

Keys and signature lines are in :mod:`ledger.notekeys`; their public names are re-exported here.

Invariants:

* Every formatter has a strict parser that accepts only the canonical form it produces: a
  final newline, no control characters but newline, bounded sizes (:data:`MAX_NOTE_SIZE`,
  :data:`MAX_SIGNATURES`).
* Signatures are made and checked over the exact UTF-8 bytes of the note text.
* Signature lines whose (name, key ID) match no known key are ignored; a line that matches a
  known key must verify or the whole note is rejected, as must a second line by the same
  known key; a note with no verified line is rejected (signed-note).
* Any failure to open or verify a note raises :class:`ledger.errors.NoteError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ledger.errors import KeyFormatError, NoteError
from ledger.notekeys import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    MAX_TIMESTAMP,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    RawEd25519Signer,
    _parse_line,
    cosigner_vkey,
    key_id,
    note_signer,
    parse_verifier_key,
    verifier_key,
)

MAX_NOTE_SIZE = 1 << 20
MAX_SIGNATURES = 100
DEFAULT_MAX_SKEW = 60
"""Seconds a cosignature timestamp may lie ahead of the verifier's clock."""

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


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


# --- internals -----------------------------------------------------------------------------


def _key(sig: NoteSignature) -> tuple[str, int]:
    return (sig.name, sig.key_id)


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
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "RawEd25519Signer",
    "VerifiedNote",
    "add_signatures",
    "cosigner_vkey",
    "key_id",
    "note_signer",
    "open_note",
    "parse_verifier_key",
    "sign_note",
    "split_note",
    "verifier_key",
    "verify_note",
]
