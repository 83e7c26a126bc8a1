"""The frontier of a log's Merkle tree: the hashes of the perfect subtrees of its current
tree, kept in memory by the sequencer.

With them a batch's new stored hashes (``merkle.stored_hashes_for_leaves``) and the new
root are computed without reading a hash from the store. A :class:`Frontier` is immutable:
a batch makes the next one (:meth:`Frontier.after`), which the log adopts only once the
batch is durable, so a failed write leaves the old one in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

from ledger import merkle
from ledger._mirror_tree import made
from ledger.store import LogStore


class Frontier:
    """The perfect-subtree hashes of the tree of ``size`` entries of ``store``'s log."""

    def __init__(self, store: LogStore, size: int, hashes: dict[merkle.Coord, bytes] | None = None) -> None:
        """Read from the store, unless ``hashes`` (the frontier's own, in plan order) are given."""
        self._store = store
        self.size = size
        if hashes is None:
            plan = merkle.tree_hash_plan(size)
            hashes = dict(zip(plan, store.hashes(plan), strict=True))
        self._hashes = hashes

    def read(self, coords: Sequence[merkle.Coord]) -> list[bytes]:
        """Stored hashes of this tree, from memory when the frontier has them (a
        ``merkle.HashReader``)."""
        have = self._hashes
        missing = [c for c in coords if c not in have]
        found = dict(zip(missing, self._store.hashes(missing), strict=True)) if missing else {}
        return [have[c] if c in have else found[c] for c in coords]

    def root(self) -> bytes:
        """The root hash of this tree."""
        return merkle.assemble_tree_hash(self.size, list(self._hashes.values()))

    def after(self, size: int, hashes: Sequence[tuple[int, int, bytes]]) -> Frontier:
        """The frontier of the tree of ``size`` after appending a batch that made ``hashes``.

        Each perfect subtree of the new tree is either one of the old tree's (unchanged) or
        was completed by the batch, so it is among ``hashes``, at the place
        :func:`ledger._mirror_tree.place` computes (the mirror finds a page's hashes the same way).
        """
        plan = merkle.tree_hash_plan(size)
        old, start = self._hashes, self.size
        found: dict[merkle.Coord, bytes] = {}
        for c in plan:
            if c not in old:
                with suppress(LookupError):
                    found[c] = made(hashes, start, *c)  # found at its place in the batch's list
        lost = [c for c in plan if c not in old and c not in found]  # never, if the store is sound
        found.update(zip(lost, self._store.hashes(lost), strict=True))
        return Frontier(self._store, size, {c: old[c] if c in old else found[c] for c in plan})

__all__ = ["Frontier"]
