"""The roots a mirror checks a page with: the stored tree plus the hashes the page makes.

:func:`ledger.merkle.stored_hashes_for_leaves` gives, for a page appended at ``start``, every
stored hash the page creates (leaf by leaf: each leaf, then the subtrees it completes).
:func:`page_root` folds the root of the tree of ``size`` leaves from those and the stored
ones, reading from the store only the hashes of the first ``start`` leaves it needs, and
finding each new one by its :func:`place` in the list instead of indexing every hash of
the page. :func:`place` and :func:`made` also serve the sequencer's
:class:`ledger._frontier.Frontier`, which finds a batch's new perfect subtrees the same way.

Invariant: the result is :func:`ledger.merkle.tree_hash` of the tree of ``size`` leaves over
the stored hashes with the page's hashes added (tests compare the two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger import merkle

Coord = tuple[int, int]
Made = Sequence[tuple[int, int, bytes]]


def place(start: int, level: int, index: int) -> int:
    """Where :func:`~ledger.merkle.stored_hashes_for_leaves` from leaf ``start`` puts the
    hash at ``(level, index)``: leaf ``j`` comes with one hash per trailing one bit of ``j``
    (the subtrees it completes), so ``2j - popcount(j)`` hashes precede it in a tree built
    from leaf 0; the subtree's hash comes ``level`` after its last leaf."""
    last = ((index + 1) << level) - 1
    return (2 * last - last.bit_count()) - (2 * start - start.bit_count()) + level


def made(hashes: Made, start: int, level: int, index: int) -> bytes:
    """The hash at ``(level, index)`` among ``hashes``, those
    :func:`~ledger.merkle.stored_hashes_for_leaves` made from leaf ``start`` on (the subtree
    must end at or after ``start``): looked for at its :func:`place` first, else searched.

    Raises:
        LookupError: no such hash was made.
    """
    pos = place(start, level, index)
    if 0 <= pos < len(hashes) and hashes[pos][0] == level and hashes[pos][1] == index:
        return hashes[pos][2]
    for lv, ix, h in hashes:
        if lv == level and ix == index:
            return h
    raise LookupError(f"no hash was made at ({level}, {index})")


def page_root(size: int, start: int, hashes: Made, stored: Callable[[Sequence[Coord]], list[bytes]]) -> bytes:
    """The root of the tree of ``size`` leaves (``start <= size``): the tree of ``start``
    leaves read through ``stored``, and ``hashes`` made for the leaves from ``start`` on."""

    def read(coords: Sequence[Coord]) -> list[bytes]:
        held = [c for c in coords if (c[1] + 1) << c[0] <= start]
        found = dict(zip(held, stored(held), strict=True)) if held else {}
        return [found[c] if c in found else made(hashes, start, *c) for c in coords]

    return merkle.tree_hash(size, read)


__all__ = ["made", "page_root", "place"]
