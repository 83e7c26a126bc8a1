"""Tests for ledger.tiles: canonical paths, the spec's worked examples, reading proofs from
tiles served by a real stored-hash log, and tampered or incomplete tile sets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle, tiles
from ledger.errors import EncodingError, InputError, ProofError, TooLargeError
from ledger.tiles import BundleId, TileId

# --- a log of 70,000 entries (the spec's example size), kept as stored hashes --------------

SIZE = 70_000
ENTRIES = [b"entry %d" % i for i in range(SIZE)]
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]
STORED: dict[tuple[int, int], bytes] = {
    (level, index): h
    for level, index, h in merkle.stored_hashes_for_leaves(0, LEAVES, lambda c: [])
}


def read(coords: Sequence[tuple[int, int]]) -> list[bytes]:
    return [STORED[c] for c in coords]


def serve(tile: TileId) -> bytes:
    """What a node serves at tile.path(): the stored hashes the tile names."""
    return tiles.encode_tile(read(tile.coords()))


def fetch(plan: Sequence[TileId]) -> dict[TileId, bytes]:
    return {t: serve(t) for t in plan}


ROOTS: dict[int, bytes] = {}


def root(size: int) -> bytes:
    if size not in ROOTS:
        ROOTS[size] = merkle.tree_hash(size, read)
    return ROOTS[size]


# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (TileId(0, 1234067), "tile/0/x001/x234/067"),
        (TileId(0, 1234067, 8), "tile/0/x001/x234/067.p/8"),
        (TileId(0, 0), "tile/0/000"),
        (TileId(2, 5, 1), "tile/2/005.p/1"),
        (TileId(1, 1000, 255), "tile/1/x001/000.p/255"),
        (BundleId(0), "tile/entries/000"),
        (BundleId(999, 17), "tile/entries/999.p/17"),
        (BundleId(1000), "tile/entries/x001/000"),
    ],
)
def test_path_examples(tile: TileId | BundleId, path: str) -> None:
    assert tile.path() == path
    assert tiles.parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/0",
        "/tile/0/000",
        "tile/0/000/",
        "tiles/0/000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/a/000",
        "tile/0/0",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1",
        "tile/0/x000/001",
        "tile/0/x001/x234",
        "tile/0/001/x234",
        "tile/0/X001/234",
        "tile/0/x01/234",
        "tile/0/001.p/0",
        "tile/0/001.p/256",
        "tile/0/001.p/012",
        "tile/0/001.p/",
        "tile/0/001.p",
        "tile/0/001.p/8/9",
        "tile/0/001.P/8",
        "tile/0/.p/8",
        "tile/0/\uff10\uff10\uff11",  # fullwidth digits
        "tile/entries/1",
        "tile/entries/x000/001",
        "tile/data/001",
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        "tile/0/" + "x001/" * 60 + "001",
    ],
)
def test_non_canonical_paths_are_rejected(path: str) -> None:
    with pytest.raises(InputError):
        tiles.parse_tile_path(path)


@given(st.integers(0, 7), st.integers(0, 2**40), st.integers(1, 256), st.booleans())
def test_paths_round_trip(level: int, index: int, width: int, bundle: bool) -> None:
    index %= merkle.MAX_TREE_SIZE // 256 ** (level + 1) + 1
    tile: TileId | BundleId = BundleId(index, width) if bundle else TileId(level, index, width)
    assert tiles.parse_tile_path(tile.path()) == tile


def test_bad_tile_ids_are_rejected() -> None:
    for args in [(-1, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257), (7, 1, 256)]:
        with pytest.raises(InputError):
            TileId(*args)
    with pytest.raises(InputError):
        BundleId(0, 0)


# --- tiles of a tree: the spec's worked examples --------------------------------------------


def test_spec_example_tree_of_70000() -> None:
    counts: dict[tuple[int, int], int] = {}
    for t in tiles.new_tiles(0, SIZE):
        counts[(t.level, t.width)] = counts.get((t.level, t.width), 0) + 1
    assert counts == {(0, 256): 273, (0, 112): 1, (1, 256): 1, (1, 17): 1, (2, 1): 1}
    assert tiles.new_tiles(0, 256) == [TileId(0, 0), TileId(1, 0, 1)]


@given(st.integers(0, SIZE), st.integers(0, SIZE))
@settings(max_examples=100, deadline=None)
def test_new_tiles_are_exactly_the_changed_tiles(a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    everything_new = set(tiles.new_tiles(0, new))
    unchanged = everything_new & set(tiles.new_tiles(0, old))
    assert set(tiles.new_tiles(old, new)) == everything_new - unchanged


def test_tile_contents_are_the_spec_hashes() -> None:
    # The n-th tile at level l holds MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l]).
    t = TileId(1, 0)
    hashes = tiles.decode_tile(t, serve(t))
    for i in (0, 1, 17, 255):
        assert hashes[i] == merkle.root_hash(LEAVES[i * 256 : (i + 1) * 256])
    assert tiles.decode_tile(TileId(0, 3), serve(TileId(0, 3))) == LEAVES[768:1024]


def test_hash_from_tile_folds_intermediate_levels() -> None:
    t = tiles.tile_for(3, 40, SIZE)
    assert t == TileId(0, 1)
    assert tiles.hash_from_tile(t, serve(t), 3, 40) == STORED[(3, 40)]
    assert tiles.hash_from_tile(TileId(1, 0), serve(TileId(1, 0)), 15, 0) == STORED[(15, 0)]
    with pytest.raises(InputError):
        tiles.hash_from_tile(t, serve(t), 3, 0)  # lives in tile 0, not tile 1
    with pytest.raises(InputError):
        tiles.hash_from_tile(t, serve(t), 8, 1)  # level 8 is tile level 1
    with pytest.raises(EncodingError):
        tiles.hash_from_tile(t, serve(t)[:-1], 3, 40)


def test_tile_for_requires_a_complete_subtree() -> None:
    assert tiles.tile_for(0, SIZE - 1, SIZE) == TileId(0, SIZE // 256, SIZE % 256)
    for level, index in [(0, SIZE), (4, SIZE // 16), (-1, 0), (0, -1), (17, 0)]:
        with pytest.raises(InputError):
            tiles.tile_for(level, index, SIZE)


# --- reading proofs from tiles ------------------------------------------------------------


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.one_of(st.integers(1, 600), st.integers(1, SIZE)))
    return draw(st.integers(0, size - 1)), size


@given(index_and_size())
@settings(max_examples=60, deadline=None)
def test_inclusion_proof_from_tiles(pair: tuple[int, int]) -> None:
    index, size = pair
    coords = merkle.inclusion_plan(index, size)
    plan = tiles.tile_plan(coords, size)
    hashes = tiles.hashes_from_tiles(coords, fetch(plan), size=size, root=root(size))
    proof = merkle.assemble_inclusion(index, size, hashes)
    assert proof == merkle.prove_inclusion(index, size, read)
    merkle.verify_inclusion(LEAVES[index], index, size, proof, root(size))


@given(index_and_size())
@settings(max_examples=60, deadline=None)
def test_consistency_proof_from_tiles(pair: tuple[int, int]) -> None:
    size1, size2 = pair[0] + 1, pair[1]
    coords = merkle.consistency_plan(size1, size2)
    plan = tiles.tile_plan(coords, size2)
    hashes = tiles.hashes_from_tiles(coords, fetch(plan), size=size2, root=root(size2))
    proof = merkle.assemble_consistency(size1, size2, hashes)
    assert proof == merkle.prove_consistency(size1, size2, read)
    merkle.verify_consistency(size1, size2, proof, root(size1), root(size2))


def test_plan_puts_parents_before_children() -> None:
    coords = merkle.inclusion_plan(5, SIZE)
    plan = tiles.tile_plan(coords, SIZE)
    assert plan[:3] == [TileId(2, 0, 1), TileId(1, 1, 17), TileId(0, 273, 112)]
    assert plan.index(TileId(1, 0)) < plan.index(TileId(0, 0))
    assert not any(t.is_partial for t in plan[3:])


def test_empty_tree_needs_no_tiles() -> None:
    assert tiles.tile_plan([], 0) == []
    tiles.verify_tiles({}, size=0, root=merkle.EMPTY_ROOT)
    with pytest.raises(ProofError):
        tiles.verify_tiles({}, size=0, root=LEAVES[0])


# --- tampered and incomplete tile sets ---------------------------------------------------------


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def test_every_tampered_tile_is_detected() -> None:
    index, size = 12_345, 69_999
    coords = merkle.inclusion_plan(index, size)
    good = fetch(tiles.tile_plan(coords, size))
    tiles.verify_tiles(good, size=size, root=root(size))
    for t in good:
        for pos in (0, len(good[t]) // 2, len(good[t]) - 1):
            bad = {**good, t: _flip(good[t], pos)}
            with pytest.raises(ProofError):
                tiles.hashes_from_tiles(coords, bad, size=size, root=root(size))


def test_incomplete_or_misfit_tile_sets_are_rejected() -> None:
    index, size = 300, 69_999
    coords = merkle.inclusion_plan(index, size)
    good = fetch(tiles.tile_plan(coords, size))
    without_parent = {t: d for t, d in good.items() if t != TileId(1, 0)}
    without_edge = {t: d for t, d in good.items() if t != TileId(0, 273, 111)}
    wider = {**good, TileId(0, 273, 112): serve(TileId(0, 273, 112))}
    other_root = root(size - 1)
    for bad, r in [
        (without_parent, root(size)),
        (without_edge, root(size)),
        (wider, root(size)),
        (good, other_root),
        ({t: d for t, d in good.items() if t != TileId(0, 1)}, root(size)),
    ]:
        with pytest.raises(ProofError):
            tiles.hashes_from_tiles(coords, bad, size=size, root=r)
    with pytest.raises(EncodingError):
        tiles.verify_tiles({**good, TileId(0, 1): b"\x00" * 31}, size=size, root=root(size))


def test_tiles_of_another_log_with_the_same_edge_are_rejected() -> None:
    # A server that swaps one full level-0 tile for another log's data (same width) is caught
    # by the parent level-1 tile, even though the right edge still rebuilds the root.
    size = 69_999
    coords = merkle.inclusion_plan(1000, size)
    good = fetch(tiles.tile_plan(coords, size))
    forged = tiles.encode_tile([merkle.leaf_hash(b"forged %d" % i) for i in range(256)])
    with pytest.raises(ProofError) as err:
        tiles.verify_tiles({**good, TileId(0, 3): forged}, size=size, root=root(size))
    assert err.value.evidence["expected"] == STORED[(8, 3)]


# --- entry bundles -------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_bundles_round_trip(entries: list[bytes]) -> None:
    bundle = BundleId(7, len(entries))
    assert tiles.decode_bundle(bundle, tiles.encode_bundle(entries)) == entries


def test_bundle_layout_is_uint16_length_prefixed() -> None:
    assert tiles.encode_bundle([b"", b"ab", b"\x00" * 256]) == (
        b"\x00\x00" + b"\x00\x02ab" + b"\x01\x00" + b"\x00" * 256
    )
    assert len(tiles.encode_bundle([b"x" * 0xFFFF])) == 0x10001


def test_bundles_are_decoded_strictly() -> None:
    data = tiles.encode_bundle([b"one", b"two"])
    for bad, width in [
        (data[:-1], 2),  # truncated entry
        (data + b"\x00", 2),  # half a length prefix
        (data + b"\x00\x00", 2),  # an extra (empty) entry
        (data, 3),  # too few entries
        (data, 1),  # trailing bytes
        (b"", 1),
    ]:
        with pytest.raises(EncodingError):
            tiles.decode_bundle(BundleId(0, width), bad)


def test_bundle_limits() -> None:
    with pytest.raises(TooLargeError):
        tiles.encode_bundle([b"x" * 0x10000])
    with pytest.raises(InputError):
        tiles.encode_bundle([])
    with pytest.raises(InputError):
        tiles.encode_bundle([b""] * 257)


def test_bundle_is_checked_against_its_authenticated_tile() -> None:
    size = 69_999
    bundle = BundleId(273, size % 256)
    tile = bundle.tile()
    coords = tile.coords()
    hashes = tiles.hashes_from_tiles(
        coords, fetch(tiles.tile_plan(coords, size)), size=size, root=root(size)
    )
    data = tiles.encode_bundle(ENTRIES[bundle.start : bundle.start + bundle.width])
    assert tiles.verify_bundle(bundle, data, hashes) == ENTRIES[bundle.start : size]
    tampered = tiles.encode_bundle([*ENTRIES[bundle.start : size - 1], b"evil"])
    with pytest.raises(ProofError) as err:
        tiles.verify_bundle(bundle, tampered, hashes)
    assert err.value.evidence["index"] == size - 1
    with pytest.raises(ProofError):
        tiles.verify_bundle(bundle, data, hashes[:-1])
