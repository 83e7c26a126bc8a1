"""Tests for ledger.merkle: published vectors, the transparency-dev probe corpus, and a naive
recursive RFC 9162 §2.1 reference compared with both the list and stored-hash APIs."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import CorruptionError, InputError, ProofError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "merkle"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


# --- naive reference: the recursive definitions of RFC 9162 §2.1, over leaf hashes ---------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return _sha(b"")
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return _sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True) if 0 < m < len(d) else []


# --- a stored-hash store, as the LevelDB layer keeps one -------------------------------------


class Store:
    """Keeps stored hashes by (level, index) and records every batch read."""

    def __init__(self) -> None:
        self.hashes: dict[tuple[int, int], bytes] = {}
        self.size = 0
        self.calls: list[list[tuple[int, int]]] = []

    def read(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        assert coords, "readers are never called with an empty plan"
        self.calls.append(list(coords))
        return [self.hashes[c] for c in coords]

    def append(self, lh: bytes) -> None:
        for level, index, h in merkle.stored_hashes_for_leaf(self.size, lh, self.read):
            assert (level, index) not in self.hashes
            self.hashes[(level, index)] = h
        self.size += 1


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


BIG = 300
BIG_LEAVES = _leaves(BIG)
BIG_STORE = Store()
for _lh in BIG_LEAVES:
    BIG_STORE.append(_lh)


# --- published vectors -------------------------------------------------------------------


REF = _load("reference-tree.json")
REF_LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in REF["leaves"]]


@pytest.mark.parametrize("vec", REF["hasherVectors"], ids=lambda v: v["name"])
def test_hasher_vectors(vec: dict[str, Any]) -> None:
    if vec["kind"] == "empty":
        got = merkle.root_hash([])
        assert merkle.EMPTY_ROOT.hex() == vec["want"]
    elif vec["kind"] == "leaf":
        got = merkle.leaf_hash(bytes.fromhex(vec["data"]))
    else:
        got = merkle.node_hash(bytes.fromhex(vec["left"]), bytes.fromhex(vec["right"]))
    assert got.hex() == vec["want"]


def test_reference_roots_every_size() -> None:
    store = Store()
    for size, want in enumerate(REF["roots"]):
        assert merkle.root_hash(REF_LEAVES[:size]).hex() == want
        assert merkle.tree_hash(size, store.read).hex() == want
        if size < len(REF_LEAVES):
            store.append(REF_LEAVES[size])


def test_reference_stored_hashes_are_the_published_node_hashes() -> None:
    store = Store()
    for lh in REF_LEAVES:
        store.append(lh)
    want = {
        (level, index): h
        for level, row in enumerate(REF["nodeHashes"])
        for index, h in enumerate(row)
    }
    assert {c: h.hex() for c, h in store.hashes.items()} == want


@pytest.mark.parametrize(
    "vec", REF["inclusionProofs"], ids=lambda v: f"{v['leafIndex']}-of-{v['treeSize']}"
)
def test_reference_inclusion_proofs(vec: dict[str, Any]) -> None:
    index, size = vec["leafIndex"], vec["treeSize"]
    want = [bytes.fromhex(p) for p in vec["proof"]]
    store = Store()
    for lh in REF_LEAVES[:size]:
        store.append(lh)
    assert merkle.inclusion_proof(REF_LEAVES, index, size) == want
    assert merkle.prove_inclusion(index, size, store.read) == want
    root = bytes.fromhex(REF["roots"][size])
    merkle.verify_inclusion(REF_LEAVES[index], index, size, want, root)


@pytest.mark.parametrize(
    "vec", REF["consistencyProofs"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_reference_consistency_proofs(vec: dict[str, Any]) -> None:
    size1, size2 = vec["size1"], vec["size2"]
    want = [bytes.fromhex(p) for p in vec["proof"]]
    store = Store()
    for lh in REF_LEAVES[:size2]:
        store.append(lh)
    assert merkle.consistency_proof(REF_LEAVES, size1, size2) == want
    assert merkle.prove_consistency(size1, size2, store.read) == want
    roots = REF["roots"]
    merkle.verify_consistency(
        size1, size2, want, bytes.fromhex(roots[size1]), bytes.fromhex(roots[size2])
    )


# --- the transparency-dev probe corpus ------------------------------------------------------


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


INCLUSION_PROBES = _load("inclusion-probes.json")["cases"]
CONSISTENCY_PROBES = _load("consistency-probes.json")["cases"]


@pytest.mark.parametrize("probe", INCLUSION_PROBES, ids=lambda p: p["name"])
def test_inclusion_probe(probe: dict[str, Any]) -> None:
    args = (
        _b64(probe["leafHash"]),
        probe["leafIdx"],
        probe["treeSize"],
        [_b64(p) for p in probe["proof"]],
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("probe", CONSISTENCY_PROBES, ids=lambda p: p["name"])
def test_consistency_probe(probe: dict[str, Any]) -> None:
    args = (
        probe["size1"],
        probe["size2"],
        [_b64(p) for p in probe["proof"]],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
    )
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_probe_corpus_covers_the_attack_classes() -> None:
    names = " ".join(p["name"] for p in INCLUSION_PROBES + CONSISTENCY_PROBES)
    for attack in (
        "bit",
        "truncated-proof",
        "inserted-component",
        "removed-component",
        "leafIdx-plus",
        "leafIdx-sub",
        "leafIdx-XOR",
        "size2-mul",
        "size2-div",
        "treeSize-mul",
        "treeSize-div",
        "swapped-roots",
        "preceding-garbage",
        "trailing-garbage",
        "empty-root",
    ):
        assert attack in names, attack
    assert sum(not p["wantErr"] for p in INCLUSION_PROBES + CONSISTENCY_PROBES) >= 10


@pytest.mark.parametrize(
    "probe", _load("interior-node-as-leaf.json")["cases"], ids=lambda p: p["name"]
)
def test_interior_node_posed_as_leaf_is_rejected(probe: dict[str, Any]) -> None:
    proof = [bytes.fromhex(p) for p in probe["proof"]]
    root = bytes.fromhex(probe["root"])
    index, size = probe["leafIndex"], probe["treeSize"]
    # Without domain separation the forged leaf would hash to the interior node, which verifies:
    merkle.verify_inclusion(bytes.fromhex(probe["interiorNode"]), index, size, proof, root)
    forged = merkle.leaf_hash(bytes.fromhex(probe["leafData"]))
    with pytest.raises(ProofError) as err:
        merkle.verify_inclusion(forged, index, size, proof, root)
    assert err.value.evidence["expected"] == root


# --- the reference implementation against both APIs -------------------------------------------


def test_exhaustive_small_trees_match_reference() -> None:
    for size in range(0, 41):
        d = BIG_LEAVES[:size]
        assert merkle.root_hash(d) == ref_mth(d)
        assert merkle.tree_hash(size, BIG_STORE.read) == ref_mth(d)
        for index in range(size):
            want = ref_path(index, d)
            assert merkle.inclusion_proof(BIG_LEAVES, index, size) == want
            assert merkle.prove_inclusion(index, size, BIG_STORE.read) == want
        for size1 in range(0, size + 1):
            want = ref_proof(size1, d)
            assert merkle.consistency_proof(BIG_LEAVES, size1, size) == want
            assert merkle.prove_consistency(size1, size, BIG_STORE.read) == want
            merkle.verify_consistency(size1, size, want, ref_mth(d[:size1]), ref_mth(d))


def test_a_shared_range_memo_never_changes_a_proof() -> None:
    # One memo across every size and index, as a LogReader keeps it: right-edge ranges
    # remembered at one size must serve the others unchanged.
    memo: merkle.RangeMemo = {}
    for size in range(0, 70):
        d = BIG_LEAVES[:size]
        for index in range(size):
            assert merkle.prove_inclusion(index, size, BIG_STORE.read, memo) == ref_path(index, d)
        for size1 in range(0, size + 1):
            assert merkle.prove_consistency(size1, size, BIG_STORE.read, memo) == ref_proof(size1, d)
    assert memo and all(hi - lo & (hi - lo - 1) for lo, hi in memo)  # only ranges of several subtrees


def test_a_path_reader_gives_the_same_proofs_and_a_wrong_one_is_refused() -> None:
    # The reader's cache hands the siblings on a leaf's path over in one call (a PathReader);
    # the proofs, inclusion and consistency, with and without a memo, stay the reference's.
    calls: list[tuple[int, int, int]] = []

    def path(index: int, low: int, high: int) -> list[bytes]:
        calls.append((index, low, high))
        return BIG_STORE.read([(level, (index >> level) ^ 1) for level in range(low, high)])

    memo: merkle.RangeMemo = {}
    for size in range(0, 70):
        d = BIG_LEAVES[:size]
        for index in range(size):
            assert merkle.prove_inclusion(index, size, BIG_STORE.read, memo, path) == ref_path(index, d)
            assert merkle.prove_inclusion(index, size, BIG_STORE.read, None, path) == ref_path(index, d)
        for size1 in range(0, size + 1):
            assert merkle.prove_consistency(size1, size, BIG_STORE.read, memo, path) == ref_proof(size1, d)
            assert merkle.prove_consistency(size1, size, BIG_STORE.read, None, path) == ref_proof(size1, d)
    assert calls  # the path reader was used
    with pytest.raises(CorruptionError, match="path reader"):
        merkle.prove_inclusion(5, 64, BIG_STORE.read, None, lambda i, lo, hi: path(i, lo, hi)[1:])
    with pytest.raises(CorruptionError, match="path reader"):
        merkle.prove_consistency(5, 64, BIG_STORE.read, None, lambda i, lo, hi: [*path(i, lo, hi), bytes(32)])
    # A path reader that does not hold the hashes (None) leaves them to the plain reader.
    assert merkle.prove_inclusion(5, 64, BIG_STORE.read, None, lambda i, lo, hi: None) == ref_path(5, BIG_LEAVES[:64])


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, BIG))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(0, BIG))
    return draw(st.integers(0, size2)), size2


@given(index_and_size())
@settings(max_examples=300, deadline=None)
def test_inclusion_matches_reference(pair: tuple[int, int]) -> None:
    index, size = pair
    d = BIG_LEAVES[:size]
    want = ref_path(index, d)
    BIG_STORE.calls.clear()
    assert merkle.prove_inclusion(index, size, BIG_STORE.read) == want
    assert len(BIG_STORE.calls) <= 1
    assert sum(map(len, BIG_STORE.calls)) <= 2 * size.bit_length()
    assert merkle.inclusion_proof(BIG_LEAVES, index, size) == want
    merkle.verify_inclusion(d[index], index, size, want, ref_mth(d))


@given(two_sizes())
@settings(max_examples=300, deadline=None)
def test_consistency_matches_reference(pair: tuple[int, int]) -> None:
    size1, size2 = pair
    d = BIG_LEAVES[:size2]
    want = ref_proof(size1, d)
    BIG_STORE.calls.clear()
    assert merkle.prove_consistency(size1, size2, BIG_STORE.read) == want
    assert len(BIG_STORE.calls) <= 1
    assert sum(map(len, BIG_STORE.calls)) <= 2 * size2.bit_length()
    assert merkle.consistency_proof(BIG_LEAVES, size1, size2) == want
    merkle.verify_consistency(size1, size2, want, ref_mth(d[:size1]), ref_mth(d))


@given(st.integers(0, BIG))
@settings(max_examples=100, deadline=None)
def test_tree_hash_matches_reference(size: int) -> None:
    BIG_STORE.calls.clear()
    assert merkle.tree_hash(size, BIG_STORE.read) == ref_mth(BIG_LEAVES[:size])
    assert len(BIG_STORE.calls) == (1 if size else 0)
    assert len(merkle.tree_hash_plan(size)) == size.bit_count()


@given(st.binary(max_size=8), st.integers(1, 70))
@settings(max_examples=30, deadline=None)
def test_any_leaf_data_matches_reference(salt: bytes, size: int) -> None:
    d = _leaves(size, salt)
    store = Store()
    for lh in d:
        store.append(lh)
    assert merkle.tree_hash(size, store.read) == ref_mth(d) == merkle.root_hash(d)


@given(st.integers(0, 200), st.integers(1, 120))
@settings(max_examples=60, deadline=None)
def test_batch_append_equals_one_by_one(start: int, count: int) -> None:
    d = BIG_LEAVES[: start + count]
    one = Store()
    for lh in d:
        one.append(lh)
    batch = Store()
    for lh in d[:start]:
        batch.append(lh)
    batch.calls.clear()
    new = merkle.stored_hashes_for_leaves(start, d[start:], batch.read)
    assert len(batch.calls) <= 1
    for level, index, h in new:
        batch.hashes[(level, index)] = h
    assert batch.hashes == one.hashes
    assert merkle.stored_hashes_for_leaves(start, [], batch.read) == []


# --- mutations are rejected ------------------------------------------------------------------


@given(index_and_size(), st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_inclusion_proof_is_rejected(pair: tuple[int, int], data: st.DataObject) -> None:
    index, size = pair
    d = BIG_LEAVES[:size]
    proof, root = ref_path(index, d), ref_mth(d)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = (int.from_bytes(bad[i], "big") ^ (1 << bit)).to_bytes(32, "big")
        with pytest.raises(ProofError):
            merkle.verify_inclusion(d[index], index, size, bad, root)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(d[index], index, size, proof[:-1], root)
        other = data.draw(st.integers(0, size - 1).filter(lambda j: j != index))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(d[index], other, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(d[index], index, size, [*proof, root], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(d[index], index, size, [root, *proof], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(d[index], index, size, proof, _sha(root))


@given(two_sizes(), st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_consistency_proof_is_rejected(pair: tuple[int, int], data: st.DataObject) -> None:
    size1, size2 = pair
    d = BIG_LEAVES[:size2]
    proof, root1, root2 = ref_proof(size1, d), ref_mth(d[:size1]), ref_mth(d)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 0x10]) + bad[i][1:]
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, bad, root1, root2)
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, proof[:-1], root1, root2)
    if size1 != size2:
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, proof, root2, root1)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, [*proof, root2], root1, root2)
    if size1:  # from the empty tree, root2 is unconstrained by design
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, proof, root1, _sha(root2))


# --- preconditions -------------------------------------------------------------------------


def test_verify_inclusion_preconditions() -> None:
    d = BIG_LEAVES[:8]
    root, proof = ref_mth(d), ref_path(3, d)
    cases = {
        "index == size": (d[3], 8, 8, proof, root),
        "index > size": (d[3], 9, 8, proof, root),
        "negative index": (d[3], -1, 8, proof, root),
        "empty tree": (d[3], 0, 0, [], merkle.EMPTY_ROOT),
        "short leaf hash": (d[3][:31], 3, 8, proof, root),
        "long root": (d[3], 3, 8, proof, root + b"\x00"),
        "empty root": (d[3], 3, 8, proof, b""),
        "short proof element": (d[3], 3, 8, [proof[0][:16], *proof[1:]], root),
        "empty proof element": (d[3], 3, 8, [b"", *proof], root),
    }
    for name, args in cases.items():
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
            pytest.fail(f"accepted: {name}")


def test_verify_consistency_preconditions() -> None:
    d = BIG_LEAVES[:8]
    r3, r8 = ref_mth(d[:3]), ref_mth(d)
    p = ref_proof(3, d)
    empty = merkle.EMPTY_ROOT
    bad = {
        "size1 > size2": (8, 3, p, r8, r3),
        "negative size1": (-1, 8, p, r3, r8),
        "size1 == 0 with proof": (0, 8, [r8], empty, r8),
        "size1 == 0 with non-empty root1": (0, 8, [], r3, r8),
        "0 to 0 with non-empty root2": (0, 0, [], empty, r3),
        "equal sizes with proof": (8, 8, [r8], r8, r8),
        "equal sizes, different roots": (8, 8, [], r8, r3),
        "short root1": (3, 8, p, r3[:31], r8),
        "empty proof": (3, 8, [], r3, r8),
    }
    for args in bad.values():
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    merkle.verify_consistency(0, 8, [], empty, r8)
    merkle.verify_consistency(0, 0, [], empty, empty)
    merkle.verify_consistency(8, 8, [], r8, r8)


def test_generators_reject_bad_arguments() -> None:
    d = BIG_LEAVES[:8]
    for call in (
        lambda: merkle.inclusion_proof(d, 8, 8),
        lambda: merkle.inclusion_proof(d, 0, 9),
        lambda: merkle.inclusion_proof(d, -1, 8),
        lambda: merkle.consistency_proof(d, 5, 4),
        lambda: merkle.consistency_proof(d, 4, 9),
        lambda: merkle.root_hash([*d, b"short"]),
        lambda: merkle.prove_inclusion(0, 0, BIG_STORE.read),
        lambda: merkle.prove_consistency(-1, 4, BIG_STORE.read),
        lambda: merkle.tree_hash(-1, BIG_STORE.read),
        lambda: merkle.stored_hashes_for_leaf(-1, d[0], BIG_STORE.read),
        lambda: merkle.stored_hashes_for_leaf(0, b"short", BIG_STORE.read),
        lambda: merkle.assemble_inclusion(3, 8, [d[0]]),
        lambda: merkle.assemble_inclusion(0, 1, [d[0]]),
    ):
        with pytest.raises(InputError):
            call()


def test_bad_reader_is_reported_as_corruption() -> None:
    with pytest.raises(CorruptionError):
        merkle.tree_hash(7, lambda coords: [b"\x00" * 32])
    with pytest.raises(CorruptionError):
        merkle.prove_inclusion(0, 8, lambda coords: [b"\x00" * 31 for _ in coords])
    with pytest.raises(CorruptionError):
        merkle.stored_hashes_for_leaf(3, BIG_LEAVES[3], lambda coords: [])


def test_plans_name_only_perfect_subtrees_inside_the_tree() -> None:
    for size in range(1, 70):
        for coords in (
            merkle.tree_hash_plan(size),
            *(merkle.inclusion_plan(i, size) for i in range(size)),
            *(merkle.consistency_plan(s, size) for s in range(size + 1)),
        ):
            for level, index in coords:
                assert (index + 1) << level <= size


def test_large_log_is_fast_and_shallow() -> None:
    # 2**16 + 3 leaves through the batch API; proofs read O(log n) hashes in one call.
    n = (1 << 16) + 3
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    store = Store()
    for start in range(0, n, 4096):
        for level, index, h in merkle.stored_hashes_for_leaves(
            start, leaves[start : start + 4096], store.read
        ):
            store.hashes[(level, index)] = h
    root = merkle.tree_hash(n, store.read)
    assert root == merkle.root_hash(leaves)
    store.calls.clear()
    proof = merkle.prove_inclusion(40_000, n, store.read)
    assert len(store.calls) == 1 and len(store.calls[0]) <= 2 * n.bit_length()
    merkle.verify_inclusion(leaves[40_000], 40_000, n, proof, root)
    old = merkle.tree_hash(50_001, store.read)
    merkle.verify_consistency(50_001, n, merkle.prove_consistency(50_001, n, store.read), old, root)
