"""The submission pipeline: verify in a thread pool, sequence, wait until durable.

Flow of one envelope: take a slot of :class:`~node.limits.InFlight` (503 when full) ->
:meth:`ledger.log.Log.prepare` in the verify pool (both cores verify; the event loop never
does signature work) -> :meth:`ledger.log.Log.submit` (503 when the sequencer queue is
full) -> await the durable :class:`~ledger.log.AppendResult` -> inclusion proof against
the checkpoint that result carries.

Invariants:
* An answer is given only once the entry is durable and covered by a signed checkpoint.
* Identical envelopes submitted concurrently (or twice in one batch) are sequenced once;
  the later callers get the same index with ``duplicate=True`` (RELIABILITY L4).
* A caller that goes away (timeout, disconnect) never cancels the sequencer's future: the
  wait is shielded, the append completes, and a retry is answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from ledger.envelope import Envelope
from ledger.errors import TurtlesError
from ledger.log import AppendResult, Log, Prepared
from node.limits import InFlight
from node.metrics import Registry

_CHUNK = 32
_MISSING = object()


@dataclass(frozen=True)
class Accepted:
    """A durable append: where it is, the checkpoint covering it, and the proof."""

    result: AppendResult
    inclusion_proof: list[bytes]

    def to_dict(self) -> dict[str, object]:
        """JSON body of ``POST /v1/entries`` (201 new, 409 duplicate)."""
        r = self.result
        return {
            "index": r.index,
            "leaf_hash": r.leaf_hash.hex(),
            "checkpoint": r.checkpoint,
            "size": r.size,
            "inclusion_proof": [h.hex() for h in self.inclusion_proof],
        }


@dataclass(frozen=True)
class BatchOutcome:
    """A batch's answers in order, with proofs against one checkpoint of tree ``size``."""

    checkpoint: str
    size: int
    results: list[AppendResult | TurtlesError]
    proofs: list[list[bytes]]

    def to_dict(self) -> dict[str, object]:
        """JSON body of ``POST /v1/entries:batch``: per-envelope status, index and proof."""
        items: list[dict[str, object]] = []
        for r, proof in zip(self.results, self.proofs, strict=True):
            if isinstance(r, AppendResult):
                items.append({
                    "status": 409 if r.duplicate else 201,
                    "index": r.index,
                    "leaf_hash": r.leaf_hash.hex(),
                    "duplicate": r.duplicate,
                    "inclusion_proof": [h.hex() for h in proof],
                })
            else:
                items.append({"status": r.http_status, **r.to_dict()})
        return {"checkpoint": self.checkpoint, "size": self.size, "results": items}


class Submitter:
    """Submits envelopes to the own log; one per app."""

    def __init__(self, log: Log, *, executor: Executor, inflight: InFlight, metrics: Registry) -> None:
        self._log = log
        self._executor = executor
        self._inflight = inflight
        self._pending: dict[Envelope, asyncio.Future[AppendResult]] = {}
        self._appends = metrics.counter(
            "turtles_appends_total", "Submissions answered, by outcome", ("outcome",)
        )

    async def submit(self, envelope: Envelope) -> Accepted:
        """Append one envelope; returns once it is durable.

        Raises:
            OverloadedError: too many submissions in flight, or the sequencer queue is full.
            TurtlesError: the envelope was refused (bad signature, not admitted, ...).
        """
        with self._inflight.admit(1):
            result = await self._one(envelope, None, tried=False)
        return Accepted(result, await self._prove(result))

    async def submit_many(self, items: Sequence[Envelope | TurtlesError]) -> BatchOutcome:
        """Append many envelopes in order; each outcome is an AppendResult or its error.

        An item that is already an error (a malformed envelope) is answered with itself.

        Verification runs in chunks spread over the pool, so a batch reaches the raw
        verification rate of the machine. Every inclusion proof of the outcome is against
        its one checkpoint (the largest any envelope of the batch was answered with).

        Raises:
            OverloadedError: fewer free in-flight slots than envelopes (nothing was queued).
        """
        loop = asyncio.get_running_loop()
        envelopes = [x for x in items if isinstance(x, Envelope)]
        with self._inflight.admit(len(envelopes)):
            chunks = [envelopes[i : i + _CHUNK] for i in range(0, len(envelopes), _CHUNK)]
            verifying = iter([loop.run_in_executor(self._executor, _prepare_all, self._log, c) for c in chunks])
            # Each chunk goes to the sequencer as soon as it is verified, in order, while
            # later chunks are still being verified: verification and commits overlap.
            ready: Iterator[Prepared | TurtlesError | None] = iter(())
            tasks: list[asyncio.Future[AppendResult]] = []
            for x in items:
                if not isinstance(x, Envelope):
                    tasks.append(asyncio.ensure_future(_fail(x)))
                    continue
                p = next(ready, _MISSING)
                if p is _MISSING:
                    ready = iter(await next(verifying))
                    p = next(ready)
                tasks.append(asyncio.ensure_future(self._one(x, p, tried=True)))  # type: ignore[arg-type]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        results: list[AppendResult | TurtlesError] = []
        for o in outcomes:
            if isinstance(o, TurtlesError | AppendResult):
                results.append(o)
            elif isinstance(o, BaseException):
                raise o
        done = [r for r in results if isinstance(r, AppendResult)]
        latest = max(done, key=lambda r: r.size) if done else None
        checkpoint = latest.checkpoint if latest else self._log.checkpoint()
        size = latest.size if latest else self._log.size
        proofs = await loop.run_in_executor(None, _prove_all, self._log, results, size)
        return BatchOutcome(checkpoint, size, results, proofs)

    async def _one(
        self, envelope: Envelope, prepared: Prepared | TurtlesError | None, *, tried: bool
    ) -> AppendResult:
        """Sequence one envelope (coalescing identical concurrent ones) and await it.

        ``tried``: ``prepared`` is the outcome of :func:`_prepare` (None: deferred to the
        sequencer); otherwise the envelope is verified here first.
        """
        task = self._pending.get(envelope)
        duplicate = task is not None
        if task is None:
            task = asyncio.ensure_future(self._sequence(envelope, prepared, tried))
            self._pending[envelope] = task
            task.add_done_callback(lambda t: self._done(envelope, t))
        try:
            # Shielded: a caller that goes away must not cancel the append.
            result = await asyncio.shield(task)
        except TurtlesError as e:
            self._appends.inc(outcome=e.code)
            raise
        if duplicate:
            result = dataclasses.replace(result, duplicate=True)
        self._appends.inc(outcome="duplicate" if result.duplicate else "appended")
        return result

    def _done(self, envelope: Envelope, task: asyncio.Future[AppendResult]) -> None:
        if self._pending.get(envelope) is task:
            del self._pending[envelope]
        if not task.cancelled():
            task.exception()  # retrieved here: the caller may have gone away

    async def _sequence(
        self, envelope: Envelope, prepared: Prepared | TurtlesError | None, tried: bool
    ) -> AppendResult:
        loop = asyncio.get_running_loop()
        if not tried:
            prepared = await loop.run_in_executor(self._executor, _prepare, self._log, envelope)
        if isinstance(prepared, TurtlesError):
            raise prepared
        return await asyncio.wrap_future(self._log.submit(envelope, prepared))

    async def _prove(self, result: AppendResult) -> list[bytes]:
        return await asyncio.get_running_loop().run_in_executor(
            None, self._log.inclusion_proof, result.index, result.size
        )


async def _fail(error: TurtlesError) -> AppendResult:
    raise error


def _prepare(log: Log, envelope: Envelope) -> Prepared | TurtlesError | None:
    """Verify one envelope; None defers verification to the sequencer (see Log.try_prepare)."""
    try:
        return log.try_prepare(envelope)
    except TurtlesError as e:
        return e


def _prepare_all(log: Log, envelopes: Sequence[Envelope]) -> list[Prepared | TurtlesError | None]:
    return [_prepare(log, env) for env in envelopes]


def _prove_all(log: Log, results: Sequence[AppendResult | TurtlesError], size: int) -> list[list[bytes]]:
    return [log.inclusion_proof(r.index, size) if isinstance(r, AppendResult) else [] for r in results]


__all__ = ["Accepted", "BatchOutcome", "Submitter"]
