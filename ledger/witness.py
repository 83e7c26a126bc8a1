"""A C2SP tlog-witness, as pure logic, and the evidence of a log's misbehaviour.

The witness keeps, per log origin it is configured for, the latest checkpoint it cosigned
(the raw signed note). :meth:`Witness.add_checkpoint` implements the C2SP tlog-witness
``add-checkpoint`` checks in the order the spec gives them; each refusal is an error whose
``http_status`` is the spec's status code (404, 403, 400, 409 with the current size, 422,
413 for bodies over :data:`MAX_BODY_BYTES`).

Invariants:
* Check-and-set is atomic (one lock per witness): two concurrent requests for sizes N and
  N+K can never roll the stored size back (RELIABILITY W3).
* The new state is durable (a synced LevelDB write) before a cosignature is made, so a
  crash after answering never forgets what was cosigned, and after a restart the witness
  never cosigns a smaller or inconsistent tree.
* Signatures by unknown keys are ignored; only the configured log key counts.
* An :class:`Evidence` is self-contained: two raw notes signed by the log and, when it
  proves a split view, the common size at which the two trees differ with a consistency
  proof from each tree's root at that size to its checkpoint. :func:`verify_evidence`
  re-checks it offline with nothing but the log's verifier key.

Storage: witness state and evidence live in private key spaces of the node's
:class:`~ledger.store.Database` (``db.log("\\x00turtles-...")``: names no checkpoint origin
can have, holding only ``c``-rows through ``put_checkpoint``), until the store offers a
small key-value API of its own.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import merkle
from ledger.checkpoint import (
    Checkpoint,
    NoteVerifier,
    _b64decode,
    add_signatures,
    cosign,
    cosigner_vkey,
    note_signer,
    open_note,
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
from ledger.keys import Signer
from ledger.store import Database, LogStore

MAX_BODY_BYTES = 128 * 1024
"""Largest add-checkpoint request body (63 proof lines and a note with many cosignatures)."""

MAX_PROOF_LINES = 63
EVIDENCE_TYPE = "turtles.evidence/v1"
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


# --- evidence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitView:
    """Where two checkpoints of one log disagree: both trees' roots at a common ``size``.

    ``older_proof`` proves ``(size, older_root)`` is a prefix of the older checkpoint's tree,
    ``newer_proof`` that ``(size, newer_root)`` is a prefix of the newer one's. Distinct roots
    at one size mean the two signed checkpoints cannot both be true.
    """

    size: int
    older_root: bytes
    older_proof: tuple[bytes, ...]
    newer_root: bytes
    newer_proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Evidence:
    """What was seen when a log (or a peer serving it) contradicted itself.

    ``kind`` is ``equivocation`` (same size, two roots) or ``fork`` (a larger tree that does
    not extend the older one) when ``split`` proves it; otherwise the data failed a check
    but proves nothing to a third party: ``bad-proof``, ``bad-entries``, ``bad-record``,
    ``bad-note``. ``older``/``newer`` are the raw signed notes.
    """

    origin: str
    kind: str
    message: str
    older: str | None = None
    newer: str | None = None
    proof: tuple[bytes, ...] = ()
    index: int | None = None
    split: SplitView | None = None
    source: str | None = None
    detected_at: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    @property
    def proven(self) -> bool:
        """Whether the evidence claims a split view (check it with :func:`verify_evidence`)."""
        return self.split is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes in standard base64)."""
        out: dict[str, Any] = {
            "type": EVIDENCE_TYPE, "origin": self.origin, "kind": self.kind,
            "message": self.message, "older": self.older, "newer": self.newer,
            "proof": _b64list(self.proof), "index": self.index, "source": self.source,
            "detected_at": self.detected_at, "proven": self.proven,
        }
        if self.split is not None:
            s = self.split
            out["split"] = {
                "size": s.size,
                "older_root": _b64(s.older_root), "older_proof": _b64list(s.older_proof),
                "newer_root": _b64(s.newer_root), "newer_proof": _b64list(s.newer_proof),
            }
        return out

    def to_json(self) -> str:
        """A self-contained evidence file."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, obj: Any) -> Evidence:
        """Parse :meth:`to_dict` output.

        Raises:
            InputError: not an evidence object of this version.
        """
        try:
            if obj["type"] != EVIDENCE_TYPE:
                raise InputError(f"evidence type {obj['type']!r} is not {EVIDENCE_TYPE}")
            split = None
            if obj.get("split") is not None:
                s = obj["split"]
                split = SplitView(
                    _int(s["size"]), _unb64(s["older_root"]), _unb64list(s["older_proof"]),
                    _unb64(s["newer_root"]), _unb64list(s["newer_proof"]),
                )
            return cls(
                origin=_str(obj["origin"]), kind=_str(obj["kind"]), message=_str(obj["message"]),
                older=_opt_str(obj.get("older")), newer=_opt_str(obj.get("newer")),
                proof=_unb64list(obj.get("proof", [])),
                index=None if obj.get("index") is None else _int(obj["index"]),
                split=split, source=_opt_str(obj.get("source")),
                detected_at=_int(obj.get("detected_at", 0)),
            )
        except (KeyError, TypeError) as e:
            raise InputError(f"evidence is missing or mistypes a field ({e})") from e

    @classmethod
    def from_json(cls, text: str | bytes) -> Evidence:
        """Parse an evidence file."""
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise InputError(f"evidence is not JSON (or nests too deeply): {e}") from e
        return cls.from_dict(obj)


def verify_evidence(evidence: Evidence, vkey: str) -> bool:
    """True iff ``evidence`` proves that the log with verifier key ``vkey`` signed two
    checkpoints that cannot both be true. Needs nothing else (offline)."""
    s = evidence.split
    if s is None or evidence.older is None or evidence.newer is None:
        return False
    try:
        older = Checkpoint.parse(open_note(evidence.older, vkey))
        newer = Checkpoint.parse(open_note(evidence.newer, vkey))
        if older.origin != newer.origin or older.origin != evidence.origin:
            return False
        if not s.size <= min(older.size, newer.size) or s.older_root == s.newer_root:
            return False
        merkle.verify_consistency(s.size, older.size, s.older_proof, s.older_root, older.root)
        merkle.verify_consistency(s.size, newer.size, s.newer_proof, s.newer_root, newer.root)
    except TurtlesError:
        return False
    return True


def same_size_evidence(origin: str, older: str, newer: str, *, source: str | None = None) -> Evidence:
    """Two notes of one size with different roots (callers have verified both)."""
    a, b = _checkpoint_of(older), _checkpoint_of(newer)
    return Evidence(
        origin, "equivocation",
        f"{origin} signed two checkpoints of size {a.size} with different roots",
        older=older, newer=newer, split=SplitView(a.size, a.root, (), b.root, ()), source=source,
    )


def proof_evidence(
    origin: str, older: str, newer: str, proof: Sequence[bytes], *, source: str | None = None,
) -> Evidence:
    """Evidence for a consistency proof from ``older`` to ``newer`` that did not verify.

    When the proof does lead to the newer root, its first part is the newer tree's root at
    the older size (collision resistance binds it); if that differs from the older root,
    the evidence proves a fork. Otherwise it is a bad proof, proving nothing.
    """
    a, b = _checkpoint_of(older), _checkpoint_of(newer)
    proof = tuple(proof)
    split = fork_split(a.size, a.root, (), b.size, b.root, proof)
    if split is not None:
        return Evidence(
            origin, "fork", f"{origin}: the tree of size {b.size} does not extend the one of size {a.size}",
            older=older, newer=newer, proof=proof, split=split, source=source,
        )
    return Evidence(
        origin, "bad-proof", f"{origin}: consistency proof from size {a.size} to {b.size} does not verify",
        older=older, newer=newer, proof=proof, source=source,
    )


def fork_split(
    size: int, root: bytes, root_proof: Sequence[bytes], newer_size: int, newer_root: bytes,
    proof: Sequence[bytes],
) -> SplitView | None:
    """A split view if ``proof`` (from ``size`` to ``newer_size``) reaches ``newer_root`` from
    a root at ``size`` other than ``root``; ``root_proof`` ties ``root`` to the older tree."""
    try:
        merkle.verify_consistency(size, newer_size, proof, root, newer_root)
        return None
    except ProofError as e:
        calculated = e.evidence.get("calculated")
        if e.evidence.get("which") != "root1" or not isinstance(calculated, bytes):
            return None
    try:
        merkle.verify_consistency(size, newer_size, proof, calculated, newer_root)
    except ProofError:
        return None
    return SplitView(size, root, tuple(root_proof), calculated, tuple(proof))


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
            raw = _b64decode(line)
            if raw is None:
                raise InputError(f"proof line {len(proof)} is not canonical base64")
            proof.append(raw)
        return cls(int(number), tuple(proof), rest)


# --- persistence ------------------------------------------------------------------------------


def _space(db: Database, name: str) -> LogStore:
    return db.log("\x00turtles-" + name)


class WitnessStore:
    """The latest cosigned note per origin, in the node's LevelDB (synced writes)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def latest(self, origin: str) -> str | None:
        """The latest cosigned note for ``origin``, if any."""
        found = _space(self._db, "witness\x00" + origin).latest_checkpoint()
        return None if found is None else found[1]

    def put(self, origin: str, size: int, note: str) -> None:
        """Record ``note`` (of tree size ``size``) as cosigned; durable on return."""
        _space(self._db, "witness\x00" + origin).put_checkpoint(size, note)


class EvidenceStore:
    """Every evidence a node recorded, in order, in its LevelDB (synced writes)."""

    def __init__(self, db: Database) -> None:
        self._space = _space(db, "evidence")
        self._lock = threading.Lock()

    def add(self, evidence: Evidence) -> int:
        """Persist ``evidence``; returns its sequence number."""
        with self._lock:
            last = self._space.latest_checkpoint()
            n = 0 if last is None else last[0] + 1
            self._space.put_checkpoint(n, evidence.to_json())
        return n

    def all(self) -> list[Evidence]:
        """Every stored evidence, oldest first."""
        return [Evidence.from_json(text) for _, text in self._space.checkpoints()]


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


def _b64list(items: Sequence[bytes]) -> list[str]:
    return [_b64(p) for p in items]


def _unb64(text: Any) -> bytes:
    raw = _b64decode(text) if isinstance(text, str) else None
    if raw is None:
        raise InputError(f"evidence: {str(text)[:60]!r} is not canonical base64")
    return raw


def _unb64list(items: Any) -> tuple[bytes, ...]:
    if not isinstance(items, list):
        raise InputError("evidence: want a list of base64 hashes")
    return tuple(_unb64(p) for p in items)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"evidence: {value!r} is not a non-negative integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"evidence: {value!r} is not a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


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
