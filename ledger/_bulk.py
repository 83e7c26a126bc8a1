"""The verifying side of a log's appends: one envelope, or many ahead of the sequencer.

:class:`Verifier` checks envelopes for a :class:`~ledger.log.Log` against its gatekeeper:
one at a time in the caller's thread (:meth:`Verifier.prepare`), or for
:meth:`Verifier.append_many`, chunk by chunk ahead of the sequencer -- in the node's worker
processes (:mod:`ledger.procverify`) when it has them and the call is large enough, else in a
pool of one thread per CPU. Chunks go to the sequencer in order as they are verified; only
the last request of a chunk carries a Future (see :mod:`ledger._requests`), and at most
about ``max_batch`` appends wait in the queue at a time.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ledger._requests import AppendResult, Request
from ledger.envelope import Envelope
from ledger.errors import CorruptionError, TurtlesError, UnavailableError, UnknownSignerError
from ledger.procverify import VerifierProcesses
from ledger.verification import Gatekeeper, Prepared, verify_envelope

PREPARE_CHUNK = 64  # envelopes per task in the thread pool (amortises the pool's overhead)
PROCESS_CHUNK = 128  # envelopes per task sent to a worker process (amortises the pipe)
PROCESS_MIN = 256  # smaller calls are verified in threads (a round trip to a worker costs ~1 ms)

Outcome = Prepared | TurtlesError | None


class Verifier:
    """Checks a log's envelopes against ``gate``; ``procs`` (optional) are worker processes."""

    def __init__(self, gate: Gatekeeper, name: str, procs: VerifierProcesses | None) -> None:
        self._gate = gate
        self._name = name
        self._procs = procs
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def prepare(self, envelope: Envelope) -> Prepared:
        """Verify signatures and parse the record (see :func:`verify_envelope`); thread-safe."""
        prepared = verify_envelope(self._gate, envelope)
        envelope.to_msgpack()  # made here, often in a pool thread, rather than on the sequencer
        return prepared

    def try_prepare(self, envelope: Envelope) -> Prepared | None:
        """:meth:`prepare`, or None when no signer is known yet (the sequencer then verifies
        it in order, once the record introducing its signer is in)."""
        try:
            return self.prepare(envelope)
        except UnknownSignerError:
            return None

    def in_processes(self, count: int) -> bool:
        """True if :meth:`append_many` of ``count`` envelopes verifies them in worker processes."""
        return self._procs is not None and count >= PROCESS_MIN

    def append_many(
        self, envelopes: Sequence[Envelope], enqueue: Callable[[Sequence[Request]], None], max_batch: int
    ) -> list[AppendResult | TurtlesError]:
        """Verify ``envelopes`` ahead, hand them to ``enqueue`` in order; each one's outcome."""
        procs = self._procs if self.in_processes(len(envelopes)) else None
        chunks = _chunks(envelopes, PROCESS_CHUNK if procs is not None else PREPARE_CHUNK)
        ahead = 2 * (procs.workers if procs is not None else os.cpu_count() or 2)
        verifying = deque(self._start(c, procs) for c in chunks[:ahead])
        out: list[AppendResult | TurtlesError | Request] = []
        waiting: deque[tuple[Future[AppendResult], int]] = deque()  # (a chunk's last future, its size)
        queued = 0
        for n, chunk in enumerate(chunks):
            prepared = self._finish(verifying.popleft(), chunk, procs)
            if n + ahead < len(chunks):
                verifying.append(self._start(chunks[n + ahead], procs))
            requests = []
            for env, p in zip(chunk, prepared, strict=True):
                if isinstance(p, TurtlesError):
                    out.append(p)
                else:
                    requests.append(Request(env, p, None))
                    out.append(requests[-1])
            if not requests:
                continue
            last: Future[AppendResult] = Future()
            requests[-1].future = last
            while waiting and queued + len(requests) > max_batch:
                fut, count = waiting.popleft()
                fut.exception()  # wait; the outcome is collected below
                queued -= count
            try:
                enqueue(requests)
            except TurtlesError as e:
                for req in requests:
                    req.reject(e)
                continue
            waiting.append((last, len(requests)))
            queued += len(requests)
        for fut, _ in waiting:
            fut.exception()
        return [_outcome(r) if isinstance(r, Request) else r for r in out]

    def close(self) -> None:
        """Stop the thread pool (the worker processes belong to their owner)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)

    def _start(self, chunk: Sequence[Envelope], procs: VerifierProcesses | None) -> Future[Any]:
        if procs is not None:
            return procs.submit(self._gate, chunk)
        try:
            return self._thread_pool().submit(self._chunk, chunk)
        except RuntimeError:  # the pool was shut down under this call: the log is closing
            stopped: Future[Any] = Future()
            error = UnavailableError(f"log {self._name} is closing: its envelopes were not verified")
            stopped.set_result([error] * len(chunk))
            return stopped

    def _finish(self, fut: Future[Any], chunk: Sequence[Envelope], procs: VerifierProcesses | None) -> list[Outcome]:
        if procs is None:
            return fut.result()  # type: ignore[no-any-return]
        done = procs.collect(fut, chunk)
        # What the workers handed back (key records, failures, unknown signers) is verified
        # here, by the same code as without workers.
        return [p if p is not None else self._one(env) for env, p in zip(chunk, done, strict=True)]

    def _chunk(self, envelopes: Iterable[Envelope]) -> list[Outcome]:
        return [self._one(env) for env in envelopes]

    def _one(self, envelope: Envelope) -> Outcome:
        try:
            return self.try_prepare(envelope)
        except TurtlesError as e:
            return e

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix=f"verify:{self._name}")
            return self._pool


def _chunks(envelopes: Sequence[Envelope], size: int) -> list[Sequence[Envelope]]:
    """``envelopes`` cut into chunks of ``size``, the first ones smaller (16, 32, ...) so
    that the sequencer gets work while the first full chunks are still being verified."""
    out: list[Sequence[Envelope]] = []
    start, step = 0, min(16, size)
    while start < len(envelopes):
        out.append(envelopes[start : start + step])
        start += step
        step = min(step * 2, size)
    return out


def _outcome(req: Request) -> AppendResult | TurtlesError:
    """The outcome of a request that the sequencer has handled."""
    if req.outcome is None:  # never: the Future of the chunk's last request fires after the rest
        return CorruptionError("append_many: a request was left without an outcome")
    return req.outcome


__all__ = ["PROCESS_MIN", "Verifier"]
