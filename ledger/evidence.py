"""The evidence of a log's misbehaviour: what it is, how it is checked offline, where it is kept.

An :class:`Evidence` records what was seen when a log (or a peer serving it) contradicted
itself; the witness (:mod:`ledger.witness`) and the mirror (:mod:`ledger.mirror`) make it,
the node persists it in an :class:`EvidenceStore` and publishes it.

Invariants:
* An :class:`Evidence` is self-contained: two raw notes signed by the log and, when it
  proves a split view, the common size at which the two trees differ with a consistency
  proof from each tree's root at that size to its checkpoint. :func:`verify_evidence`
  re-checks it offline with nothing but the log's verifier key.
* Notes are kept exactly as received (never re-serialised); hashes travel as canonical
  standard base64, and :meth:`Evidence.from_dict` refuses any other spelling.
* :func:`same_size_evidence` and :func:`proof_evidence` classify notes the caller has
  already verified; they attach a :class:`SplitView` (kind ``equivocation`` or ``fork``)
  only when the data proves one, and otherwise say ``bad-proof``.

Storage: evidence lives in a private key space of the node's
:class:`~ledger.store.Database` (:func:`reserved_space`: a name no checkpoint origin can
have, holding only ``c``-rows through ``put_checkpoint``), appended with synced writes.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import merkle
from ledger.checkpoint import Checkpoint, open_note, split_note
from ledger.errors import InputError, ProofError, TurtlesError
from ledger.notekeys import b64decode_strict
from ledger.store import Database, LogStore

EVIDENCE_TYPE = "turtles.evidence/v1"


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


# --- checking and making evidence ------------------------------------------------------------


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


# --- persistence ------------------------------------------------------------------------------


def reserved_space(db: Database, name: str) -> LogStore:
    """The node-internal key space ``name`` of ``db`` (witness state, evidence).

    Its log name starts with ``\\x00turtles-``, which no checkpoint origin can, so it never
    collides with a log the node holds; callers keep their ``name`` values distinct.
    """
    return db.log("\x00turtles-" + name)


class EvidenceStore:
    """Every evidence a node recorded, in order, in its LevelDB (synced writes)."""

    def __init__(self, db: Database) -> None:
        self._space = reserved_space(db, "evidence")
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


# --- helpers -------------------------------------------------------------------------------------


def _checkpoint_of(note: str) -> Checkpoint:
    """The checkpoint in a note this process already verified (or stored after verifying)."""
    text, _ = split_note(note)
    return Checkpoint.parse(text)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64list(items: Sequence[bytes]) -> list[str]:
    return [_b64(p) for p in items]


def _unb64(text: Any) -> bytes:
    raw = b64decode_strict(text) if isinstance(text, str) else None
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
    "Evidence",
    "EvidenceStore",
    "SplitView",
    "fork_split",
    "proof_evidence",
    "reserved_space",
    "same_size_evidence",
    "verify_evidence",
]
