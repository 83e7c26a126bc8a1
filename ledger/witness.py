"""A C2SP tlog-witness, as pure logic.

The witness keeps, per log origin it is configured for, the latest checkpoint it cosigned
(the raw signed note). :meth:`Witness.add_checkpoint` implements the C2SP tlog-witness
``add-checkpoint`` checks in the order the spec gives them; each refusal is an error whose
``http_status`` is the spec's status code (404, 403, 400, 409 with the current size, 422,
413 for bodies over :data:`MAX_BODY_BYTES`). A refusal that shows the log contradicting
itself carries an :class:`~ledger.evidence.Evidence`; the evidence names of
:mod:`ledger.evidence` are re-exported here for existing callers.

Invariants:
* Check-and-set is atomic (one lock per witness): two concurrent requests for sizes N and
  N+K can never roll the stored size back (RELIABILITY W3).
* The new state is durable (a synced LevelDB write) before a cosignature is made, so a
  crash after answering never forgets what was cosigned, and after a restart the witness
  never cosigns a smaller or inconsistent tree.
* Signatures by unknown keys are ignored; only the configured log key counts.
* :meth:`AddCheckpoint.parse` is strict: canonical decimal size, at most
  :data:`MAX_PROOF_LINES` canonical base64 proof lines, at most ``limit`` bytes.

Storage: witness state lives in private key spaces of the node's
:class:`~ledger.store.Database` (:func:`~ledger.evidence.reserved_space`: names no
checkpoint origin can have, holding only ``c``-rows through ``put_checkpoint``), until the
store offers a small key-value API of its own.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ledger import merkle
from ledger.checkpoint import (
    Checkpoint,
    NoteVerifier,
    add_signatures,
    cosign,
    cosigner_vkey,
    note_signer,
    parse_verifier_key,
    split_note,
    verify_note,
)
from ledger.errors import (
    ConsistencyError,
    InputError,
    NoteError,
    NotFoundError,
    ProofError,
    TooLargeError,
    TurtlesError,
)
from ledger.evidence import (
    EVIDENCE_TYPE,
    Evidence,
    EvidenceStore,
    SplitView,
    fork_split,
    proof_evidence,
    reserved_space,
    same_size_evidence,
    verify_evidence,
)
from ledger.keys import Signer
from ledger.notekeys import b64decode_strict
from ledger.store import Database

MAX_BODY_BYTES = 128 * 1024
"""Largest add-checkpoint request body (63 proof lines and a note with many cosignatures)."""

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


# --- errors with the tlog-witness status codes -------------------------------------------


class SizeConflictError(InputError):
    """``old`` is not the size the witness last cosigned (409, body = ``current_size``)."""

    code = "size_conflict"
    http_status = 409

    def __init__(self, message: str, *, current_size: int) -> None:
        super().__init__(message, current_size=current_size)
        self.current_size = current_size


class WitnessProofError(ProofError):
    """The consistency proof does not verify (422); ``exhibit`` holds what was received."""

    code = "bad_consistency_proof"
    http_status = 422


# --- the add-checkpoint request --------------------------------------------------------------


@dataclass(frozen=True)
class AddCheckpoint:
    """A tlog-witness ``add-checkpoint`` request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def to_bytes(self) -> bytes:
        """``old N``, one base64 line per proof hash, an empty line, the signed note."""
        lines = [f"old {self.old_size}", *(_b64(p) for p in self.proof), ""]
        return ("\n".join(lines) + "\n" + self.note).encode()

    @classmethod
    def parse(cls, body: bytes, *, limit: int = MAX_BODY_BYTES) -> AddCheckpoint:
        """Parse a request body strictly.

        Raises:
            TooLargeError: over ``limit`` bytes (413).
            InputError: malformed (400), including more than 63 proof lines.
        """
        if len(body) > limit:
            raise TooLargeError(f"add-checkpoint body has {len(body)} bytes, limit {limit}", limit=limit)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError("add-checkpoint body is not UTF-8") from e
        first, sep, rest = text.partition("\n")
        word, _, number = first.partition(" ")
        if not sep or word != "old" or not _canonical_decimal(number):
            raise InputError(f"add-checkpoint body must start with 'old <size>', got {first[:40]!r}")
        proof: list[bytes] = []
        while True:
            line, sep, rest = rest.partition("\n")
            if not sep:
                raise InputError("add-checkpoint body has no empty line before the checkpoint")
            if not line:
                break
            if len(proof) == MAX_PROOF_LINES:
                raise InputError(f"add-checkpoint body has more than {MAX_PROOF_LINES} proof lines")
            raw = b64decode_strict(line)
            if raw is None:
                raise InputError(f"proof line {len(proof)} is not canonical base64")
            proof.append(raw)
        return cls(int(number), tuple(proof), rest)


# --- persistence ------------------------------------------------------------------------------


class WitnessStore:
    """The latest cosigned note per origin, in the node's LevelDB (synced writes)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def latest(self, origin: str) -> str | None:
        """The latest cosigned note for ``origin``, if any."""
        found = reserved_space(self._db, "witness\x00" + origin).latest_checkpoint()
        return None if found is None else found[1]

    def put(self, origin: str, size: int, note: str) -> None:
        """Record ``note`` (of tree size ``size``) as cosigned; durable on return."""
        reserved_space(self._db, "witness\x00" + origin).put_checkpoint(size, note)


# --- the witness -------------------------------------------------------------------------------


class Witness:
    """Cosigns checkpoints of the logs in ``logs`` (origin -> log vkey) as ``name``.

    ``on_evidence`` is called (under the witness lock, before the error is raised) with
    every evidence a refused request produced, so the caller can persist and act on it.
    ``clock`` gives POSIX seconds (cosignature timestamps).
    """

    def __init__(
        self,
        store: WitnessStore,
        *,
        name: str,
        signer: Signer,
        logs: Mapping[str, str],
        on_evidence: Callable[[Evidence], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._key = note_signer(name, signer)  # KeyFormatError unless Ed25519
        self.vkey = cosigner_vkey(name, self._key.verifier.public_raw)
        self._store = store
        self._logs: dict[str, NoteVerifier] = {o: parse_verifier_key(v) for o, v in logs.items()}
        self._on_evidence = on_evidence
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def origins(self) -> tuple[str, ...]:
        """Origins this witness cosigns."""
        return tuple(sorted(self._logs))

    def add_log(self, origin: str, vkey: str) -> None:
        """Start witnessing ``origin`` (checkpoints signed by ``vkey``)."""
        self._logs[origin] = parse_verifier_key(vkey)

    def cosigned(self, origin: str) -> str | None:
        """The latest note cosigned for ``origin``."""
        return self._store.latest(origin)

    def cosigned_note(self, origin: str) -> str | None:
        """The latest note cosigned for ``origin``, carrying this witness's cosignature.

        The stored note is kept as the log signed it; the cosignature line is made afresh
        (the same statement about a checkpoint this witness already checked, dated now).
        """
        note = self._store.latest(origin)
        if note is None:
            return None
        text = split_note(note)[0]
        return add_signatures(note, [cosign(text, self.name, self._key.signer, int(self._clock()))])

    def size(self, origin: str) -> int:
        """Size of the latest cosigned checkpoint of ``origin`` (0 if none)."""
        note = self._store.latest(origin)
        return 0 if note is None else _checkpoint_of(note).size

    def add_checkpoint(self, request: AddCheckpoint, *, source: str | None = None) -> str:
        """Check, persist and cosign; returns the response body (cosignature lines).

        Raises:
            NotFoundError: unknown origin (404).
            NoteError: no valid signature by the log's key (403).
            InputError: malformed note or checkpoint, or old size above the new size (400).
            SizeConflictError: old size is not the stored size (409 + ``current_size``).
            ConsistencyError: same size, different root: an equivocation (409, ``exhibit``).
            WitnessProofError: the consistency proof does not verify (422, ``exhibit``).
        """
        try:
            text, _ = split_note(request.note)
        except NoteError as e:
            raise InputError(f"checkpoint note is malformed: {e.message}") from e
        origin = text.split("\n", 1)[0]
        verifier = self._logs.get(origin)
        if verifier is None:
            raise NotFoundError(f"this witness does not know the log {origin[:200]!r}")
        verify_note(request.note, [verifier])
        try:
            cp = Checkpoint.parse(text)
        except NoteError as e:
            raise InputError(f"note is not a checkpoint: {e.message}") from e
        if request.old_size > cp.size:
            raise InputError(f"old size {request.old_size} is above the checkpoint size {cp.size}")
        with self._lock:
            stored = self._store.latest(origin)
            held = _checkpoint_of(stored) if stored is not None else None
            size, root = (held.size, held.root) if held else (0, merkle.EMPTY_ROOT)
            if request.old_size != size:
                raise SizeConflictError(
                    f"old size {request.old_size} is not the cosigned size {size} of {origin}", current_size=size
                )
            if stored is not None and cp.size == size and cp.root != root:
                ev = same_size_evidence(origin, stored, request.note, source=source)
                self._report(ev)
                raise ConsistencyError(ev.message, origin=origin, older=stored, newer=request.note, exhibit=ev)
            try:
                merkle.verify_consistency(size, cp.size, request.proof, root, cp.root)
            except ProofError as e:
                ev = (
                    proof_evidence(origin, stored, request.note, request.proof, source=source)
                    if stored is not None
                    else Evidence(origin, "bad-proof", e.message, newer=request.note, proof=request.proof, source=source)
                )
                self._report(ev)
                raise WitnessProofError(
                    f"consistency proof from {size} to {cp.size} does not verify: {e.message}",
                    origin=origin, exhibit=ev,
                ) from e
            if stored is None or cp.size > size:
                self._store.put(origin, cp.size, request.note)
        return cosign(text, self.name, self._key.signer, int(self._clock())) + "\n"

    def crosscheck(self, note: str, *, source: str | None = None) -> Evidence | None:
        """Compare a note of a witnessed log seen elsewhere (gossip) with the cosigned one.

        Returns evidence of an equivocation when both have one size and two roots; None
        when they agree or cannot be compared. A note that does not verify is ignored.
        """
        try:
            text, _ = split_note(note)
            verifier = self._logs.get(text.split("\n", 1)[0])
            if verifier is None:
                return None
            verify_note(note, [verifier])
            cp = Checkpoint.parse(text)
        except TurtlesError:
            return None
        stored = self._store.latest(cp.origin)
        if stored is None:
            return None
        held = _checkpoint_of(stored)
        if held.size != cp.size or held.root == cp.root:
            return None
        ev = same_size_evidence(cp.origin, stored, note, source=source)
        self._report(ev)
        return ev

    def _report(self, evidence: Evidence) -> None:
        if self._on_evidence is not None:
            self._on_evidence(evidence)


# --- helpers -------------------------------------------------------------------------------------


def _checkpoint_of(note: str) -> Checkpoint:
    """The checkpoint in a note this process already verified (or stored after verifying)."""
    text, _ = split_note(note)
    return Checkpoint.parse(text)


def _canonical_decimal(text: str) -> bool:
    return text == "0" or (text.isdigit() and text.isascii() and text[0] != "0" and len(text) <= 19)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


__all__ = [
    "EVIDENCE_TYPE",
    "MAX_BODY_BYTES",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Evidence",
    "EvidenceStore",
    "SizeConflictError",
    "SplitView",
    "Witness",
    "WitnessProofError",
    "WitnessStore",
    "fork_split",
    "proof_evidence",
    "same_size_evidence",
    "verify_evidence",
]
