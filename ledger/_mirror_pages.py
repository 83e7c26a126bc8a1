"""Parsing and signature checks of a mirror's next page, ahead of :meth:`Mirror.apply`, in a pool.

:func:`start_page` hands a page of raw entries to a process-wide pool (:func:`pool_size`
threads; chunks of :data:`CHUNK` entries; Ed25519 verification releases the GIL, so it runs
beside the Python work of the other threads) and returns at once with a
:class:`PendingPage`. A replicator starts page ``k + 1`` this way while page ``k`` is being
admitted and committed; :meth:`Mirror.apply` then only waits for results that are, by then,
mostly ready.

Invariants:
* Nothing here decides what is stored. A signature check done in the pool is used by the
  mirror only if it saw the same keys the entry is admitted under. Each result carries the
  mirror's *key epoch* (the number of key records it had taken in) read before the check --
  the mirror bumps it only once a key record is in the gate -- and which of the envelope's
  key ids the gate knew before the check. A result of another epoch is still good if the
  gate knows exactly the same of those key ids now (the gate only ever learns keys, so the
  check saw that same set); otherwise, and after any failed check, the mirror redoes the
  check under the current keys itself (the error it then raises is the authoritative one).
  An entry none of whose signers the gate knows yet is not checked in the pool at all (it
  could only fail): the key record ahead of it in the page is taken in first.
* The pool never writes: it parses and verifies, nothing else.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.entry import Entry
from ledger.envelope import Envelope
from ledger.errors import TurtlesError
from ledger.keys import KeyId
from ledger.procverify import VerifierProcesses, prepared
from ledger.records import RootRecord, Rotation
from ledger.verification import Gatekeeper, Prepared, verify_envelope

CHUNK = 64
"""Entries per pool task (amortises the pool's per-task overhead, as in ``Log.append_many``)."""

_SELF_KEYED = (RootRecord.payload_type(), Rotation.payload_type())  # records carrying their signing key
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool_size() -> int:
    """Threads in the verification pool: one per CPU but one, which is left to the thread that
    admits and commits (at least one). Parsing and admission hold the GIL, so more threads only
    contend for it: with two CPUs, one pool thread mirrors as fast as two, with less CPU."""
    return max(1, (os.cpu_count() or 2) - 1)


def verify_pool() -> ThreadPoolExecutor:
    """The process-wide verification pool of every mirror (:func:`pool_size` threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(pool_size(), thread_name_prefix="mirror-verify")
        return _pool


class Tally:
    """A thread-safe count of signature checks (entries verified) made for one mirror."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        """Count ``n`` more checks."""
        with self._lock:
            self.value += n


@dataclass(frozen=True)
class Checked:
    """One raw entry after the pool: parsed (or why not), and its envelope's check if it passed."""

    entry: Entry | None
    error: TurtlesError | None
    prepared: Prepared | None
    epoch: int
    keys: tuple[str, ...] = ()


def known_keys(gate: Gatekeeper, envelope: Envelope) -> tuple[str, ...]:
    """The key ids among the envelope's signatures that ``gate`` knows now."""
    return tuple(k for k in envelope.key_ids if gate.public_key(KeyId(k)) is not None)


def check_chunk(
    gate: Gatekeeper, epoch: Callable[[], int], tally: Tally, raws: Sequence[bytes]
) -> list[Checked]:
    """Parse and verify ``raws`` (a pool task; safe on hostile bytes)."""
    out: list[Checked] = []
    verified = 0
    for raw in raws:
        try:
            entry = Entry.from_bytes(raw)
        except TurtlesError as e:
            out.append(Checked(None, e, None, -1))
            continue
        seen, keys = epoch(), known_keys(gate, entry.envelope)
        if not keys and entry.envelope.payload_type not in _SELF_KEYED:
            # No signer known yet (a key record ahead in this page introduces it): the check
            # could only fail; the mirror makes it once that record is in.
            out.append(Checked(entry, None, None, seen, keys))
            continue
        verified += 1
        try:
            prepared: Prepared | None = verify_envelope(gate, entry.envelope)
        except TurtlesError:
            prepared = None  # redone in order by the mirror, which reports it
        out.append(Checked(entry, None, prepared, seen, keys))
    tally.add(verified)
    return out


def verify_now(gate: Gatekeeper, tally: Tally, envelopes: Sequence[Envelope]) -> list[Prepared | TurtlesError]:
    """Check ``envelopes`` against the gate as it is now, in the pool when there are many
    (the caller holds the gate still until this returns); each result or its error, in order."""

    def run(part: Sequence[Envelope]) -> list[Prepared | TurtlesError]:
        out: list[Prepared | TurtlesError] = []
        for env in part:
            try:
                out.append(verify_envelope(gate, env))
            except TurtlesError as e:
                out.append(e)
        tally.add(len(part))
        return out

    if len(envelopes) <= CHUNK:
        return run(envelopes)
    pool = verify_pool()
    futures = [pool.submit(run, envelopes[i : i + CHUNK]) for i in range(0, len(envelopes), CHUNK)]
    return [r for fut in futures for r in fut.result()]


class _Chunk(Protocol):
    def result(self) -> list[Checked]: ...

    def cancel(self) -> bool: ...


class PendingPage:
    """A page of raw entries whose parsing and checks are under way (or done) in the pool."""

    def __init__(self, raws: Sequence[bytes], chunks: Sequence[_Chunk], offset: int = 0) -> None:
        self._raws = raws
        self._chunks = chunks
        self._offset = offset

    def __len__(self) -> int:
        return len(self._raws) - self._offset

    def drop(self, n: int) -> PendingPage:
        """The same page without its first ``n`` entries (what a short :meth:`Mirror.apply` left)."""
        return PendingPage(self._raws, self._chunks, self._offset + n)

    def results(self) -> list[Checked]:
        """Every entry's result, in order (waits for the pool)."""
        out: list[Checked] = []
        first = self._offset // CHUNK
        for fut in self._chunks[first:]:
            out += fut.result()
        return out[self._offset - first * CHUNK :]

    def cancel(self) -> None:
        """Drop the checks not started yet (the page will not be applied)."""
        for fut in self._chunks:
            fut.cancel()


MAX_SHIPPED_KEYS = 512
"""A gate that knows more keys than this is not shipped to worker processes (its pages are
checked in the thread pool): the table goes with every chunk."""


class _WorkerChunk:
    """A chunk checked in a worker process (:func:`ledger.procverify.check_entries`), read
    back as :class:`Checked` results like the thread pool's, with the same meaning."""

    def __init__(self, procs: VerifierProcesses, keys: dict[str, bytes], gate: Gatekeeper,
                 epoch: Callable[[], int], seen: int, tally: Tally, raws: Sequence[bytes]) -> None:
        self._procs, self._gate, self._epoch, self._seen, self._tally = procs, gate, epoch, seen, tally
        self._raws = raws
        self._future: Future[Any] = procs.submit_entries(keys, raws)
        self._results: list[Checked] | None = None

    def cancel(self) -> bool:
        return self._future.cancel()

    def result(self) -> list[Checked]:
        if self._results is None:
            self._results = self._collect()
        return self._results

    def _collect(self) -> list[Checked]:
        try:
            got = self._future.result()
        except (BrokenProcessPool, RuntimeError, OSError):
            self._procs.reset()  # a worker died: this chunk is checked here instead
            return check_chunk(self._gate, self._epoch, self._tally, self._raws)
        out: list[Checked] = []
        verified = 0
        for raw, item in zip(self._raws, got, strict=True):
            if item is None:  # unparseable or a key record: exactly as the thread pool does it
                out += check_chunk(self._gate, self._epoch, self._tally, [raw])
                continue
            entry = Entry.from_bytes(raw)  # the worker parsed it: it parses
            ids, parts = item
            verified += bool(ids)
            out.append(Checked(entry, None, prepared(entry.envelope, parts), self._seen, ids))
        self._tally.add(verified)
        return out


def start_page(
    gate: Gatekeeper, epoch: Callable[[], int], tally: Tally, raws: Sequence[bytes],
    procs: VerifierProcesses | None = None,
) -> PendingPage:
    """Start parsing and verifying ``raws`` (in worker processes when ``procs`` is given and
    the gate's keys can be shipped, else in the thread pool); returns at once."""
    raws = list(raws)
    parts = [raws[i : i + CHUNK] for i in range(0, len(raws), CHUNK)]
    key_table = getattr(gate, "key_table", None)
    if procs is not None and key_table is not None:
        seen = epoch()  # read before the keys: a check that saw new keys carries an older epoch
        table = key_table()
        if len(table) <= MAX_SHIPPED_KEYS:
            keys = {kid: key.der for kid, key in table.items()}
            return PendingPage(raws, [_WorkerChunk(procs, keys, gate, epoch, seen, tally, p) for p in parts])
    pool = verify_pool()
    return PendingPage(raws, [pool.submit(check_chunk, gate, epoch, tally, p) for p in parts])


__all__ = ["CHUNK", "Checked", "PendingPage", "Tally", "check_chunk", "known_keys", "pool_size", "start_page", "verify_now", "verify_pool"]
