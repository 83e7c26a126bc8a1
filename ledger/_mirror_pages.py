"""Parsing and signature checks of a mirror's next pages, ahead of :meth:`Mirror.apply`.

A :class:`Checker` (one per mirror) hands a page of raw entries to worker processes (a
:class:`~ledger.procverify.VerifierProcesses`, running
:func:`ledger._mirror_checks.check_raws` on chunks of :data:`PROC_CHUNK` entries) or else to
a process-wide thread pool (:func:`pool_size` threads; chunks of :data:`CHUNK` entries;
signature checks release the GIL, so they run beside the Python work of the other threads)
and returns at once with a :class:`PendingPage`. A replicator starts page ``k + 1`` this
way while page ``k`` is being admitted and committed; :meth:`Mirror.apply` then only waits
for results that are, by then, mostly ready. Each entry comes back as an
:data:`~ledger._mirror_checks.Item` (fields, leaf hash, the record as it will be logged,
index rows), so the mirror never parses an entry a worker parsed.

Invariants:
* Nothing here decides what is stored. A signature check done ahead is used by the
  mirror only if it saw the same keys the entry is admitted under. Each result carries the
  mirror's *key epoch* (the number of key records it had taken in) read before the check --
  the mirror bumps it only once a key record is in the gate -- and which of the envelope's
  key ids the gate knew before the check. A result of another epoch is still good if the
  gate knows exactly the same of those key ids now (the gate only ever learns keys, so the
  check saw that same set); otherwise, and after any failed check, the mirror redoes the
  check under the current keys (:func:`verify_now`; the error it then raises is the
  authoritative one, from this process). An entry none of whose signers the gate knows yet
  is not checked ahead at all (it could only fail). Once key records are in, the mirror
  has the entries of the pages waiting that name one of their keys checked again
  (:meth:`Pages.renew`; :class:`Learned` says which keys each epoch brought, so that a key
  no waiting entry names costs nothing): a page fetched before its signers' keys were
  known is still checked ahead, not in order by the mirror.
* A worker's item is used only if its leaf hash is the hash of the raw bytes this process
  holds (and will store); anything a worker does not handle, or a dead worker's chunk, is
  done here by the thread pool's code, with the same results.
* Nothing here writes: it parses and verifies, nothing else.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ledger._mirror_checks import (
    LEAF,
    LOGGED,
    NAMES,
    Checked,
    Item,
    Tally,
    check_chunk,
    check_now,
    check_raws,
    shipped_keys,
)
from ledger.errors import TurtlesError
from ledger.merkle import leaf_hash
from ledger.procverify import VerifierProcesses
from ledger.verification import Gatekeeper

CHUNK = 64
"""Entries per thread-pool task (amortises the pool's per-task overhead, as in ``Log.append_many``)."""
PROC_CHUNK = 256
"""Entries per worker-process task: fewer, larger messages cost the mirror's process less."""

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


class Learned:
    """The key ids a gate learned at each key epoch: what checks made before did not see.

    The mirror calls :meth:`bumped` each time it moves to the next epoch (from the thread
    that applies pages, which alone uses this). A gate that cannot list its keys (no
    ``key_table``) says nothing: then every key may be new.
    """

    def __init__(self, gate: Gatekeeper) -> None:
        self._gate = gate
        self._known = self._ids()
        self._by_epoch: list[frozenset[str] | None] = []  # [e]: learned going from epoch e to e + 1

    def _ids(self) -> frozenset[str] | None:
        key_table = getattr(self._gate, "key_table", None)
        return None if key_table is None else frozenset(key_table())

    def bumped(self) -> None:
        """The gate took in a key record and the epoch moved on by one."""
        ids = self._ids()
        self._by_epoch.append(None if ids is None or self._known is None else ids - self._known)
        self._known = ids

    def since(self, epoch: int) -> frozenset[str] | None:
        """The key ids learned since ``epoch`` (None: any)."""
        parts = self._by_epoch[epoch:]
        if any(p is None for p in parts):
            return None
        return frozenset().union(*parts)  # type: ignore[arg-type]  # (no None left)


class Checker:
    """Starts the checks of one mirror's entries (see the module doc)."""

    def __init__(self, origin: str, gate: Gatekeeper, epoch: Callable[[], int], tally: Tally,
                 procs: VerifierProcesses | None) -> None:
        self.origin, self.gate, self.epoch, self.tally, self.procs = origin, gate, epoch, tally, procs

    def _shipped(self) -> dict[str, bytes] | None:
        """The keys to send with a chunk if chunks go to worker processes, else None."""
        return None if self.procs is None else shipped_keys(self.gate)

    def start(self, raws: Sequence[bytes]) -> list[_Chunk]:
        """Start checking ``raws``; their chunks, in order."""
        seen = self.epoch()  # read before the keys: a check that saw new keys carries an older epoch
        keys = self._shipped()
        if self.procs is not None and keys is not None:
            return [_Chunk(self, part, self.procs.run(check_raws, self.origin, keys, seen, part), True, seen)
                    for part in _parts(raws, PROC_CHUNK)]
        pool = verify_pool()
        return [_Chunk(self, part, pool.submit(check_chunk, self.origin, self.gate, self.epoch, self.tally, part),
                       False, seen) for part in _parts(raws, CHUNK)]

    def here(self, raws: Sequence[bytes]) -> list[Checked]:
        """Check ``raws`` in the calling thread (what a worker left, or a dead worker's chunk)."""
        return check_chunk(self.origin, self.gate, self.epoch, self.tally, raws)


def _parts(raws: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(raws[i : i + size]) for i in range(0, len(raws), size)]


class _Chunk:
    """Consecutive entries of a page whose checks are under way (or done); read by the
    thread that applies the pages, cancelled by any thread."""

    def __init__(self, checker: Checker, raws: list[bytes], future: Future[Any], in_worker: bool,
                 epoch: int) -> None:
        self._checker, self.raws, self._future, self._in_worker = checker, raws, future, in_worker
        self._epoch = epoch  # the key epoch the checks started at (or were last looked at)
        self._names: frozenset[str] | None = None  # every key id its entries name (once looked at)
        self._items: list[Checked] | None = None
        self._patch: tuple[list[int], list[_Chunk]] | None = None  # entries checked again

    def cancel(self) -> None:
        self._future.cancel()
        patch = self._patch
        for chunk in patch[1] if patch is not None else ():
            chunk.cancel()

    def result(self) -> list[Checked]:
        """Each entry's result, in order (waits for the checks)."""
        if self._patch is not None:
            where, chunks = self._patch
            fresh = [x for c in chunks for x in c.result()]
            self._patch = None
            if self._items is None:  # the whole chunk was started again
                self._items = fresh
            else:
                items = list(self._items)
                for i, x in zip(where, fresh, strict=True):
                    items[i] = x
                self._items = items
        if self._items is None:
            self._items = self._collect()
        return self._items

    def renew(self, skip: int, epoch: int, learned: Learned, stale: Callable[[Item], bool]) -> None:
        """Once done, if key records came in since the checks started (the key epoch is now
        ``epoch``) and introduced keys its entries name: check again, now, the entries from
        ``skip`` on that are ``stale``. Checks still under way are looked at by a later call."""
        if self._patch is not None:  # (nothing was applied since: the patch is all past skip)
            for chunk in self._patch[1]:
                chunk.renew(0, epoch, learned, stale)
            return
        fut = self._future
        if self._epoch == epoch or not fut.done() or fut.cancelled() or fut.exception() is not None:
            return  # (a failed check is dealt with when the page is applied)
        new, self._epoch = learned.since(self._epoch), epoch
        items = self.result()
        if new is not None:
            if self._names is None:
                self._names = frozenset(k for x in items if not isinstance(x, TurtlesError) for k in x[NAMES])
            if new.isdisjoint(self._names):
                return
        where = [i for i in range(max(0, skip), len(items))
                 if not isinstance(x := items[i], TurtlesError) and stale(x)]
        if where:
            self._patch = (where, self._checker.start([self.raws[i] for i in where]))

    def _collect(self) -> list[Checked]:
        if not self._in_worker:
            checked: list[Checked] = self._future.result()
            return checked
        c = self._checker
        items = _worker_items(c.procs, self._future, c.tally, self.raws)  # type: ignore[arg-type]
        if items is None:  # the worker died: this chunk is checked here instead
            return c.here(self.raws)
        out: list[Checked] = items  # type: ignore[assignment]  # the Nones are replaced now
        for i, x in enumerate(items):
            if x is None:  # unparseable, a key record, or a leaf hash that is not the raw's
                out[i] = c.here([self.raws[i]])[0]
        return out


def _worker_items(
    procs: VerifierProcesses, future: Future[Any], tally: Tally, raws: Sequence[bytes]
) -> list[Item | None] | None:
    """A worker chunk's items, each kept only if its leaf hash is that of the raw held here
    (None in its place otherwise, and for what the worker left to this process); None for
    the whole chunk if the worker died."""
    try:
        checked, got = future.result()
    except (BrokenProcessPool, RuntimeError, OSError):
        procs.reset()  # a worker died: the next submission starts new ones
        return None
    tally.add(checked)
    items: list[Item | None] = got
    return [None if x is None or x[LEAF] != leaf_hash(raw) else x for raw, x in zip(raws, items, strict=True)]


def verify_now(checker: Checker, epoch: int, raws: Sequence[bytes]) -> list[Item | TurtlesError]:
    """Check ``raws`` (entries that parse) against the gate as it is now -- the caller holds
    the gate still until this returns -- in worker processes or the pool when there are
    many; per entry its item with the record (checked under the current keys), or the
    error of the check made in this process."""
    c = checker
    out: list[Item | TurtlesError | None] = [None] * len(raws)
    keys = c._shipped() if len(raws) > CHUNK else None
    if c.procs is not None and keys is not None:
        futures = [(i, c.procs.run(check_raws, c.origin, keys, epoch, list(raws[i : i + PROC_CHUNK])))
                   for i in range(0, len(raws), PROC_CHUNK)]
        for i, fut in futures:
            for j, x in enumerate(_worker_items(c.procs, fut, c.tally, raws[i : i + PROC_CHUNK]) or ()):
                if x is not None and x[LOGGED] is not None:
                    out[i + j] = x
    # What the workers did not pass is checked here: its error is the authoritative one.
    rest = [i for i, x in enumerate(out) if x is None]

    todo = [raws[i] for i in rest]
    if len(todo) <= CHUNK:
        redone = check_now(c.origin, c.gate, c.tally, epoch, todo)
    else:
        pool = verify_pool()
        parts = [pool.submit(check_now, c.origin, c.gate, c.tally, epoch, todo[i : i + CHUNK])
                 for i in range(0, len(todo), CHUNK)]
        redone = [r for fut in parts for r in fut.result()]
    for i, r in zip(rest, redone, strict=True):
        out[i] = r
    return out  # type: ignore[return-value]  # every None was replaced


class _Page:
    """What the views of one page share: its raw entries, their checks, how many are applied."""

    def __init__(self, raws: Sequence[bytes], chunks: list[_Chunk]) -> None:
        self.raws, self.chunks, self.applied = raws, chunks, 0


class PendingPage:
    """A page of raw entries whose parsing and checks are under way (or done); views made
    by :meth:`drop` share its checks."""

    def __init__(self, raws: Sequence[bytes], chunks: list[_Chunk] | _Page, offset: int = 0) -> None:
        self._page = chunks if isinstance(chunks, _Page) else _Page(raws, chunks)
        self._offset = offset

    def __len__(self) -> int:
        return len(self._page.raws) - self._offset

    def raws(self) -> Sequence[bytes]:
        """The raw entries left, in order."""
        return self._page.raws[self._offset :]

    def drop(self, n: int) -> PendingPage:
        """The same page without its first ``n`` entries (what a short :meth:`Mirror.apply` left)."""
        return PendingPage(self._page.raws, self._page, self._offset + n)

    def results(self) -> list[Checked]:
        """Every entry's result, in order (waits for the checks)."""
        out: list[Checked] = []
        start = 0
        for chunk in self._page.chunks:
            stop = start + len(chunk.raws)
            if stop > self._offset:
                got = chunk.result()
                out += got if start >= self._offset else got[self._offset - start :]
            start = stop
        return out

    def applied(self, n: int) -> None:
        """The first ``n`` entries of this view are stored: they need no checks any more."""
        page = self._page
        page.applied = max(page.applied, self._offset + n)

    def cancel(self) -> None:
        """Drop the checks not started yet (the page will not be applied)."""
        for chunk in self._page.chunks:
            chunk.cancel()


class Pages:
    """The pages one mirror started checking and has not applied yet, in order (held weakly)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[int, weakref.ref[_Page]] = {}  # by a counter: in the order started
        self._count = itertools.count()

    def add(self, page: PendingPage) -> PendingPage:
        """Remember ``page``; returns it."""
        with self._lock:
            self._pages[next(self._count)] = weakref.ref(page._page)
        return page

    def renew(self, epoch: int, learned: Learned, stale: Callable[[Item], bool]) -> None:
        """The thread that applies pages calls this after each commit: of the checks done
        under other keys than those of key epoch ``epoch`` (the current one), check again
        the ``stale`` entries not applied yet, in page order, under the keys known now."""
        with self._lock:
            refs = list(self._pages.items())
        for key, ref in refs:
            page = ref()
            if page is None or page.applied >= len(page.raws):
                with self._lock:
                    self._pages.pop(key, None)
                continue
            start = 0
            for chunk in page.chunks:
                if start + len(chunk.raws) > page.applied:
                    chunk.renew(page.applied - start, epoch, learned, stale)
                start += len(chunk.raws)


__all__ = [
    "CHUNK",
    "PROC_CHUNK",
    "Checker",
    "Learned",
    "Pages",
    "PendingPage",
    "Tally",
    "pool_size",
    "verify_now",
    "verify_pool",
]
