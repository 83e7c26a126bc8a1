"""Full audit of a stored log, from scratch (an offline ``fsck``).

The audit trusts nothing derived: it re-reads every entry, checks the hash chain
(``seq``, ``prev``), re-verifies every signature and re-runs admission against a fresh
trust state fed only by the entries before it, recomputes every stored Merkle hash and the
root, and checks the head and every stored signed checkpoint against the recomputed tree.

Invariant: :func:`audit_log` returns a report only when every check passed; the first
failure raises :class:`~ledger.errors.CorruptionError` naming the index and the check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger import merkle
from ledger.checkpoint import Checkpoint, open_note
from ledger.entry import Entry, LoggedRecord
from ledger.errors import CorruptionError, NoteError, TurtlesError
from ledger.log import Gatekeeper
from ledger.store import LogStore


@dataclass
class AuditReport:
    """What the audit checked."""

    origin: str
    size: int
    root: bytes
    entries: int = 0
    signatures: int = 0
    checkpoints: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "origin": self.origin, "size": self.size, "root": self.root.hex(),
            "entries": self.entries, "signatures": self.signatures,
            "checkpoints": self.checkpoints, "kinds": dict(sorted(self.kinds.items())),
        }


def _fail(origin: str, index: int | None, check: str, **evidence: Any) -> CorruptionError:
    where = f"entry {index}" if index is not None else "log"
    return CorruptionError(f"audit of {origin}: {where}: {check}", index=index, check=check, **evidence)


def audit_log(
    store: LogStore,
    *,
    vkey: str,
    new_gate: Callable[[], Gatekeeper],
    prepare: Callable[[Gatekeeper, Entry], LoggedRecord],
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit ``store`` from scratch.

    Args:
        store: the log's key space.
        vkey: the C2SP verifier key its checkpoints must verify under.
        new_gate: makes an empty trust state (admission is replayed entry by entry).
        prepare: verifies one entry's signatures and admission against the gate
            (``ledger.log.Log.prepare`` logic, shared so the rules are identical).
        progress: called as ``progress(done, total)`` every 1,000 entries.

    Raises:
        CorruptionError: the first check that failed, with its evidence.
    """
    origin = store.origin
    head = store.head()
    report = AuditReport(origin, head.size, head.root)
    gate = new_gate()
    prev = bytes(32)
    hashes: dict[tuple[int, int], bytes] = {}
    for seq, raw in store.entries(0, head.size):
        if seq != report.entries:
            raise _fail(origin, report.entries, f"entry missing (next stored is {seq})")
        try:
            entry = Entry.from_bytes(raw)
        except TurtlesError as e:
            raise _fail(origin, seq, f"entry does not parse: {e.message}") from e
        if entry.seq != seq:
            raise _fail(origin, seq, f"entry claims seq {entry.seq}")
        if entry.prev != prev:
            raise _fail(origin, seq, "hash chain broken (prev does not match the previous leaf)")
        try:
            logged = prepare(gate, entry)
        except TurtlesError as e:
            raise _fail(origin, seq, f"record does not verify or is not admitted: {e.message}") from e
        gate.add(logged)
        report.signatures += len(logged.signers)
        kind = getattr(logged.record, "kind", "attestation")
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
        created = merkle.stored_hashes_for_leaf(seq, entry.leaf_hash, lambda cs: [hashes[c] for c in cs])
        try:
            stored = store.hashes([(level, idx) for level, idx, _ in created])
        except CorruptionError as e:
            raise _fail(origin, seq, f"stored Merkle hashes missing: {e.message}") from e
        for (level, idx, h), kept in zip(created, stored, strict=True):
            if kept != h:
                raise _fail(origin, seq, f"stored Merkle hash ({level}, {idx}) does not match the entries",
                            expected=h, calculated=kept)
            hashes[(level, idx)] = h
        prev = entry.leaf_hash
        report.entries += 1
        if progress and report.entries % 1000 == 0:
            progress(report.entries, head.size)
        _forget_covered(hashes, seq + 1)
    if report.entries != head.size:
        raise _fail(origin, report.entries, f"head says size {head.size} but only {report.entries} entries are stored")
    if head.size and prev != head.last:
        raise _fail(origin, None, "head's last leaf hash does not match the last entry")
    root = merkle.tree_hash(head.size, store.hashes)
    if root != head.root:
        raise _fail(origin, None, "stored hashes do not give the head's root", expected=head.root, calculated=root)
    recomputed = merkle.tree_hash(head.size, lambda cs: [hashes[c] for c in cs])
    if recomputed != head.root:
        raise _fail(origin, None, "entries do not give the head's root", expected=head.root, calculated=recomputed)
    report.checkpoints = _audit_checkpoints(store, vkey, head.size)
    if progress:
        progress(report.entries, head.size)
    return report


def _forget_covered(hashes: dict[tuple[int, int], bytes], size: int) -> None:
    """Keep only the hashes a tree of ``size`` or larger can still need (its right edge)."""
    keep = set()
    level, n = 0, size
    while n:
        if n & 1:
            keep.add((level, n - 1))
        level, n = level + 1, n >> 1
    for c in [c for c in hashes if c not in keep]:
        del hashes[c]


def _audit_checkpoints(store: LogStore, vkey: str, size: int) -> int:
    count = 0
    covered = False
    for n, note in store.checkpoints():
        try:
            cp = Checkpoint.parse(open_note(note, vkey))
        except NoteError as e:
            raise _fail(store.origin, None, f"checkpoint of size {n} does not verify: {e.message}") from e
        if cp.size != n or cp.origin != store.origin:
            raise _fail(store.origin, None, f"checkpoint stored under size {n} says {cp.origin} size {cp.size}")
        if n > size:
            raise _fail(store.origin, None, f"a checkpoint of size {n} exists but the log has {size} entries")
        root = merkle.tree_hash(n, store.hashes)
        if root != cp.root:
            raise _fail(store.origin, None, f"checkpoint of size {n} has a root the log does not give",
                        expected=cp.root, calculated=root)
        count += 1
        covered = covered or n == size
    if not covered and size:
        raise _fail(store.origin, None, f"no signed checkpoint covers the log's size {size}")
    return count


__all__ = ["AuditReport", "audit_log"]
