"""An in-memory copy of a log's stored Merkle hashes, for :class:`ledger.reader.LogReader`.

Every level of the tree from the top down to a *floor* is held as 32-byte hashes packed into
``bytes`` chunks of :data:`CHUNK` hashes (one object per 8 KiB, not one per hash: a third
of the memory of a list of ``bytes``, and a hash is one slice). The floor is the lowest level
whose hashes, with every level above it, fit in the byte budget; the levels below it are
read from the store each time. At 10^6 entries every level takes ~61 MiB.

Invariants:

* Stored hashes never change once written, so what is cached is never stale; the copy holds,
  at each level >= floor, exactly the hashes of the tree of :attr:`HashCache.size` leaves.
* :meth:`HashCache.sync` brings the copy to a larger size by reading only what that size
  added (one range scan per level), under a lock; the floor only rises, dropping levels.
* Readers take no lock: they read one immutable view tuple and slices of immutable chunks.
  A chunk list is only appended to, or has its last, partial chunk replaced by a longer one
  with the same prefix, so a view read before a sync stays valid.
* A hash that is missing from the store or not 32 bytes stops the sync with a
  :class:`~ledger.errors.CorruptionError`, before anything wrong is cached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from ledger.errors import CorruptionError
from ledger.store import LogStore

CHUNK_SHIFT = 8
CHUNK = 1 << CHUNK_SHIFT
"""Hashes per chunk (8 KiB: the partial last chunk of a level is copied when it grows)."""
_CHUNK_MASK = CHUNK - 1
_CHUNK_BYTES = CHUNK * 32
_FEW = 2
"""Runs of at most this many new hashes are read with point reads, longer ones by a scan."""

_Rows = list[list[bytes]]
"""Level -> its chunks, in order (none below the floor)."""


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


def cached_bytes(size: int, floor: int) -> int:
    """Bytes of hashes held at levels >= ``floor`` of the tree of ``size`` leaves."""
    return sum(size >> level for level in range(floor, size.bit_length())) * 32


class HashCache:
    """Levels >= :attr:`floor` of one log's stored hashes, for a tree size that only grows."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"hash cache budget {budget} is negative")
        self.budget = budget
        self._lock = threading.Lock()
        self._view: tuple[int, int, _Rows] = (0, 0, [])  # (size, floor, rows)

    @property
    def size(self) -> int:
        """The tree size the cached levels are complete for."""
        return self._view[0]

    @property
    def floor(self) -> int:
        """The lowest cached level (levels below it are not cached)."""
        return self._view[1]

    def get(self, coords: Sequence[tuple[int, int]], out: list[bytes | None]) -> list[int]:
        """Fill ``out[i]`` with the cached hash at ``coords[i]`` where there is one; returns
        the positions left out (not cached: below the floor or beyond :attr:`size`)."""
        size, floor, rows = self._view
        missing = []
        for i, (level, idx) in enumerate(coords):
            if level >= floor and idx >= 0 and (idx + 1) << level <= size:
                o = (idx & _CHUNK_MASK) << 5
                out[i] = rows[level][idx >> CHUNK_SHIFT][o : o + 32]
            else:
                missing.append(i)
        return missing

    def get_all(self, coords: Sequence[tuple[int, int]]) -> list[bytes] | None:
        """The cached hashes at ``coords``, or None if one of them is not cached.

        The proofs' fast path: requires every coordinate to be non-negative (a planner's).
        A hash a sync running in another thread has already added may be returned: every
        cached hash is a stored one, and stored hashes never change.
        """
        rows = self._view[2]
        try:
            out = [rows[level][idx >> CHUNK_SHIFT][(idx & _CHUNK_MASK) << 5 : ((idx & _CHUNK_MASK) << 5) + 32]
                   for level, idx in coords]
        except IndexError:  # a level not cached, or a chunk not read yet
            return None
        return None if b"" in out else out  # b"": past the end of a level's last chunk

    def sync(self, store: LogStore, size: int) -> None:
        """Cache the levels the budget allows of the tree of ``size`` leaves (no-op if
        :attr:`size` is already as large). Raises CorruptionError or StorageError from the
        store; what was read before the error stays cached and correct."""
        with self._lock:
            old_size, old_floor, old_rows = self._view
            if size <= old_size:
                return
            floor = max(floor_for(size, self.budget), old_floor if old_size else 0)
            top = size.bit_length()  # the tree has levels 0 .. top-1
            # Indexed by level; the levels below the floor are empty and never filled.
            rows: _Rows = [old_rows[level] if old_floor <= level < len(old_rows) else [] for level in range(top)]
            for level in range(floor, top):
                _extend(store, level, rows[level], size >> level)
            self._view = (size, floor, rows)

    def reset(self) -> None:
        """Forget everything (the next :meth:`sync` reads the levels afresh)."""
        with self._lock:
            self._view = (0, 0, [])


def _count(chunks: list[bytes]) -> int:
    return 0 if not chunks else (len(chunks) - 1) * CHUNK + len(chunks[-1]) // 32


def _extend(store: LogStore, level: int, chunks: list[bytes], want: int) -> None:
    """Append the stored hashes ``_count(chunks) <= index < want`` of ``level`` to ``chunks``."""
    have = _count(chunks)
    if have >= want:
        return
    if want - have <= _FEW:
        runs: Iterator[bytes] = iter([b"".join(store.hashes([(level, i) for i in range(have, want)]))])
    else:
        runs = store.hash_runs(level, have, want, CHUNK)
    for run in runs:
        # Each run ends at a chunk boundary or at ``want``; it fills the partial chunk first.
        if chunks and len(chunks[-1]) < _CHUNK_BYTES:
            room = _CHUNK_BYTES - len(chunks[-1])
            chunks[-1] += run[:room]
            run = run[room:]
        for off in range(0, len(run), _CHUNK_BYTES):
            chunks.append(run[off : off + _CHUNK_BYTES])
    if _count(chunks) != want:  # the store's reads check this; a guard against a miscount
        raise CorruptionError(f"stored hashes of level {level}: {_count(chunks)} cached, want {want}",
                              level=level)


__all__ = ["CHUNK", "HashCache", "cached_bytes", "floor_for"]
