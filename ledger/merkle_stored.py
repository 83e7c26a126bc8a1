"""The stored-hash Merkle API (sumdb/tlog style): plan, read once, assemble.

Re-exported by :mod:`ledger.merkle`, which holds the list-based API and the verifiers.

Invariants:

* A *stored hash* at coordinate ``(level, index)`` is the hash of the complete subtree over
  leaves ``[index * 2**level, (index + 1) * 2**level)``. A log stores only these; every root
  and every proof is a fold of O(log n) of them.
* Proof production is cut into *plan* (which coordinates), *read* (one batch call to the
  caller's reader) and *assemble* (fold into proof elements), so the same proof can come
  from LevelDB, from tiles over HTTP or from a bundle.
* Every function makes at most one call to its reader, and checks what the reader returns:
  the wrong number or size of hashes is a :class:`ledger.errors.CorruptionError` (a
  :data:`PathReader`, which an inclusion proof may also ask once, is checked for the number).
* A proof built here equals the one the list-based API builds from the same leaves.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence

from ledger.errors import CorruptionError, InputError
from ledger.merkle_core import (
    _NODE_PREFIX,
    EMPTY_ROOT,
    HASH_SIZE,
    _check_index,
    _check_leaf_hashes,
    _check_sizes,
    _consistency_ranges,
    _inclusion_ranges,
    _sha256,
    node_hash,
)

Coord = tuple[int, int]
"""A stored-hash coordinate ``(level, index)``."""

HashReader = Callable[[Sequence[Coord]], Sequence[bytes]]
"""Reads the stored hashes at the given coordinates, in order, in one batch."""

PathReader = Callable[[int, int, int], "list[bytes] | None"]
"""``path(index, low, high)``: the stored hashes at ``(level, (index >> level) ^ 1)`` for
``low <= level < high`` -- siblings on leaf ``index``'s path up a perfect subtree of at
least ``2**high`` leaves -- in a new list, or None when it does not hold them all. Its
hashes are trusted to be 32 bytes (the reader's cache checked them when it read them).
"""

RangeMemo = MutableMapping[tuple[int, int], bytes]
"""Hashes of leaf ranges ``[lo, hi)`` that are not one stored subtree (the right edge of a
tree), remembered by a caller that proves often: they never change once the leaves exist."""


def stored_hashes_for_leaf(
    index: int, leaf_hash: bytes, read: HashReader
) -> list[tuple[int, int, bytes]]:
    """The stored hashes that appending leaf ``index`` creates.

    Requires leaves ``0 .. index-1`` to be stored already. Reads the left siblings of the
    subtrees the new leaf completes in one call to ``read`` (none if it completes none).

    Returns:
        ``(level, index, hash)`` triples, level 0 (the leaf itself) first.

    Raises:
        InputError: ``index`` is negative or ``leaf_hash`` is not 32 bytes.
        CorruptionError: ``read`` returned the wrong number or size of hashes.
    """
    if index < 0:
        raise InputError(f"leaf index {index} is negative", index=index)
    _check_input_hash(leaf_hash, "leaf hash")
    completes = (index ^ (index + 1)).bit_length() - 1  # trailing one bits of index
    plan = [(level, (index >> level) - 1) for level in range(completes)]
    siblings = _read(read, plan)
    out = [(0, index, leaf_hash)]
    h = leaf_hash
    for level, left in enumerate(siblings, start=1):
        h = node_hash(left, h)
        out.append((level, index >> level, h))
    return out


def stored_hashes_for_leaves(
    start: int, leaf_hashes: Sequence[bytes], read: HashReader
) -> list[tuple[int, int, bytes]]:
    """The stored hashes that appending ``leaf_hashes`` at ``start, start+1, ...`` creates.

    The batch form of :func:`stored_hashes_for_leaf` for group commit: it reads only the
    hashes of the tree of size ``start`` that the batch needs (at most one per set bit of
    ``start``), in one call, and computes everything else in memory.

    Raises:
        InputError: ``start`` is negative or a leaf hash is not 32 bytes.
        CorruptionError: ``read`` returned the wrong number or size of hashes.
    """
    if start < 0:
        raise InputError(f"start index {start} is negative", start=start)
    _check_leaf_hashes(leaf_hashes, len(leaf_hashes))
    if not leaf_hashes:
        return []
    plan = tree_hash_plan(start)
    # The perfect subtrees of the tree of size `start`, largest first: the left siblings
    # every subtree completed by this batch can need.
    stack = [(level, h) for (level, _), h in zip(plan, _read(read, plan), strict=True)]
    out: list[tuple[int, int, bytes]] = []
    append, sha256, prefix = out.append, _sha256, _NODE_PREFIX  # hot loop: ~2 hashes per leaf
    for index, h in enumerate(leaf_hashes, start):
        append((0, index, h))
        level = 0
        while stack and stack[-1][0] == level:
            h = sha256(prefix + stack.pop()[1] + h).digest()
            level += 1
            append((level, index >> level, h))
        stack.append((level, h))
    return out


def tree_hash_plan(size: int) -> list[Coord]:
    """Coordinates whose stored hashes fold into the root of the tree of ``size`` leaves.

    They are the perfect subtrees left to right, largest first; empty for size 0.
    """
    _check_size(size, "size")
    return _range_coords(0, size)


def assemble_tree_hash(size: int, hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes read for :func:`tree_hash_plan` ``(size)`` into the root."""
    if size == 0:
        return EMPTY_ROOT
    return _assemble([(0, size)], hashes)[0]


def tree_hash(size: int, read: HashReader) -> bytes:
    """The root of the tree of ``size`` leaves, from stored hashes (one batch read).

    Raises:
        InputError: ``size`` is negative.
        CorruptionError: ``read`` returned the wrong number or size of hashes.
    """
    plan = tree_hash_plan(size)
    return assemble_tree_hash(size, _read(read, plan))


def inclusion_plan(index: int, size: int) -> list[Coord]:
    """Coordinates of the stored hashes an inclusion proof needs. Requires ``0 <= index < size``."""
    _check_index(index, size)
    return _plan(_inclusion_ranges(index, size))


def assemble_inclusion(index: int, size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Fold the hashes read for :func:`inclusion_plan` into the proof elements."""
    _check_index(index, size)
    return _assemble(_inclusion_ranges(index, size), hashes)


def prove_inclusion(
    index: int, size: int, read: HashReader, memo: RangeMemo | None = None, path: PathReader | None = None
) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves, from stored hashes.

    Requires ``0 <= index < size`` and the first ``size`` leaves stored. Makes one call to
    ``read`` for O(log size) hashes; the result equals :func:`inclusion_proof`'s. ``memo``
    (optional) remembers the hashes of right-edge ranges between calls; ``path`` (optional)
    is asked first for the siblings on the leaf's path, which are then not read.

    Raises:
        InputError: the preconditions do not hold.
        CorruptionError: ``read`` (or ``path``) returned the wrong number or size of hashes.
    """
    _check_index(index, size)
    return _prove_path(index, 0, size, None, read, memo, path)


def _prove_path(
    index: int, low: int, size: int, seed: Coord | None, read: HashReader, memo: RangeMemo | None,
    path: PathReader | None,
) -> list[bytes]:
    """RFC 9162's PATH of leaf ``index`` in the tree of ``size`` from level ``low`` up, after
    the stored hash at ``seed`` (if any): an inclusion proof for ``low == 0``, a consistency
    proof from the size whose last perfect subtree is ``seed`` (level ``low``) otherwise.

    The tree of ``size`` is a row of perfect subtrees, largest first. The path of a leaf in
    subtree j is one stored hash per level inside that subtree (leaf side first), then the
    hash of everything right of subtree j (a fold of the later subtrees, remembered in
    ``memo``), then the roots of the subtrees left of j, nearest first -- unrolled, so that
    each element costs one coordinate, not one range.
    """
    lo, lefts = 0, []
    while True:
        height = (size - lo).bit_length() - 1
        width = 1 << height
        if index < lo + width:
            break
        lefts.append((height, lo >> height))
        lo += width
    count = max(height - low, 0)
    known = path(index, low, height) if path is not None and count else None
    if known is not None and len(known) != count:
        raise CorruptionError(f"path reader returned {len(known)} hashes for {count} levels")
    coords = [] if seed is None else [seed]
    if known is None:
        coords += [(level, (index >> level) ^ 1) for level in range(low, height)]
    right = (lo + width, size)
    right_hash = None
    if right[0] < size:
        right_hash = memo.get(right) if memo is not None else None
        right_coords = [] if right_hash is not None else _range_coords(*right)
    else:
        right_coords = []
    lefts.reverse()
    hashes = _read(read, coords + right_coords + lefts)
    if known is None:
        proof, hashes = hashes[: len(coords)], hashes[len(coords) :]
    else:
        proof = hashes[:1] + known if seed is not None else known
        hashes = hashes[1:] if seed is not None else hashes
    if right[0] < size:
        if right_hash is None:
            folded = hashes[: len(right_coords)]
            right_hash = folded[-1]
            for left in reversed(folded[:-1]):
                right_hash = node_hash(left, right_hash)
            if memo is not None and len(right_coords) > 1:
                memo[right] = right_hash
        proof.append(right_hash)
    proof += hashes[len(right_coords) :]
    return proof


def consistency_plan(size1: int, size2: int) -> list[Coord]:
    """Coordinates of the stored hashes a consistency proof needs. Requires ``0 <= size1 <= size2``."""
    _check_sizes(size1, size2)
    return _plan(_consistency_ranges(size1, size2))


def assemble_consistency(size1: int, size2: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Fold the hashes read for :func:`consistency_plan` into the proof elements."""
    _check_sizes(size1, size2)
    return _assemble(_consistency_ranges(size1, size2), hashes)


def prove_consistency(
    size1: int, size2: int, read: HashReader, memo: RangeMemo | None = None, path: PathReader | None = None
) -> list[bytes]:
    """The consistency proof from ``size1`` to ``size2``, from stored hashes.

    Requires ``0 <= size1 <= size2`` and the first ``size2`` leaves stored. Makes at most
    one call to ``read``; the result equals :func:`consistency_proof`'s. ``memo`` and
    ``path`` as for :func:`prove_inclusion`.

    Raises:
        InputError: the preconditions do not hold.
        CorruptionError: ``read`` (or ``path``) returned the wrong number or size of hashes.
    """
    _check_sizes(size1, size2)
    if size1 == 0 or size1 == size2:
        return []
    # RFC 9162's SUBPROOF(size1, D[0:size2], true) is the path of the old tree's last leaf
    # from the level of the old tree's last perfect subtree up (the levels below it are
    # inside the old tree), after that subtree's own hash unless it is the whole old tree.
    low = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    seed = None if size1 == 1 << low else (low, (size1 - 1) >> low)
    return _prove_path(size1 - 1, low, size2, seed, read, memo, path)


# --- internals -----------------------------------------------------------------------------


def _range_coords(lo: int, hi: int) -> list[Coord]:
    """Perfect subtrees covering leaves [lo, hi), largest first.

    Requires ``lo`` to be a multiple of the largest power of two <= ``hi - lo`` (true of
    every range the planners produce), so each piece is aligned.
    """
    coords = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        coords.append((level, lo >> level))
        lo += 1 << level
    return coords


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the inclusion proof of ``index`` in the tree of
    ``size`` (RFC 9162 2.1.3.1 PATH), leaf side first. Requires ``0 <= index < size``."""
    _check_index(index, size)
    return _inclusion_ranges(index, size)


def range_coords(lo: int, hi: int) -> list[Coord]:
    """The stored hashes (perfect subtrees, largest first) whose fold is the hash of leaves
    ``[lo, hi)``, for a range :func:`inclusion_ranges` or a consistency proof produces."""
    return _range_coords(lo, hi)


def _plan(ranges: Sequence[tuple[int, int]]) -> list[Coord]:
    return [c for lo, hi in ranges for c in _range_coords(lo, hi)]


def _assemble(ranges: Sequence[tuple[int, int]], hashes: Sequence[bytes]) -> list[bytes]:
    out = []
    pos = 0
    for lo, hi in ranges:
        count = len(_range_coords(lo, hi))
        group = hashes[pos : pos + count]
        if len(group) != count:
            raise InputError(
                f"{len(hashes)} stored hashes are too few for the plan",
                hashes=len(hashes),
            )
        pos += count
        h = group[-1]
        for left in reversed(group[:-1]):
            h = node_hash(left, h)
        out.append(h)
    if pos != len(hashes):
        raise InputError(
            f"{len(hashes)} stored hashes given, the plan needs {pos}", hashes=len(hashes)
        )
    return out


def _read(read: HashReader, plan: list[Coord]) -> list[bytes]:
    if not plan:
        return []
    hashes = list(read(plan))
    if len(hashes) != len(plan):
        raise CorruptionError(
            f"stored-hash reader returned {len(hashes)} hashes for {len(plan)} coordinates",
            coords=plan,
        )
    if len(set(map(len, hashes))) == 1 and len(hashes[0]) == HASH_SIZE:  # the usual case, checked in C
        return hashes
    for coord, h in zip(plan, hashes, strict=True):
        if len(h) != HASH_SIZE:
            raise CorruptionError(
                f"stored hash at (level, index) {coord} is {len(h)} bytes, want {HASH_SIZE}",
                coord=coord,
            )
    return hashes


def _check_size(size: int, what: str) -> None:
    if size < 0:
        raise InputError(f"{what} {size} is negative", size=size)


def _check_input_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise InputError(f"{what} is {len(h)} bytes, want {HASH_SIZE}")


__all__ = [
    "Coord",
    "HashReader",
    "PathReader",
    "RangeMemo",
    "assemble_consistency",
    "assemble_inclusion",
    "assemble_tree_hash",
    "consistency_plan",
    "inclusion_plan",
    "inclusion_ranges",
    "prove_consistency",
    "prove_inclusion",
    "range_coords",
    "stored_hashes_for_leaf",
    "stored_hashes_for_leaves",
    "tree_hash",
    "tree_hash_plan",
]
