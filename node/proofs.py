"""Inclusion proofs of many leaves of one tree at once (the answers of a sequencer batch).

A single POST is answered with the inclusion proof of its entry in the tree of the
checkpoint it got; the entries of one sequencer batch share that tree and most of their
proof elements. :class:`Prover` computes each shared element once and reads each stored
hash once, instead of one full proof (planning, reads, folding) per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.merkle import inclusion_ranges, range_coords
from ledger.reader import LogReader

_NODE = b"\x01"
_CACHED_LEVEL = 4  # stored hashes of subtrees of >= 16 leaves are kept in memory (as LogReader does)
_MAX_CACHED = 1 << 16


class Prover:
    """Inclusion proofs of many leaves in one tree at once.

    Each proof element is the hash of a leaf range; the leaves of one sequencer batch share
    most of them, so each range is hashed once and each stored hash read once. Stored
    hashes never change, so those of large subtrees are kept in a bounded cache. The proofs
    equal :meth:`ledger.reader.LogReader.inclusion_proof`'s (tests check it), and anything
    out of range goes to that method for its error.
    """

    def __init__(self, log: LogReader) -> None:
        self._log = log
        self._cache: dict[tuple[int, int], bytes] = {}

    def prove_many(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """The inclusion proof of each of ``indexes`` in the tree of ``size`` leaves."""
        log = self._log
        if size > log.size or not all(0 <= i < size for i in indexes):
            return [log.inclusion_proof(i, size) for i in indexes]
        paths = [inclusion_ranges(i, size) for i in indexes]
        coords = {r: range_coords(*r) for path in paths for r in path}
        stored = self._read({c for cs in coords.values() for c in cs})
        sha256, node = hashlib.sha256, _NODE
        value: dict[tuple[int, int], bytes] = {}
        for r, cs in coords.items():
            h = stored[cs[-1]]
            for c in reversed(cs[:-1]):
                h = sha256(node + stored[c] + h).digest()
            value[r] = h
        return [[value[r] for r in path] for path in paths]

    def _read(self, coords: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        cache = self._cache
        out = {c: cache[c] for c in coords if c in cache}
        missing = [c for c in coords if c not in out]
        if missing:
            for c, h in zip(missing, self._log.store.hashes(missing), strict=True):
                out[c] = h
                if c[0] >= _CACHED_LEVEL and len(cache) < _MAX_CACHED:
                    cache[c] = h
        return out


__all__ = ["Prover"]
