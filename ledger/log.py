"""A Log: verify -> admit -> chain -> store durably -> sign a checkpoint.

Flow of one append:

1. :meth:`Log.prepare` (any thread; verification releases the GIL so a pool scales):
   parse the envelope, verify every signature over the exact PAE bytes with keys the
   gatekeeper knows (or, for ``root``/``rotation`` records, the keys the record carries),
   parse the record, check the signers the record kind requires.
2. The single sequencer thread (group commit) takes prepared submissions in order,
   drops duplicates, asks the gatekeeper to admit each one at the integration time,
   chains it (``prev``), computes Merkle hashes and index rows, signs one checkpoint for
   the new size, and commits the batch with that checkpoint in one synced WriteBatch (one
   fsync a batch). A key record (root, delegation, ...) ends its batch, so the trust state
   it changes is applied only after it is durable, and records after it are admitted
   against the new state.
3. After the batch is durable the sequencer raises the high-water mark
   (:mod:`ledger.watermark`) and only then resolves the callers' futures. A checkpoint is
   in memory only once its batch is durable; one whose batch fails is dropped unseen. If
   the signature fails (an HSM away), the batch is committed without one and its callers
   get the error: the entries stay durably sequenced and no checkpoint covers them until
   the next one is signed (RELIABILITY W6).

What keeps the sequencer cheap (it is one thread, so its per-entry cost bounds the rate):
the Merkle hashes of a batch are computed in one pass (``stored_hashes_for_leaves``) from
the *frontier* -- the hashes of the perfect subtrees of the current tree, kept in memory --
so a batch reads no hash from the store; duplicates are looked up in the store only when a
Bloom filter of the record ids held says the id may be there (no false negatives: an id is
added before its batch is written). :meth:`Log.append_many` verifies in a thread pool.

Invariants: nothing is acknowledged before it is durable and covered by a stored signed
checkpoint; a failed write changes neither the store nor the in-memory state; entry
timestamps never go backwards; the log never appends a record it has not verified.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from ledger import merkle
from ledger._bulk import Verifier
from ledger._checkpoints import Checkpointer
from ledger._frontier import Frontier
from ledger._recordids import RecordIdFilter
from ledger._requests import AppendResult, Request
from ledger.attestation import Attestation
from ledger.checkpoint import Checkpoint, note_signer, verifier_key
from ledger.entry import Entry, LoggedRecord
from ledger.envelope import Envelope
from ledger.errors import (
    CorruptionError,
    InputError,
    NotFoundError,
    OverloadedError,
    TurtlesError,
    UnavailableError,
)
from ledger.keys import KeyId, Signer
from ledger.procverify import VerifierProcesses
from ledger.reader import LogReader
from ledger.store import Batch, Database, Head, LogStore
from ledger.verification import Gatekeeper, Prepared, index_rows, logged_from_entry, verify_envelope

_LOG = logging.getLogger("turtles.ledger.log")
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_QUEUE = 8192


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Log(LogReader):
    """One append-only log owned by this node. Use :meth:`create` or :meth:`open`."""

    def __init__(
        self,
        store: LogStore,
        *,
        signer: Signer,
        gate: Gatekeeper,
        clock: Callable[[], int] = _now_ms,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        procs: VerifierProcesses | None = None,
    ) -> None:
        meta = store.meta()
        if meta is None:
            raise NotFoundError(f"no log {store.origin!r} in this store", hint="run `turtles log init`")
        super().__init__(store)
        self._signer = signer
        self._checkpoints = Checkpointer(store, note_signer(self.origin, signer))
        self.vkey = verifier_key(self.origin, signer.public_key.raw)
        if meta.get("vkey") != self.vkey:
            raise InputError(
                f"log {self.origin!r} was created with key {meta.get('vkey')}, not {self.vkey}",
                hint="open the log with the key it was created with",
            )
        self._gate = gate
        self._clock = clock
        self._max_batch = max_batch
        # A SimpleQueue (C, lock-free for the caller) with its bound kept here: Queue's
        # Python-level conditions cost more per append than the rest of submit.
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._max_queue = max_queue
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._last_ts = self._read_last_ts()
        self._checkpoints.check_watermark(self._head)
        self._frontier = Frontier(store, self._head.size)
        self._record_ids = RecordIdFilter.of(store.record_ids(), self._head.size)
        self._verifier = Verifier(gate, self.origin, procs)  # procs: their owner closes them
        self._checkpoint = self._checkpoints.ensure(self._head)
        self._thread = threading.Thread(target=self._run, name=f"sequencer:{self.origin}", daemon=True)
        self._closed = False
        self._thread.start()

    @classmethod
    def create(cls, db: Database, origin: str, *, signer: Signer, gate: Gatekeeper, **kw: object) -> Log:
        """Create an empty log named ``origin`` whose checkpoints ``signer`` signs (Ed25519)."""
        store = db.log(origin)
        if store.meta() is not None:
            raise InputError(f"log {origin!r} already exists in {db.path}")
        if signer.public_key.alg != "ed25519":
            raise InputError("a log key must be Ed25519 (C2SP signed notes)")
        store.create({"origin": origin, "vkey": verifier_key(origin, signer.public_key.raw), "kind": "own"})
        return cls(store, signer=signer, gate=gate, **kw)  # type: ignore[arg-type]

    def checkpoint(self) -> str:
        """The latest signed checkpoint note (an open log always has one: it signs on open)."""
        note = self._checkpoint
        if note is None:
            raise CorruptionError(f"log {self.origin} has no signed checkpoint")
        return note

    # --- appends ---------------------------------------------------------------------------

    def prepare(self, envelope: Envelope) -> Prepared:
        """Verify signatures and parse the record (see :func:`verify_envelope`); thread-safe."""
        return self._verifier.prepare(envelope)

    def try_prepare(self, envelope: Envelope) -> Prepared | None:
        """:meth:`prepare`, or None when no signer is known yet.

        A signer may be introduced by a record still queued; the sequencer verifies such an
        envelope itself, in order, once that record is integrated.
        """
        return self._verifier.try_prepare(envelope)

    def submit(self, envelope: Envelope, prepared: Prepared | None = None) -> Future[AppendResult]:
        """Queue an envelope for appending; the future resolves once durable and checkpointed.

        ``prepared`` (from :meth:`prepare`, possibly run in a thread pool) skips re-verification.
        An envelope whose signer is introduced by a record still in the queue is verified by
        the sequencer instead.

        Raises:
            OverloadedError: the queue is full (retry later).
            UnavailableError: the log is closed.
        """
        future: Future[AppendResult] = Future()
        self._enqueue([Request(envelope, prepared, future)])
        return future

    def _enqueue(self, requests: Sequence[Request]) -> None:
        """Queue ``requests`` (all or none).

        Raises:
            OverloadedError: they would take the queue over its bound.
            UnavailableError: the log is closed.
        """
        with self._queued_lock:  # held while queueing, so nothing is queued after close()'s None
            if self._closed:
                raise UnavailableError(f"log {self.origin} is closed")
            if self._queued + len(requests) > self._max_queue:
                raise OverloadedError(f"log {self.origin}: {self._max_queue} submissions queued", retry_after=1)
            self._queued += len(requests)
            for req in requests:
                self._queue.put(req)

    def append(self, envelope: Envelope, *, timeout: float | None = 60) -> AppendResult:
        """Append one envelope and wait until it is durable (see :meth:`submit`)."""
        prepared = self.try_prepare(envelope)
        return self.submit(envelope, prepared).result(timeout)

    def append_many(self, envelopes: Sequence[Envelope]) -> list[AppendResult | TurtlesError]:
        """Append many envelopes in order; each result is an AppendResult or the error it met.

        Envelopes are verified ahead of the sequencer, a chunk at a time: in worker
        processes when the log has them (``procs``) and the call is large enough, else in a
        pool of one thread per CPU (see :class:`ledger._bulk.Verifier`).
        """
        return self._verifier.append_many(envelopes, self._enqueue, self._max_batch)

    def verifies_in_processes(self, count: int) -> bool:
        """True if :meth:`append_many` of ``count`` envelopes verifies them in worker processes."""
        return self._verifier.in_processes(count)

    def close(self, timeout: float = 30) -> None:
        """Finish queued appends, stop the sequencer. The Database stays open."""
        with self._queued_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        self._checkpoints.close()
        self._verifier.close()

    # --- the sequencer ----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            with self._queued_lock:
                self._queued -= len(batch)
            # A future its caller cancelled while queued is dropped (never appended); the
            # others become "running", so they can no longer be cancelled under our feet.
            self._integrate([r for r in batch if r.start()])

    def _integrate(self, requests: list[Request]) -> None:
        pending = list(requests)
        while pending:
            try:
                pending = self._integrate_some(pending)
            except Exception as e:  # a bug or an unexpected library error: fail the batch, keep the log
                _LOG.exception("log %s: unexpected error integrating a batch", self.origin)
                error = CorruptionError(f"log {self.origin}: unexpected error integrating a batch: {e!r}")
                for req in pending:
                    if not req.done:
                        req.reject(error)
                self._reload()
                return

    def _reload(self) -> None:
        """Re-read the durable state after an unexpected error (memory may be ahead of it)."""
        self._head = self._store.head()
        self._last_ts = self._read_last_ts()
        self._frontier = Frontier(self._store, self._head.size)

    def _integrate_some(self, requests: list[Request]) -> list[Request]:
        """Commit a prefix of ``requests`` ending at the first key record; return the rest.

        Refusals and duplicates of durable entries are noted as they are met and their
        waiters told when the prefix is done, after the appended ones (see ``Request.note``).
        """
        early: list[Request] = []
        try:
            return self._integrate_prefix(requests, early)
        finally:
            for req in early:
                req.notify()

    def _integrate_prefix(self, requests: list[Request], early: list[Request]) -> list[Request]:
        head = self._head
        ts = max(self._clock(), self._last_ts)
        admitted: list[tuple[Request, Prepared]] = []
        seen: dict[bytes, tuple[int, tuple[KeyId, ...]]] = {}
        rest: list[Request] = []
        in_batch_dups: list[tuple[Request, int]] = []
        admit, origin = self._gate.admit, self.origin
        for i, req in enumerate(requests):
            try:
                prepared = req.prepared or self.prepare(req.envelope)
                dup = self._duplicate_of(prepared, seen)
                if dup is not None:
                    if dup >= head.size:  # a twin in this very batch: answer once it is durable
                        in_batch_dups.append((req, dup))
                    else:
                        req.note(self._result(dup, duplicate=True))
                        early.append(req)
                    continue
                admit(record=prepared.record, signers=prepared.signers, origin=origin, at=ts)
            except TurtlesError as e:
                req.note(e)
                early.append(req)
                continue
            seen[prepared.record_id] = (head.size + len(admitted), prepared.signers)
            admitted.append((req, prepared))
            if not isinstance(prepared.record, Attestation):
                rest = requests[i + 1 :]
                break
        if not admitted:
            return rest
        chained = Entry.chain(head.size, head.last, ts, [p.envelope for _, p in admitted])
        entries = [(e.seq, e.raw) for e in chained]
        index_keys: list[tuple[bytes, bytes]] = []
        accepted: list[tuple[Request, Entry, LoggedRecord]] = []
        for (req, prepared), entry in zip(admitted, chained, strict=True):
            index_keys.extend(index_rows(entry.seq, prepared))
            logged = LoggedRecord(origin, entry.seq, ts, entry.leaf_hash, prepared.signers, prepared.record,
                                  prepared.record_id)
            accepted.append((req, entry, logged))
        prev = chained[-1].leaf_hash
        size = head.size + len(accepted)
        hashes = merkle.stored_hashes_for_leaves(head.size, [e.leaf_hash for e in chained], self._frontier.read)
        frontier = self._frontier.after(size, hashes)
        waiting = [r for r, _, _ in accepted] + [r for r, _ in in_batch_dups]
        new = Head(size, frontier.root(), prev)
        unsigned: TurtlesError | None = None
        try:  # signed first and committed with the batch: one synced write
            note: str | None = self._checkpoints.sign(new)
        except TurtlesError as e:  # e.g. the HSM is away: the entries are still sequenced (W6)
            note, unsigned = None, e
        batch = Batch(entries, hashes, index_keys, new, note)
        # Before the write: a filter that holds an id the store lacks costs a lookup, never a duplicate.
        for rid in seen:
            self._record_ids.add(rid)
        try:
            self._store.commit(batch)
        except TurtlesError as e:  # not committed (a half-done write stops the store's writes)
            for req in waiting:
                req.reject(e)
            return rest
        self._head = batch.head
        self._frontier = frontier
        self._last_ts = ts
        for _, _, logged in accepted:
            self._gate.add(logged)
        try:
            if unsigned is not None:
                raise unsigned
            self._checkpoints.mark(batch.head)
        except TurtlesError as e:  # durable but not acknowledged; no checkpoint published (see _result)
            for req in waiting:
                req.reject(e)
            return rest
        self._checkpoint = checkpoint = batch.checkpoint
        assert checkpoint is not None  # signed above
        appended = AppendResult.appended
        for req, entry, _ in accepted:
            req.outcome = appended(entry.seq, entry.leaf_hash, checkpoint, size)
            if req.future is not None:  # Request.resolve, spelled out: most bulk requests have none
                req.notify()
        for req, index in in_batch_dups:
            req.resolve(self._result(index, duplicate=True))
        return rest

    def _duplicate_of(self, prepared: Prepared, seen: dict[bytes, tuple[int, tuple[KeyId, ...]]]) -> int | None:
        """Index of an entry already holding this record with (at least) these signers."""
        rid = prepared.record_id
        known: list[tuple[int, set[str]]] = []
        if rid in self._record_ids:
            known = [(s, set(k)) for s, k in self._store.by_record_id(rid)]
        if rid in seen:
            index, signers = seen[rid]
            known.append((index, set(signers)))
        if not known:
            return None
        union = set().union(*(k for _, k in known))
        if set(prepared.signers) <= union:
            return known[0][0]
        return None

    def _covered_size(self) -> int:
        """Tree size of the checkpoint held in memory."""
        note = self._checkpoint or ""
        return Checkpoint.parse(note.split("\n\n", 1)[0] + "\n").size if note else 0

    def _result(self, index: int, *, duplicate: bool) -> AppendResult:
        if self._covered_size() <= index:
            # The batch holding ``index`` is durable but its checkpoint was never stored
            # (a failed write or HSM): sign one now rather than answer with an older one.
            self._checkpoint = self._checkpoints.sign_and_store(self._head)
        entry = Entry.from_bytes(self._store.entry(index))
        assert self._checkpoint is not None  # signed in __init__, before the sequencer started
        return AppendResult(index, entry.leaf_hash, self._checkpoint, self._head.size, duplicate)

    def _read_last_ts(self) -> int:
        if self._head.size == 0:
            return 0
        return Entry.from_bytes(self._store.entry(self._head.size - 1)).ts


__all__ = [
    "AppendResult",
    "Gatekeeper",
    "Log",
    "Prepared",
    "index_rows",
    "logged_from_entry",
    "verify_envelope",
]
