"""Inclusion proofs of many leaves of one tree at once (the answers of a sequencer batch).

A single POST is answered with the inclusion proof of its entry in the tree of the
checkpoint it got, a batch POST with one proof per entry against one checkpoint. The
entries of one batch are mostly contiguous and at the right edge of the tree, so their
proofs share most elements: :class:`Prover` walks the RFC 9162 tree once, level by level,
over the nodes that hold a wanted leaf, instead of one full proof per leaf.

* Inside the batch, subtree hashes are folded from the batch's own leaf hashes (the
  :class:`~ledger.log.AppendResult`\\ s carry them); only the siblings outside it are read,
  in one call to :meth:`~ledger.reader.LogReader.stored_hashes` (one per complete subtree;
  a right-edge range is a suffix of the root's own stored hashes, read in the same call).
* Each proof element is hex-encoded once, and each proof's JSON text is its first element
  followed by the text its parent node's leaves share, so writing the answer is mostly
  C-level string concatenation (:class:`ProofSet`).

Invariants:

* The proofs equal :meth:`ledger.reader.LogReader.inclusion_proof`'s (hypothesis tests
  check it against a real store). Leaf hashes handed in are trusted only once what they
  fold into -- the hash of the lowest node holding every wanted leaf -- equals that node's
  hash from the store: then, short of a SHA-256 collision, every element folded from them
  is the stored tree's, and every other element is read as the strict path reads it.
  Anything else -- an index out of range, a size past the log, a leaf hash of the wrong
  size or one that disagrees with the store, a failed read -- goes to the per-leaf strict
  path, which gives the authoritative proofs or error (:attr:`Prover.fallbacks` counts it).
* Nothing is cached between calls (the log caches the large stored hashes itself).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import TurtlesError
from ledger.merkle import HASH_SIZE, node_hash, range_coords
from ledger.reader import LogReader


class ProofSet:
    """Inclusion proofs of some leaves of one tree, by leaf index.

    A proof list may be shared by every request for the same index: do not mutate it.
    """

    __slots__ = ("_lists", "_texts", "size")

    def __init__(self, size: int, lists: dict[int, list[bytes]], texts: dict[int, str]) -> None:
        self.size = size
        self._lists = lists
        self._texts = texts

    @classmethod
    def of_lists(cls, size: int, proofs: dict[int, list[bytes]]) -> ProofSet:
        """A set built from proof lists (the strict path), with their texts."""
        return cls(size, proofs, {i: proof_text(p) for i, p in proofs.items()})

    def __contains__(self, index: object) -> bool:
        return index in self._lists

    def proof(self, index: int) -> list[bytes]:
        """The inclusion proof of leaf ``index`` (KeyError if it was not asked for)."""
        return self._lists[index]

    def text(self, index: int) -> str:
        """:meth:`proof` as the inside of the JSON array ``json.dumps`` writes for its hex
        strings: ``"<hex>", "<hex>"`` (empty for an empty proof)."""
        return self._texts[index]

    def proofs(self, indexes: Sequence[int]) -> list[list[bytes]]:
        """:meth:`proof` of each of ``indexes``."""
        lists = self._lists
        return [lists[i] for i in indexes]

    def texts(self, indexes: Sequence[int]) -> list[str]:
        """:meth:`text` of each of ``indexes``."""
        texts = self._texts
        return [texts[i] for i in indexes]


def proof_text(proof: Sequence[bytes]) -> str:
    """The inside of the JSON array of ``proof``'s hex strings (as :meth:`ProofSet.text`)."""
    return ", ".join([f'"{h.hex()}"' for h in proof])


class Prover:
    """Inclusion proofs of many leaves in one tree at once (see the module docstring)."""

    def __init__(self, log: LogReader) -> None:
        self._log = log
        self.fallbacks = 0
        """Calls answered by the strict per-leaf path (out of range, or leaf hashes that
        disagree with the store); tests check the fast path is really taken."""

    def prove(
        self, indexes: Sequence[int], size: int, leaf_hashes: Sequence[bytes] | None = None
    ) -> ProofSet:
        """The inclusion proofs of ``indexes`` (any order, repeats allowed) in the tree of
        ``size`` leaves; ``leaf_hashes[k]`` is the leaf hash of ``indexes[k]`` if given (else
        they are read from the store).

        Raises:
            TurtlesError: what :meth:`~ledger.reader.LogReader.inclusion_proof` raises for an
                index or size out of range, or a failed read.
        """
        log = self._log
        if not indexes:
            return ProofSet(size, {}, {})
        if size > log.size or min(indexes) < 0 or max(indexes) >= size:
            return self._strict(indexes, size)
        try:
            if leaf_hashes is None:
                wanted = sorted(set(indexes))
                # One leaf's own hash is in no proof (see _walk): read only when folding.
                hashes = log.stored_hashes([(0, i) for i in wanted]) if len(wanted) > 1 else [b""]
                leaves = dict(zip(wanted, hashes, strict=True))
            else:
                given = dict(zip(indexes, leaf_hashes, strict=True))
                leaves = {i: given[i] for i in sorted(given)}
                if len(given) != len(indexes) and any(given[i] != h for i, h in zip(indexes, leaf_hashes, strict=True)):
                    return self._strict(indexes, size)
                if set(map(len, given.values())) != {HASH_SIZE}:
                    return self._strict(indexes, size)
            proofs = _walk(leaves, size, log)
        except TurtlesError:  # a failed read: the strict path says what went wrong
            return self._strict(indexes, size)
        return proofs if proofs is not None else self._strict(indexes, size)

    def _strict(self, indexes: Sequence[int], size: int) -> ProofSet:
        self.fallbacks += 1
        log = self._log
        return ProofSet.of_lists(size, {i: log.inclusion_proof(i, size) for i in indexes})


def _walk(leaves: dict[int, bytes], size: int, log: LogReader) -> ProofSet | None:
    """The proofs of ``leaves`` (index -> leaf hash, by increasing index; ``0 <= index < size``)
    in the tree of ``size``; None if the hashes folded from the leaves disagree with the store.

    Node ``j`` of level ``l`` covers leaves ``[j << l, (j + 1) << l)`` cut at ``size``; its
    sibling ``j ^ 1`` is the proof element of the leaves under it, unless the sibling starts
    at or past ``size`` (then the node moves up unchanged, RFC 9162 2.1.3.2). A sibling is
    a node holding a wanted leaf (folded here), a complete stored subtree, or a right-edge
    range ``[s << l, size)``, whose hash folds a suffix of the root's stored hashes.

    Below ``top`` -- the lowest node holding every wanted leaf -- the walk goes level by
    level over the nodes holding wanted leaves; above it, one path, whose elements every
    proof shares. The hash folded for ``top`` must equal its stored hash (checked unless
    ``top`` is a single leaf, whose own hash no proof contains).
    """
    # 1. Shape: the nodes holding wanted leaves up to `top`, and what to read: complete
    #    stored subtrees (`coords`) and the starts of right-edge ranges (`starts`).
    ids = list(leaves)
    low = 0
    coords: list[tuple[int, int]] = []
    starts: list[int] = []
    while len(ids) > 1:
        first, last = ids[0], ids[-1]
        if last - first + 1 == len(ids):  # a run (the common case): only its ends look out
            outside = ([first - 1] if first & 1 else []) + ([] if last & 1 else [last + 1])
            ids = list(range(first >> 1, (last >> 1) + 1))
        else:
            held = set(ids)
            outside = [j ^ 1 for j in ids if j ^ 1 not in held]
            ids = list(dict.fromkeys([j >> 1 for j in ids]))
        for s in outside:
            if s & 1 == 0 or (s + 1) << low <= size:  # left siblings are always complete
                coords.append((low, s))
            elif s << low < size:
                starts.append(s << low)
        low += 1
    top = ids[0]
    complete_top = (top + 1) << low <= size
    if low:  # the stored hash the fold must meet
        if complete_top:
            coords.append((low, top))
        else:
            starts.append(top << low)
    path: list[tuple[int, int] | int] = []  # the elements above `top`: a coordinate or a start
    j = top
    for level in range(low, (size - 1).bit_length()):
        s = j ^ 1
        if s < j or (s + 1) << level <= size:
            coords.append((level, s))
            path.append((level, s))
        elif s << level < size:
            starts.append(s << level)
            path.append(s << level)
        j >>= 1
    edge_plan = range_coords(min(starts), size) if starts else []
    read = log.stored_hashes(coords + edge_plan)
    stored = dict(zip(coords, read[: len(coords)], strict=True))
    edge: dict[int, bytes] = {}  # start -> hash of [start, size): suffix folds of the plan
    acc = b""
    for (lv, ix), h in zip(reversed(edge_plan), reversed(read[len(coords) :]), strict=True):
        acc = node_hash(h, acc) if acc else h
        edge[ix << lv] = acc
    # 2. Hashes bottom-up to `top`; sibs[l][j] is node j's element at level l (None: moves up).
    sibs: list[dict[int, bytes | None]] = []
    cur = leaves
    for level in range(low):
        sib: dict[int, bytes | None] = {}
        up: dict[int, bytes] = {}
        nodes = iter(cur.items())
        for j, h in nodes:
            if j & 1:  # its left sibling holds no wanted leaf
                left = stored[(level, j - 1)]
                sib[j] = left
                up[j >> 1] = node_hash(left, h)
                continue
            s = j + 1
            right = cur.get(s)
            if right is not None:
                next(nodes)  # that is the right sibling: hashed here
                sib[j] = right
                sib[s] = h
            elif s << level >= size:
                sib[j] = None
                up[j >> 1] = h
                continue
            else:
                right = stored.get((level, s)) or edge[s << level]
                sib[j] = right
            up[j >> 1] = node_hash(h, right)
        sibs.append(sib)
        cur = up
    if low and cur[top] != (stored[(low, top)] if complete_top else edge[top << low]):
        return None
    # 3. Proofs top-down: a node's proof is its element, then its parent's proof.
    shared = [stored[e] if isinstance(e, tuple) else edge[e] for e in path]
    texts: dict[int, str] = {top: proof_text(shared)}
    lists: dict[int, list[bytes]] = {top: shared}
    for sib in reversed(sibs):
        above, above_lists = texts, lists
        texts, lists = {}, {}
        for j, e in sib.items():
            p = j >> 1
            if e is None:
                texts[j] = above[p]
                lists[j] = above_lists[p]
                continue
            t = above[p]
            texts[j] = f'"{e.hex()}", {t}' if t else f'"{e.hex()}"'
            lists[j] = [e, *above_lists[p]]
    return ProofSet(size, lists, texts)


__all__ = ["ProofSet", "Prover", "proof_text"]
