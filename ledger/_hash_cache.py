"""An in-memory copy of a log's stored Merkle hashes, for :class:`ledger.reader.LogReader`.

Every level of the tree from the top down to a *floor* is held as its 32-byte hashes packed
one after another in one private anonymous ``mmap`` per level (slicing it makes the ``bytes``
of a hash in one step; 32 bytes a hash, not the ~90 of a list of ``bytes``). The floor is the
lowest level whose hashes, with every level above it, fit in the byte budget; the levels
below it are read from the store each time. At 10^6 entries every level takes ~61 MiB.

Invariants:

* Stored hashes never change once written, so what is cached is never stale; the copy holds,
  at each level >= floor, exactly the hashes of the tree of :attr:`HashCache.size` leaves
  (bytes of a level's buffer past them are not hashes: only reads within that size are
  made, which is why the proof readers require the cache to cover the proof's tree).
* :meth:`HashCache.sync` brings the copy to a larger size by reading only what that size
  added (one range scan per level), under a lock; the size never decreases. Levels leave
  (the floor rises) as the tree outgrows the budget, or join when the budget is raised.
* Readers take no lock: they read one view tuple, then slices of buffers that are only
  written past the size that view covers (a buffer that must grow is copied to a new one).
* A hash that is missing from the store or not 32 bytes stops the sync with a
  :class:`~ledger.errors.CorruptionError`, before the view covers anything wrong.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Sequence

from ledger.store import LogStore

_FEW = 2
"""Runs of at most this many new hashes are read with point reads, longer ones by a scan."""
_RUN = 1 << 10
"""Hashes per run of a scan (32 KiB)."""
_HUGE = 2 << 20
"""Size of a transparent huge page (x86-64, arm64 with 4 KiB pages)."""

_Buffer = mmap.mmap | bytes
_Rows = list[_Buffer]
"""Level -> its hashes, packed (``b""`` below the floor)."""


def floor_for(size: int, budget: int) -> int:
    """The lowest level such that it and every level above it of the tree of ``size`` leaves
    take at most ``budget`` bytes (``size.bit_length()``: no level fits; 0 for size 0)."""
    level, total = size.bit_length(), 0
    while level > 0:
        need = (size >> (level - 1)) * 32
        if total + need > budget:
            break
        total += need
        level -= 1
    return level


def share_budget(sizes: Sequence[int], total: int) -> list[int]:
    """Split ``total`` bytes among the caches of logs of ``sizes`` leaves, holding as many
    levels as fit: each log's levels from the top down, the smallest levels of all the logs
    first. Every level held spares each proof of its log about one store read, whatever the
    log, so taking the cheapest levels first holds the most. What no further level fits in
    is shared out evenly, room for the logs to grow until the next share.

    Raises:
        ValueError: ``total`` is negative.
    """
    if total < 0:
        raise ValueError(f"hash cache budget {total} is negative")
    if not sizes:
        return []
    costs = sorted(((size >> level) * 32, i) for i, size in enumerate(sizes) for level in range(size.bit_length()))
    budgets, used = [0] * len(sizes), 0
    for cost, i in costs:
        if used + cost > total:
            break
        budgets[i] += cost
        used += cost
    extra = (total - used) // len(sizes)
    return [b + extra for b in budgets]


def cached_bytes(size: int, floor: int) -> int:
    """Bytes of hashes held at levels >= ``floor`` of the tree of ``size`` leaves."""
    return sum(size >> level for level in range(floor, size.bit_length())) * 32


class HashCache:
    """Levels >= :attr:`floor` of one log's stored hashes, for a tree size that only grows."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._view: tuple[int, int, _Rows] = (0, 0, [])  # (size, floor, rows)
        self._applied = budget  # the budget the view was made with

    @property
    def size(self) -> int:
        """The tree size the cached levels are complete for (it never decreases)."""
        return self._view[0]

    @property
    def floor(self) -> int:
        """The lowest cached level (levels below it are not cached)."""
        return self._view[1]

    def set_budget(self, store: LogStore, budget: int) -> None:
        """Hold the levels ``budget`` bytes allow from now on (dropping or reading levels)."""
        if budget < 0:
            raise ValueError(f"hash cache budget {budget} is negative")
        self.budget = budget
        self.sync(store, self.size)

    def get(self, coords: Sequence[tuple[int, int]], out: list[bytes | None]) -> list[int]:
        """Fill ``out[i]`` with the cached hash at ``coords[i]`` where there is one; returns
        the positions left out (not cached: below the floor or beyond :attr:`size`)."""
        size, floor, rows = self._view
        missing = []
        for i, (level, idx) in enumerate(coords):
            if level >= floor and idx >= 0 and (idx + 1) << level <= size:
                out[i] = rows[level][idx << 5 : (idx << 5) + 32]
            else:
                missing.append(i)
        return missing

    def get_all(self, coords: Sequence[tuple[int, int]]) -> list[bytes] | None:
        """The cached hashes at ``coords``, or None if one of them is below the floor.

        The proofs' fast path: requires non-negative coordinates inside the tree of
        :attr:`size` leaves (a planner's, for a tree no larger than the cache's).
        """
        rows = self._view[2]
        try:
            out = [rows[level][idx << 5 : (idx << 5) + 32] for level, idx in coords]
        except IndexError:  # a level above the cache's top: not inside its tree
            return None
        return None if b"" in out else out  # b"": a level below the floor

    def path(self, index: int, low: int, high: int) -> list[bytes] | None:
        """The cached siblings on leaf ``index``'s path, levels ``low .. high-1`` (a
        :data:`ledger.merkle_stored.PathReader`), or None if a level is not cached. Requires
        the path to lie inside the tree of :attr:`size` leaves, as :meth:`get_all` does."""
        rows = self._view[2]
        try:
            out = [rows[level][(o := ((index >> level) ^ 1) << 5) : o + 32] for level in range(low, high)]
        except IndexError:
            return None
        return None if b"" in out else out

    def sync(self, store: LogStore, size: int) -> None:
        """Cache the levels the budget allows of the tree of ``size`` leaves (no-op if
        :attr:`size` is already as large and the budget unchanged). Raises CorruptionError or
        StorageError from the store, leaving the cache as it was."""
        with self._lock:
            old_size, old_floor, old_rows = self._view
            size = max(size, old_size)
            if size == old_size and self._applied == self.budget:
                return
            floor = floor_for(size, self.budget)
            top = size.bit_length()  # the tree has levels 0 .. top-1
            rows: _Rows = [b""] * top
            # A level the old view held keeps its buffer and gains the hashes the new size
            # adds; a level that joins is read from the start. Few new hashes of a level are
            # point reads, all levels' in one call; more are one scan per level.
            points: list[tuple[int, int]] = []  # new hashes few enough for point reads
            runs: list[tuple[int, int, int]] = []  # (level, have, want) read by a scan
            for level in range(floor, top):
                held = old_floor <= level < len(old_rows)
                have, want = (old_size >> level if held else 0), size >> level
                buf = old_rows[level] if held else b""
                if have < want:
                    if len(buf) < want * 32:  # no room: a new buffer (a reader may hold the old)
                        new = _buffer(want * 64)
                        new[: have * 32] = buf[: have * 32]
                        buf = new
                    if want - have <= _FEW:
                        points += [(level, i) for i in range(have, want)]
                    else:
                        runs.append((level, have, want))
                rows[level] = buf
            if points:
                for (level, i), h in zip(points, store.hashes(points), strict=True):
                    rows[level][i * 32 : i * 32 + 32] = h  # type: ignore[index]  # an mmap: it had room
            for level, have, want in runs:
                _fill(store, rows[level], level, have, want)
            self._view, self._applied = (size, floor, rows), self.budget


def _buffer(size: int) -> mmap.mmap:
    """A zeroed private buffer of at least ``size`` bytes; 2 MiB pages when it is that large
    (the kernel's transparent huge pages, on request): a proof reads ~20 hashes at random
    places of ~64 MiB, and with 4 KiB pages each one also missed the TLB (~90 ns each)."""
    if size < _HUGE:
        return mmap.mmap(-1, max(size, mmap.PAGESIZE), flags=mmap.MAP_PRIVATE)
    buf = mmap.mmap(-1, -(-size // _HUGE) * _HUGE, flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux only; elsewhere, ordinary pages
        buf.madvise(mmap.MADV_HUGEPAGE)
    return buf


def _fill(store: LogStore, buf: _Buffer, level: int, have: int, want: int) -> None:
    """Write the stored hashes ``have .. want-1`` of ``level`` into ``buf`` (one scan)."""
    assert isinstance(buf, mmap.mmap)  # it was given room for them
    at = have * 32
    for run in store.hash_runs(level, have, want, _RUN):
        buf[at : at + len(run)] = run
        at += len(run)


__all__ = ["HashCache", "cached_bytes", "floor_for", "share_budget"]
