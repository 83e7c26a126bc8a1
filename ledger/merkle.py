"""RFC 9162 Merkle trees: the list-based API and proof verification, as pure functions.

Hashing and proof shapes are in :mod:`ledger.merkle_core`, the stored-hash API (plan, read
once, assemble) in :mod:`ledger.merkle_stored`; both are re-exported here, so ``ledger.merkle``
stays the one import for callers.

Invariants:

* Every hash is SHA-256 (32 bytes), with RFC 9162 domain separation (see
  :mod:`ledger.merkle_core`); the empty tree's root is ``SHA-256("")``.
* Producers check their preconditions and raise :class:`ledger.errors.InputError`.
* Verifiers return ``None`` or raise :class:`ledger.errors.ProofError`; mismatches carry the
  ``expected`` and ``calculated`` hashes as evidence. They never return a boolean.
* Nothing here recurses over a list of leaves: large trees cost O(n) time, O(log n) depth.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import ProofError
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
    leaf_hash,
    node_hash,
)
from ledger.merkle_stored import (
    Coord,
    HashReader,
    PathReader,
    RangeMemo,
    assemble_consistency,
    assemble_inclusion,
    assemble_tree_hash,
    consistency_plan,
    inclusion_plan,
    inclusion_ranges,
    prove_consistency,
    prove_inclusion,
    range_coords,
    stored_hashes_for_leaf,
    stored_hashes_for_leaves,
    tree_hash,
    tree_hash_plan,
)

MAX_TREE_SIZE = 2**63 - 1
"""Largest tree size the text and tile formats accept (a signed 64-bit count, as in Go tlog)."""


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


# --- internals -----------------------------------------------------------------------------


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
    "PathReader",
    "RangeMemo",
    "assemble_consistency",
    "assemble_inclusion",
    "assemble_tree_hash",
    "consistency_plan",
    "consistency_proof",
    "inclusion_plan",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "prove_consistency",
    "prove_inclusion",
    "range_coords",
    "root_hash",
    "stored_hashes_for_leaf",
    "stored_hashes_for_leaves",
    "tree_hash",
    "tree_hash_plan",
    "verify_consistency",
    "verify_inclusion",
]
