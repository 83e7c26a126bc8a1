"""Stage 2 of a log's pipelined group commit: one checkpoint for many groups, then the answers.

The sequencer (stage 1, :class:`ledger.log.Log`) admits, chains and hashes a group of
submissions, commits it in one synced WriteBatch, and hands a :class:`Group` -- the durable
head after it and its requests in queue order -- to the :class:`Publisher`, then goes on
with the next group at once. The publisher's thread takes every group waiting (coalescing:
several committed groups, one signature), signs one checkpoint for the newest head among
them, stores it with a synced put, raises the high-water mark
(:mod:`ledger.watermark`), and only then tells the groups' requests, in queue order. So
per group the sequencer pays one fsync, and the signature (0.1 ms with a software key,
~0.5 ms through SoftHSM2), the checkpoint's put and the mark's ``fdatasync`` overlap the
next group's commit instead of delaying it.

Invariants:

* A request is told it was appended only once its entry is durable (stage 1 committed it)
  and a signed checkpoint covering it is stored and the mark written. Its
  :class:`~ledger._requests.AppendResult` carries that checkpoint, of the newest head the
  publisher signed, and that head's size; a duplicate is answered the same way, so a
  duplicate of an entry that is durable but not yet covered waits for the checkpoint that
  covers it (never one that does not).
* Answers go out in queue order: groups in the order they were committed, each group's
  requests in queue order, and every outcome of the groups taken together is set before the
  first of their futures fires (``Log.append_many`` waits only on the last future of a chunk).
* A failed signature, put or mark rejects the requests that needed it with that error; their
  entries stay durable and unacknowledged, the log goes on, and the next checkpoint (of a
  later group, or :meth:`~ledger._checkpoints.Checkpointer.ensure` on the next open) covers
  them. The note readers see (:attr:`Publisher.note`) changes only after a checkpoint is
  stored and the mark written; its size is never above the log's durable head.

Why the checkpoint's put keeps its own sync (measured and argued in docs/performance.md).
Most of the argument for dropping it holds: the entries it covers were synced by stage 1;
the mark is ``fdatasync``ed and only names a head the store durably holds; a later synced
LevelDB write flushes earlier unsynced ones of the same write-ahead log file; and if the
newest note is lost, :meth:`~ledger._checkpoints.Checkpointer.ensure` signs the durable head
again on open, which cannot fork the log. Two parts fail, so the sync stays:

1. An acknowledged checkpoint must be stored as it was signed (RELIABILITY S3: the power-cut
   test checks every acknowledged note). Without the sync a power cut right after an
   acknowledgement loses the note; it comes back only because Ed25519 is deterministic and
   ``ensure`` re-signs the same head -- and not at all if a later group was committed meanwhile.
2. "A later synced write syncs an earlier unsynced one" is true only within one write-ahead
   log file: when LevelDB switches to a new one (its memtable is full), it closes the old
   file without syncing it, so a later synced commit can survive a power cut while the
   earlier note, still only in the old file's unsynced tail, does not.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from ledger import merkle
from ledger._checkpoints import Checkpointer
from ledger._requests import AppendResult, Request
from ledger.entry import Entry
from ledger.errors import CorruptionError, TurtlesError
from ledger.store import Head, LogStore

_LOG = logging.getLogger("turtles.ledger.log")


@dataclass(slots=True)
class Group:
    """What the sequencer hands the publisher for one committed (or refused) prefix.

    ``requests`` is every request of the prefix in queue order: the ones refused already
    hold their outcome; ``appended[k]`` was committed as ``entries[k]``; each of
    ``duplicates`` is answered as a duplicate of the entry at its index. ``tip`` is the
    durable head after the prefix (the head before it, when nothing was committed).
    """

    tip: Head
    requests: list[Request]
    appended: list[Request] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    duplicates: list[tuple[Request, int, bytes | None]] = field(default_factory=list)


class Publisher:
    """Stage 2: signs, stores and marks checkpoints for committed groups, then answers them."""

    def __init__(self, checkpoints: Checkpointer, store: LogStore, head: Head, note: str) -> None:
        self._checkpoints = checkpoints
        self._store = store
        self._covered = head
        self.note = note
        """The newest stored checkpoint note (of :attr:`covered_size` entries)."""
        self._queue: queue.SimpleQueue[Group | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"checkpointer:{store.origin}", daemon=True)
        self._thread.start()

    @property
    def covered_size(self) -> int:
        """Tree size of :attr:`note`."""
        return self._covered.size

    def hand(self, group: Group) -> None:
        """Queue ``group`` (stage 1 calls this in commit order)."""
        self._queue.put(group)

    def stop(self) -> None:
        """Answer everything handed so far, then end the thread (see :meth:`join`)."""
        self._queue.put(None)

    def join(self, timeout: float | None) -> None:
        """Wait for the thread to end after :meth:`stop`."""
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            groups = [first]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                groups.append(nxt)
            try:
                self._publish(groups)
            except Exception as e:  # a bug or an unexpected library error: fail these, keep the log
                _LOG.exception("log %s: unexpected error publishing a checkpoint", self._store.origin)
                _fail(groups, CorruptionError(f"log {self._store.origin}: unexpected error publishing: {e!r}"))

    def _publish(self, groups: list[Group]) -> None:
        tip = groups[-1].tip
        error: TurtlesError | None = None
        if tip.size > self._covered.size:  # heads only grow: the newest covers every group
            try:
                note = self._checkpoints.sign_and_store(tip)
            except TurtlesError as e:
                error = e
            else:
                self._covered, self.note = tip, note
        note, size, appended = self.note, self._covered.size, AppendResult.appended
        for g in groups:
            for req, entry in zip(g.appended, g.entries, strict=True):
                seq = entry.seq
                req.outcome = appended(seq, entry.leaf_hash, note, size) if seq < size else _uncovered(error, seq)
            for req, index, leaf in g.duplicates:
                if index >= size:
                    req.outcome = _uncovered(error, index)
                    continue
                try:
                    leaf = leaf or merkle.leaf_hash(self._store.entry(index))
                except TurtlesError as e:
                    req.outcome = e
                    continue
                req.outcome = AppendResult(index, leaf, note, size, True)
        for g in groups:
            for req in g.requests:
                if req.future is not None:
                    req.notify()


def _uncovered(error: TurtlesError | None, index: int) -> TurtlesError:
    """The outcome of a request whose entry no stored checkpoint covers: the error that stopped it."""
    return error or CorruptionError(f"entry {index} is not covered by the checkpoint just signed")


def _fail(groups: list[Group], error: TurtlesError) -> None:
    """Reject every request of ``groups`` not yet told, with ``error``."""
    for g in groups:
        for req in g.requests:
            if req.outcome is None:  # an AppendResult already set was set after its checkpoint
                req.outcome = error
    for g in groups:
        for req in g.requests:
            if req.future is not None and not req.future.done():
                req.notify()


__all__ = ["Group", "Publisher"]
