"""Inclusion proofs of many leaves of one tree at once (the answers of a sequencer batch).

A single POST is answered with the inclusion proof of its entry in the tree of the
checkpoint it got; the entries of one sequencer batch share that tree and most of their
proof elements. :class:`Prover` computes each shared element once and reads each stored
hash once, instead of one full proof (planning, reads, folding) per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.merkle import inclusion_ranges, node_hash, range_coords
from ledger.reader import LogReader


class Prover:
    """Inclusion proofs of many leaves in one tree at once.

    Each proof element is the hash of a leaf range; the leaves of one sequencer batch share
    most of them, so each range is hashed once and each stored hash read once (through the
    log's own cache of large subtrees). The proofs equal
    :meth:`ledger.reader.LogReader.inclusion_proof`'s (tests check it), and anything out of
    range goes to that method for its error.
    """

    def __init__(self, log: LogReader) -> None:
        self._log = log

    def prove_many(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """The inclusion proof of each of ``indexes`` in the tree of ``size`` leaves."""
        log = self._log
        if size > log.size or not all(0 <= i < size for i in indexes):
            return [log.inclusion_proof(i, size) for i in indexes]
        paths = [inclusion_ranges(i, size) for i in indexes]
        coords = {r: range_coords(*r) for path in paths for r in path}
        wanted = list({c for cs in coords.values() for c in cs})
        stored = dict(zip(wanted, log.stored_hashes(wanted), strict=True))
        value: dict[tuple[int, int], bytes] = {}
        for r, cs in coords.items():
            h = stored[cs[-1]]
            for c in reversed(cs[:-1]):
                h = node_hash(stored[c], h)
            value[r] = h
        return [[value[r] for r in path] for path in paths]


__all__ = ["Prover"]
