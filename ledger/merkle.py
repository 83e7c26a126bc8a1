"""RFC 9162 Merkle trees: hashing, proofs and their verification, as pure functions.

Invariants:

* Every hash is SHA-256 (32 bytes). A leaf hash is ``SHA-256(0x00 || data)`` and an interior
  node is ``SHA-256(0x01 || left || right)``; the distinct prefixes make it impossible to pass
  an interior node off as a leaf. The empty tree's root is ``SHA-256("")``.
* A *stored hash* at coordinate ``(level, index)`` is the hash of the complete subtree over
  leaves ``[index * 2**level, (index + 1) * 2**level)``. A log stores only these; every root
  and every proof is a fold of O(log n) of them.
* Proof production is cut into *plan* (which coordinates), *read* (one batch call to the
  caller's reader) and *assemble* (fold into proof elements), so the same proof can come
  from LevelDB, from tiles over HTTP or from a bundle.
* Verifiers return ``None`` or raise :class:`ledger.errors.ProofError`; mismatches carry the
  ``expected`` and ``calculated`` hashes as evidence. They never return a boolean.
* Nothing here recurses over a list of leaves: large trees cost O(n) time, O(log n) depth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ledger.errors import CorruptionError, InputError, ProofError

HASH_SIZE = 32
"""Size in bytes of every hash in the tree."""

MAX_TREE_SIZE = 2**63 - 1
"""Largest tree size the text and tile formats accept (a signed 64-bit count, as in Go tlog)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

# RFC 9162 §2.1.1 domain separation: 0x00 prefixes leaf data, 0x01 prefixes interior nodes.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

_sha256 = hashlib.sha256

Coord = tuple[int, int]
"""A stored-hash coordinate ``(level, index)``."""

HashReader = Callable[[Sequence[Coord]], Sequence[bytes]]
"""Reads the stored hashes at the given coordinates, in order, in one batch."""


def leaf_hash(data: bytes) -> bytes:
    """Hash a leaf: ``SHA-256(0x00 || data)`` (RFC 9162 §2.1.1)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an interior node: ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1).

    Requires both children to be 32-byte hashes (not checked: this is the hot path).
    """
    return _sha256(_NODE_PREFIX + left + right).digest()


# --- list-based API ----------------------------------------------------------------------


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a whole sequence of leaf hashes.

    Args:
        leaf_hashes: the leaf hashes, in log order (each 32 bytes).

    Returns:
        The root; :data:`EMPTY_ROOT` for an empty sequence.

    Raises:
        InputError: a leaf hash is not 32 bytes.
    """
    _check_leaf_hashes(leaf_hashes, len(leaf_hashes))
    return _range_hash(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of the first ``size`` leaves.

    Requires ``0 <= index < size <= len(leaf_hashes)``. Costs O(size) hashing; a log with
    stored hashes should use :func:`prove_inclusion` instead.

    Raises:
        InputError: the preconditions do not hold.
    """
    _check_index(index, size)
    _check_leaf_hashes(leaf_hashes, size)
    return [_range_hash(leaf_hashes, lo, hi) for lo, hi in _inclusion_ranges(index, size)]


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """The consistency proof between the trees of the first ``size1`` and ``size2`` leaves.

    Requires ``0 <= size1 <= size2 <= len(leaf_hashes)``. The proof is empty when
    ``size1 == 0`` or ``size1 == size2``.

    Raises:
        InputError: the preconditions do not hold.
    """
    _check_sizes(size1, size2)
    _check_leaf_hashes(leaf_hashes, size2)
    return [_range_hash(leaf_hashes, lo, hi) for lo, hi in _consistency_ranges(size1, size2)]


# --- verification --------------------------------------------------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` shows ``leaf_hash`` at ``index`` in the tree ``(size, root)``.

    Follows RFC 9162 §2.1.3.2. Requires ``0 <= index < size``, 32-byte hashes and exactly
    as many proof elements as the tree shape demands.

    Raises:
        ProofError: any precondition fails or the computed root differs from ``root``
            (evidence: ``expected``, ``calculated``).
    """
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    _check_proof_hashes(proof)
    if not 0 <= index < size:
        raise ProofError(
            f"leaf index {index} is outside the tree of size {size}", index=index, size=size
        )
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    if len(proof) != want:
        raise ProofError(
            f"inclusion proof for index {index} in size {size} has {len(proof)} hashes, want {want}",
            proof_length=len(proof),
            expected_length=want,
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise ProofError(
            f"inclusion proof for index {index} does not lead to the root of size {size}",
            expected=root,
            calculated=r,
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that ``proof`` shows the tree ``(size1, root1)`` is a prefix of ``(size2, root2)``.

    Follows RFC 9162 §2.1.4.2 for ``0 < size1 < size2``. Requires ``0 <= size1 <= size2``
    and 32-byte hashes. When ``size1 == size2`` the proof must be empty and the roots equal.
    When ``size1 == 0`` the proof must be empty and ``root1`` the empty-tree root: the empty
    tree is a prefix of every tree (C2SP tlog-witness).

    Raises:
        ProofError: any precondition fails or a computed root differs (evidence:
            ``expected``, ``calculated``, ``which`` = ``"root1"`` or ``"root2"``).
    """
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    _check_proof_hashes(proof)
    if not 0 <= size1 <= size2:
        raise ProofError(
            f"consistency needs 0 <= size1 <= size2, got size1={size1} size2={size2}",
            size1=size1,
            size2=size2,
        )
    if size1 == 0 or size1 == size2:
        if proof:
            raise ProofError(
                f"consistency proof from size {size1} to {size2} must be empty, has {len(proof)} hashes",
                proof_length=len(proof),
            )
        if size1 == 0:
            _check_root_equal(EMPTY_ROOT, root1, "root1", "root1 is not the empty-tree root")
            if size2 == 0:
                _check_root_equal(EMPTY_ROOT, root2, "root2", "root2 is not the empty-tree root")
        else:
            _check_root_equal(root1, root2, "root2", f"roots of two trees of size {size1} differ")
        return
    want = len(_consistency_ranges(size1, size2))
    if len(proof) != want:
        raise ProofError(
            f"consistency proof from size {size1} to {size2} has {len(proof)} hashes, want {want}",
            proof_length=len(proof),
            expected_length=want,
        )
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # A power-of-two first tree is a complete subtree the proof leaves out: its root seeds it.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from size {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from size {size1} to {size2} is too short")
    _check_root_equal(root1, fr, "root1", f"consistency proof does not match root1 of size {size1}")
    _check_root_equal(root2, sr, "root2", f"consistency proof does not match root2 of size {size2}")


# --- stored-hash API: plan, read once, assemble ---------------------------------------------


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


def prove_inclusion(index: int, size: int, read: HashReader) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves, from stored hashes.

    Requires ``0 <= index < size`` and the first ``size`` leaves stored. Makes one call to
    ``read`` for O(log size) hashes; the result equals :func:`inclusion_proof`'s.

    Raises:
        InputError: the preconditions do not hold.
        CorruptionError: ``read`` returned the wrong number or size of hashes.
    """
    return assemble_inclusion(index, size, _read(read, inclusion_plan(index, size)))


def consistency_plan(size1: int, size2: int) -> list[Coord]:
    """Coordinates of the stored hashes a consistency proof needs. Requires ``0 <= size1 <= size2``."""
    _check_sizes(size1, size2)
    return _plan(_consistency_ranges(size1, size2))


def assemble_consistency(size1: int, size2: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Fold the hashes read for :func:`consistency_plan` into the proof elements."""
    _check_sizes(size1, size2)
    return _assemble(_consistency_ranges(size1, size2), hashes)


def prove_consistency(size1: int, size2: int, read: HashReader) -> list[bytes]:
    """The consistency proof from ``size1`` to ``size2``, from stored hashes.

    Requires ``0 <= size1 <= size2`` and the first ``size2`` leaves stored. Makes at most
    one call to ``read``; the result equals :func:`consistency_proof`'s.

    Raises:
        InputError: the preconditions do not hold.
        CorruptionError: ``read`` returned the wrong number or size of hashes.
    """
    return assemble_consistency(size1, size2, _read(read, consistency_plan(size1, size2)))


# --- internals -----------------------------------------------------------------------------


def _largest_power_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (requires n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf first."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_below(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1)."""
    if size1 == 0 or size1 == size2:
        return []
    ranges = []
    lo, hi = 0, size2
    whole = True  # SUBPROOF's flag b: the old tree is still a whole subtree of this one
    while size1 != hi:
        k = _largest_power_below(hi - lo)
        if size1 <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


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


def _range_hash(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) level by level; an odd last node moves up unchanged, as RFC 9162 implies."""
    if lo == hi:
        return EMPTY_ROOT
    level = list(leaf_hashes[lo:hi])
    while len(level) > 1:
        up = [
            _sha256(_NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            up.append(level[-1])
        level = up
    return level[0]


def _read(read: HashReader, plan: list[Coord]) -> list[bytes]:
    if not plan:
        return []
    hashes = list(read(plan))
    if len(hashes) != len(plan):
        raise CorruptionError(
            f"stored-hash reader returned {len(hashes)} hashes for {len(plan)} coordinates",
            coords=plan,
        )
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


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise InputError(
            f"leaf index {index} is outside the tree of size {size}", index=index, size=size
        )


def _check_sizes(size1: int, size2: int) -> None:
    if not 0 <= size1 <= size2:
        raise InputError(
            f"consistency needs 0 <= size1 <= size2, got size1={size1} size2={size2}",
            size1=size1,
            size2=size2,
        )


def _check_leaf_hashes(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size > len(leaf_hashes):
        raise InputError(
            f"tree size {size} exceeds the {len(leaf_hashes)} leaf hashes given", size=size
        )
    for i in range(size):
        if len(leaf_hashes[i]) != HASH_SIZE:
            raise InputError(
                f"leaf hash {i} is {len(leaf_hashes[i])} bytes, want {HASH_SIZE}", index=i
            )


def _check_input_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise InputError(f"{what} is {len(h)} bytes, want {HASH_SIZE}")


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, want {HASH_SIZE}", length=len(h))


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(
                f"proof hash {i} is {len(p)} bytes, want {HASH_SIZE}", position=i, length=len(p)
            )


def _check_root_equal(expected: bytes, calculated: bytes, which: str, message: str) -> None:
    if calculated != expected:
        raise ProofError(message, expected=expected, calculated=calculated, which=which)


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "Coord",
    "HashReader",
    "assemble_consistency",
    "assemble_inclusion",
    "assemble_tree_hash",
    "consistency_plan",
    "consistency_proof",
    "inclusion_plan",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "prove_consistency",
    "prove_inclusion",
    "root_hash",
    "stored_hashes_for_leaf",
    "stored_hashes_for_leaves",
    "tree_hash",
    "tree_hash_plan",
    "verify_consistency",
    "verify_inclusion",
]
