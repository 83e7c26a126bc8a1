"""The submission pipeline: verify in a thread pool, sequence, wait until durable.

Flow of one envelope (``POST /v1/entries``): take a slot of :class:`~node.limits.InFlight`
(503 when full) -> queued for verification; once per event-loop iteration the queued
envelopes are shared out among the submitter's verify threads, which run
:meth:`ledger.log.Log.try_prepare` (the event loop never does signature work) and hand
each verified envelope straight to :meth:`ledger.log.Log.submit` (503 when the sequencer
queue is full) -> the sequencer's durable :class:`~ledger.log.AppendResult`\\ s come back
to the event loop in one wake-up per batch -> the inclusion proofs of the whole batch are
computed at once (:class:`~node.proofs.Prover`) against the checkpoint the results carry. A batch
(``POST /v1/entries:batch``) is verified in chunks in the app's pool and joins the same
path at the sequencer.

Per request that is two thread hops (loop -> verify worker -> sequencer -> loop), and the
sequencer's thread only appends to a deque when it resolves a future.

Invariants:
* An answer is given only once the entry is durable and covered by a signed checkpoint.
* Identical envelopes submitted concurrently (or twice in one batch) are sequenced once;
  the later callers get the same index with ``duplicate=True`` (RELIABILITY L4).
* A caller that goes away (timeout, disconnect) never cancels the append: each caller
  waits on its own future, the append completes, and a retry is answered as a duplicate.
* Every submission gets an answer: an unexpected error in the pipeline is handed to its
  callers (answered 500 and logged by the error middleware), never swallowed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import suppress
from functools import partial
from operator import attrgetter
from typing import NamedTuple

from ledger.envelope import Envelope
from ledger.errors import TurtlesError, UnavailableError
from ledger.log import AppendResult, Log, Prepared
from node.answers import Accepted, BatchOutcome
from node.limits import InFlight
from node.metrics import Registry
from node.proofs import Prover

_CHUNK = 32
_MISSING = object()
_size = attrgetter("size")


class _Waiter(NamedTuple):
    future: asyncio.Future[Accepted]
    duplicate: bool  # coalesced onto an identical submission already under way
    prove: bool  # wants its inclusion proof (single POSTs; a batch proves against its own size)


class _Job:
    """One envelope on its way through verification and the sequencer, and who waits for it."""

    __slots__ = ("envelope", "waiters")

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.waiters: list[_Waiter] = []


Outcome = Future[AppendResult] | BaseException


class Submitter:
    """Submits envelopes to the own log; one per app, used from its event loop."""

    def __init__(
        self, log: Log, *, executor: Executor, inflight: InFlight, metrics: Registry, verifiers: int = 4
    ) -> None:
        """``executor`` verifies batches; ``verifiers`` threads verify single submissions.

        Signature checks release the GIL, so with more threads than cores more of them run
        while the event loop holds the GIL (4 threads on 2 cores: ~10% more records/s than 2).
        """
        self._log = log
        self._executor = executor
        self._workers = max(1, verifiers)
        self._inflight = inflight
        self._prover = Prover(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[Envelope, _Job] = {}
        self._to_verify: list[_Job] = []
        self._flush_soon = False
        # Verify threads of the single-envelope path, fed through a C queue: a pool's
        # submit() costs Python-level locks and semaphores per task.
        self._verify_q: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._verifiers = [
            threading.Thread(target=self._verifier, name=f"verify-single-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for t in self._verifiers:
            t.start()
        self._closed = False
        self._finished: deque[tuple[_Job, Outcome]] = deque()  # appended from any thread
        self._drain_soon = False
        appends = metrics.counter("turtles_appends_total", "Submissions answered, by outcome", ("outcome",))
        self._appended = appends.labels(outcome="appended")
        self._duplicate = appends.labels(outcome="duplicate")
        self._appends = appends

    def stop(self) -> None:
        """Take no more submissions; on the event loop (so no flush can follow the sentinels)."""
        if not self._closed:
            self._closed = True
            for _ in self._verifiers:
                self._verify_q.put(None)

    def join(self) -> None:
        """Wait until the verify threads have handed what they held to the sequencer (blocks)."""
        for t in self._verifiers:
            t.join()

    async def submit(self, envelope: Envelope) -> Accepted:
        """Append one envelope; returns once it is durable, with its inclusion proof.

        Raises:
            OverloadedError: too many submissions in flight, or the sequencer queue is full.
            TurtlesError: the envelope was refused (bad signature, not admitted, ...).
        """
        with self._inflight.admit(1):
            return await self._enqueue(envelope, None, tried=False, prove=True)

    async def submit_many(self, items: Sequence[Envelope | TurtlesError]) -> BatchOutcome:
        """Append many envelopes in order; each outcome is an AppendResult or its error.

        An item that is already an error (a malformed envelope) is answered with itself.

        A large batch goes to :meth:`Log.append_many`, whose worker processes verify it
        (``[node] verify_processes``); a smaller one is verified in chunks spread over the
        verify threads. Every inclusion proof of the outcome is against
        its one checkpoint (the largest any envelope of the batch was answered with).

        Raises:
            OverloadedError: fewer free in-flight slots than envelopes (nothing was queued).
        """
        loop = asyncio.get_running_loop()
        envelopes = [x for x in items if isinstance(x, Envelope)]
        if self._log.verifies_in_processes(len(envelopes)):
            with self._inflight.admit(len(envelopes)):
                appended = await loop.run_in_executor(None, self._log.append_many, envelopes)
            if len(envelopes) < len(items):  # malformed ones are answered in their places
                each = iter(appended)
                appended = [next(each) if isinstance(x, Envelope) else x for x in items]
            return await self._outcome(appended)
        with self._inflight.admit(len(envelopes)):
            chunks = [envelopes[i : i + _CHUNK] for i in range(0, len(envelopes), _CHUNK)]
            verifying = iter([loop.run_in_executor(self._executor, _prepare_all, self._log, c) for c in chunks])
            # Each chunk goes to the sequencer as soon as it is verified, in order, while
            # later chunks are still being verified: verification and commits overlap.
            ready: Iterator[Prepared | TurtlesError | None] = iter(())
            waits: list[asyncio.Future[Accepted]] = []
            for x in items:
                if not isinstance(x, Envelope):
                    failed: asyncio.Future[Accepted] = loop.create_future()
                    failed.set_exception(x)
                    waits.append(failed)
                    continue
                p = next(ready, _MISSING)
                if p is _MISSING:
                    ready = iter(await next(verifying))
                    p = next(ready)
                waits.append(self._enqueue(x, p, tried=True, prove=False))  # type: ignore[arg-type]
            outcomes = await asyncio.gather(*waits, return_exceptions=True)
        results: list[AppendResult | TurtlesError] = []
        for o in outcomes:
            if isinstance(o, Accepted):
                results.append(o.result)
            elif isinstance(o, TurtlesError):
                results.append(o)
            else:
                raise o
        return await self._outcome(results)

    async def _outcome(self, results: list[AppendResult | TurtlesError]) -> BatchOutcome:
        """The batch's answer: its results and their proofs against one checkpoint."""
        loop = asyncio.get_running_loop()
        done = [r for r in results if isinstance(r, AppendResult)]
        latest = max(done, key=_size) if done else None
        checkpoint = latest.checkpoint if latest else self._log.checkpoint()
        size = latest.size if latest else self._log.size
        return await loop.run_in_executor(None, self._answer_batch, checkpoint, size, results)

    def _answer_batch(self, checkpoint: str, size: int, results: list[AppendResult | TurtlesError]) -> BatchOutcome:
        """The batch's outcome with its answer rendered (in a pool thread: a 500-envelope
        answer is ~0.5 MB of JSON, which the event loop need not spend its time on)."""
        proofs, texts = self._prove_batch(results, size)
        outcome = BatchOutcome(checkpoint, size, results, proofs, texts)
        outcome.render()
        return outcome

    def _prove_batch(
        self, results: Sequence[AppendResult | TurtlesError], size: int
    ) -> tuple[list[list[bytes]], list[str]]:
        """Each result's proof and its JSON text, all in one walk (:meth:`Prover.prove`)."""
        done = [r for r in results if isinstance(r, AppendResult)]
        indexes = [r.index for r in done]
        proved = self._prover.prove(indexes, size, [r.leaf_hash for r in done])
        proofs, texts = proved.proofs(indexes), proved.texts(indexes)
        if len(done) == len(results):
            return proofs, texts
        proved_of = iter(zip(proofs, texts, strict=True))
        pairs = [next(proved_of) if isinstance(r, AppendResult) else ([], "") for r in results]  # errors: none
        return [p for p, _ in pairs], [t for _, t in pairs]

    # --- the pipeline -----------------------------------------------------------------------

    def _enqueue(
        self, envelope: Envelope, prepared: Prepared | TurtlesError | None, *, tried: bool, prove: bool
    ) -> asyncio.Future[Accepted]:
        """Start sequencing ``envelope`` (or join an identical one under way); its caller's future.

        ``tried``: ``prepared`` is the outcome of :func:`_prepare` (None: deferred to the
        sequencer); otherwise the envelope is verified in the pool first.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Accepted] = loop.create_future()
        job = self._pending.get(envelope)
        if job is not None:
            job.waiters.append(_Waiter(waiter, True, prove))
            return waiter
        job = self._pending[envelope] = _Job(envelope)
        job.waiters.append(_Waiter(waiter, False, prove))
        if not tried:
            self._to_verify.append(job)
            if not self._flush_soon:
                self._flush_soon = True
                loop.call_soon(self._flush)
        elif isinstance(prepared, TurtlesError):
            self._finish(job, prepared)
        else:
            self._sequence(job, prepared)
        return waiter

    def _flush(self) -> None:
        """Hand the envelopes queued in this loop iteration to the verify threads, a share each."""
        self._flush_soon = False
        jobs, self._to_verify = self._to_verify, []
        if self._closed:
            for job in jobs:
                self._finish(job, UnavailableError("the node is stopping", retry_after=1))
            return
        k = min(self._workers, len(jobs))
        for i in range(k):
            self._verify_q.put(jobs[i::k])

    def _verifier(self) -> None:
        """A verify thread: verify each envelope and queue it for the sequencer at once."""
        while (jobs := self._verify_q.get()) is not None:
            for job in jobs:
                try:
                    prepared = _prepare(self._log, job.envelope)
                except Exception as e:  # a bug: its callers get it (500, logged), the others go on
                    self._finish(job, e)
                    continue
                if isinstance(prepared, TurtlesError):
                    self._finish(job, prepared)
                else:
                    self._sequence(job, prepared)

    def _sequence(self, job: _Job, prepared: Prepared | None) -> None:
        """Queue a verified envelope for the sequencer (any thread)."""
        try:
            future = self._log.submit(job.envelope, prepared)
        except Exception as e:  # OverloadedError, UnavailableError (closed), or a bug
            self._finish(job, e)
            return
        future.add_done_callback(partial(self._finish, job))

    def _finish(self, job: _Job, outcome: Outcome) -> None:
        """Any thread (the sequencer's, mostly): hand an outcome to the event loop.

        One wake-up of the loop per burst: the flag is cleared by :meth:`_drain` before it
        empties the deque, so an outcome appended after that schedules another drain.
        """
        self._finished.append((job, outcome))
        if not self._drain_soon:
            self._drain_soon = True
            loop = self._loop
            if loop is not None:
                with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                    loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: answer every finished job; one proof computation per tree size."""
        self._drain_soon = False
        finished = self._finished
        by_size: dict[int, list[tuple[_Job, AppendResult]]] = {}
        while finished:
            job, outcome = finished.popleft()
            if self._pending.get(job.envelope) is job:
                del self._pending[job.envelope]
            if isinstance(outcome, BaseException):
                self._fail(job, outcome)
            elif outcome.cancelled():
                self._fail(job, UnavailableError("the append was cancelled", retry_after=1))
            elif (error := outcome.exception()) is not None:
                self._fail(job, error)
            else:
                result = outcome.result()
                by_size.setdefault(result.size, []).append((job, result))
        for size, done in by_size.items():
            self._answer(size, done)

    def _answer(self, size: int, done: list[tuple[_Job, AppendResult]]) -> None:
        asked = [r for job, r in done if any(w.prove and not w.future.done() for w in job.waiters)]
        try:
            proofs = self._prover.prove([r.index for r in asked], size, [r.leaf_hash for r in asked])
        except Exception as e:  # the entries are durable; their callers get the error (500 if a bug)
            for job, r in done:
                self._count(job, r)
                self._fail(job, e, count=False)
            return
        for job, r in done:
            self._count(job, r)
            for w in job.waiters:
                if not w.future.done():
                    result = dataclasses.replace(r, duplicate=True) if w.duplicate and not r.duplicate else r
                    if w.prove and r.index in proofs:
                        w.future.set_result(Accepted(result, proofs.proof(r.index), proofs.text(r.index)))
                    else:
                        w.future.set_result(Accepted(result, [], ""))

    def _count(self, job: _Job, result: AppendResult) -> None:
        for w in job.waiters:
            (self._duplicate if w.duplicate or result.duplicate else self._appended).inc()

    def _fail(self, job: _Job, error: BaseException, *, count: bool = True) -> None:
        if count and isinstance(error, TurtlesError):
            self._appends.inc(len(job.waiters), outcome=error.code)
        for w in job.waiters:
            if not w.future.done():
                w.future.set_exception(error)


def _prepare(log: Log, envelope: Envelope) -> Prepared | TurtlesError | None:
    """Verify one envelope; None defers verification to the sequencer (see Log.try_prepare)."""
    try:
        return log.try_prepare(envelope)
    except TurtlesError as e:
        return e


def _prepare_all(log: Log, envelopes: Sequence[Envelope]) -> list[Prepared | TurtlesError | None]:
    return [_prepare(log, env) for env in envelopes]


__all__ = ["Accepted", "BatchOutcome", "Submitter"]
