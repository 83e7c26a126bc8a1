"""RFC 9162 §2.1 core: the tree's hashing and the shape of its proofs.

The layer below :mod:`ledger.merkle` (list-based API and verifiers) and
:mod:`ledger.merkle_stored` (stored-hash API); it imports neither.

Invariants:

* Every hash is SHA-256 (32 bytes). A leaf hash is ``SHA-256(0x00 || data)`` and an interior
  node is ``SHA-256(0x01 || left || right)``; the distinct prefixes make it impossible to pass
  an interior node off as a leaf. The empty tree's root is ``SHA-256("")``.
* A proof is a list of subtree hashes; which leaf ranges they cover depends only on the tree
  shape (``index``/``size`` or ``size1``/``size2``), never on the data, and is computed here
  once for every producer of proofs.
* Nothing here recurses over a list of leaves: the shape is O(log n) ranges, found in a loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.errors import InputError

HASH_SIZE = 32
"""Size in bytes of every hash in the tree."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

# RFC 9162 §2.1.1 domain separation: 0x00 prefixes leaf data, 0x01 prefixes interior nodes.
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Hash a leaf: ``SHA-256(0x00 || data)`` (RFC 9162 §2.1.1)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an interior node: ``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1).

    Requires both children to be 32-byte hashes (not checked: this is the hot path).
    """
    return _sha256(_NODE_PREFIX + left + right).digest()


# --- proof shapes (RFC 9162 §2.1.3.1, §2.1.4.1) ----------------------------------------


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


# --- preconditions shared by every proof producer ----------------------------------------


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


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "leaf_hash",
    "node_hash",
]
