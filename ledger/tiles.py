"""C2SP tlog-tiles: tile and entry-bundle paths, tile contents, and checking tiles against a root.

Invariants:

* A hash tile ``(L, N, W)`` holds the ``W`` stored hashes at tree level ``8*L`` with indexes
  ``N*256 .. N*256+W-1``; a full tile has ``W == 256``. For a tree of size ``s`` the tile at
  ``(L, N)`` has exactly one valid width, ``min(256, s // 256**L - N*256)``: partial tiles
  (``W < 256``) are exactly the right-edge tiles.
* Paths and ids (:class:`TileId`, :class:`BundleId`, :func:`parse_tile_path`) live in
  :mod:`ledger.tile_paths` and are re-exported here: one canonical spelling each.
* Tile data is trusted only after :func:`verify_tiles`: right-edge tiles are authenticated by
  recomputing the tree root from them, every other tile by its hash appearing in its
  (already authenticated) parent tile.
* Entry bundles are big-endian uint16 length-prefixed entries; decoding is exact (no
  trailing bytes, exactly ``W`` entries).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ledger.errors import EncodingError, InputError, ProofError, TooLargeError
from ledger.merkle import (
    HASH_SIZE,
    Coord,
    assemble_tree_hash,
    leaf_hash,
    root_hash,
    tree_hash_plan,
)
from ledger.tile_paths import (
    MAX_ENTRY_SIZE,
    MAX_TILE_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleId,
    TileId,
    parse_tile_path,
)


def tile_for(level: int, index: int, size: int) -> TileId:
    """The tile of the tree of ``size`` leaves from which stored hash ``(level, index)`` is read.

    Hashes at levels that are not multiples of 8 are folded from the tile's hashes (see
    :func:`hash_from_tile`). Requires the coordinate to be a complete subtree inside the
    tree: ``(index + 1) * 2**level <= size``.

    Raises:
        InputError: the coordinate is not inside the tree.
    """
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise InputError(
            f"stored hash (level {level}, index {index}) is not inside a tree of size {size}"
        )
    tile_level, height = divmod(level, TILE_HEIGHT)
    n = (index << height) >> TILE_HEIGHT
    return TileId(tile_level, n, _width(tile_level, n, size))


def hash_from_tile(tile: TileId, data: bytes, level: int, index: int) -> bytes:
    """The stored hash ``(level, index)`` computed from a tile's data.

    Requires ``8*tile.level <= level < 8*tile.level + 8`` and the subtree to lie within the
    tile's width.

    Raises:
        InputError: the coordinate is not in this tile.
        EncodingError: ``data`` is not ``tile.width`` hashes.
    """
    hashes = decode_tile(tile, data)
    height = level - TILE_HEIGHT * tile.level
    first = (index << height) - tile.index * TILE_WIDTH
    if not 0 <= height < TILE_HEIGHT or first < 0 or first + (1 << height) > tile.width:
        raise InputError(f"stored hash (level {level}, index {index}) is not in {tile.path()}")
    return root_hash(hashes[first : first + (1 << height)])


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """Tile data: 1..256 concatenated 32-byte hashes.

    Raises:
        InputError: wrong count or a hash of the wrong size.
    """
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise InputError(f"a tile holds 1..{TILE_WIDTH} hashes of {HASH_SIZE} bytes")
    return b"".join(hashes)


def decode_tile(tile: TileId, data: bytes) -> list[bytes]:
    """Split tile data into its hashes.

    Raises:
        EncodingError: ``data`` is not exactly ``tile.width`` hashes.
    """
    if len(data) != tile.width * HASH_SIZE:
        raise EncodingError(
            f"{tile.path()} data is {len(data)} bytes, want {tile.width * HASH_SIZE}",
            length=len(data),
        )
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def new_tiles(old_size: int, new_size: int) -> list[TileId]:
    """The tiles that growing the tree from ``old_size`` to ``new_size`` creates or widens.

    Requires ``0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise InputError(f"tree cannot grow from {old_size} to {new_size}")
    tiles = []
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        old_n = old_size >> (TILE_HEIGHT * level)
        new_n = new_size >> (TILE_HEIGHT * level)
        # Tiles already full at old_size are unchanged; the rest are new or wider.
        for n in range(old_n // TILE_WIDTH, -(-new_n // TILE_WIDTH) if old_n != new_n else 0):
            tiles.append(TileId(level, n, min(TILE_WIDTH, new_n - n * TILE_WIDTH)))
        level += 1
    return tiles


def tile_plan(coords: Iterable[Coord], size: int) -> list[TileId]:
    """The tiles needed to read and authenticate ``coords`` in the tree of ``size`` leaves.

    Right-edge tiles come first (they authenticate against the root), then each further
    tile after its parent. Fetch them all, then call :func:`hashes_from_tiles`.

    Raises:
        InputError: a coordinate is not inside the tree.
    """
    plan: dict[TileId, None] = {}
    for level, index in tree_hash_plan(size):
        plan[tile_for(level, index, size)] = None
    for level, index in coords:
        chain = []
        tile: TileId | None = tile_for(level, index, size)
        while tile is not None and tile not in plan:
            chain.append(tile)
            tile = _parent(tile, size)
        for t in reversed(chain):
            plan[t] = None
    return list(plan)


def verify_tiles(tiles: Mapping[TileId, bytes], *, size: int, root: bytes) -> None:
    """Check that every tile given belongs to the tree ``(size, root)``.

    The right-edge tiles must all be present; they are checked by recomputing ``root`` from
    them. Every other tile must be full and is checked against its parent tile, which must
    also be given.

    Raises:
        ProofError: a tile is missing, has the wrong width for ``size``, or does not match.
        EncodingError: tile data has the wrong length.
    """
    for tile in tiles:
        if tile.width != _width(tile.level, tile.index, size):
            raise ProofError(f"{tile.path()} is not a tile of the tree of size {size}")
    plan = tree_hash_plan(size)
    edge = [tile_for(level, index, size) for level, index in plan]
    missing = [t.path() for t in edge if t not in tiles]
    if missing:
        raise ProofError(f"right-edge tiles {missing} are needed to check the root")
    calculated = assemble_tree_hash(
        size, [hash_from_tile(t, tiles[t], lv, ix) for t, (lv, ix) in zip(edge, plan, strict=True)]
    )
    if calculated != root:
        raise ProofError(
            f"tiles do not rebuild the root of the tree of size {size}",
            expected=root,
            calculated=calculated,
        )
    trusted = set(edge)
    for tile in sorted(tiles.keys() - trusted, key=lambda t: (-t.level, t.index)):
        parent = _parent(tile, size)
        if parent is None or parent not in trusted:
            raise ProofError(f"{tile.path()} cannot be checked: its parent tile is missing")
        expected = decode_tile(parent, tiles[parent])[tile.index % TILE_WIDTH]
        calculated = root_hash(decode_tile(tile, tiles[tile]))
        if calculated != expected:
            raise ProofError(
                f"{tile.path()} does not match its parent {parent.path()}",
                expected=expected,
                calculated=calculated,
            )
        trusted.add(tile)


def hashes_from_tiles(
    coords: Sequence[Coord], tiles: Mapping[TileId, bytes], *, size: int, root: bytes
) -> list[bytes]:
    """Read stored hashes from tiles, after checking the tiles against ``(size, root)``.

    ``tiles`` should hold at least :func:`tile_plan` ``(coords, size)``. The result can be
    passed to :func:`ledger.merkle.assemble_inclusion` and friends.

    Raises:
        ProofError: see :func:`verify_tiles`; also a needed tile is missing.
        InputError: a coordinate is not inside the tree.
    """
    verify_tiles(tiles, size=size, root=root)
    out = []
    for level, index in coords:
        tile = tile_for(level, index, size)
        if tile not in tiles:
            raise ProofError(f"{tile.path()} is needed for (level {level}, index {index})")
        out.append(hash_from_tile(tile, tiles[tile], level, index))
    return out


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: 1..256 entries, each prefixed with its big-endian uint16 length.

    Raises:
        InputError: wrong number of entries.
        TooLargeError: an entry is longer than 65535 bytes.
    """
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise InputError(f"an entry bundle holds 1..{TILE_WIDTH} entries, got {len(entries)}")
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise TooLargeError(
                f"entry {i} is {len(entry)} bytes, an entry bundle allows {MAX_ENTRY_SIZE}",
                size=len(entry),
                limit=MAX_ENTRY_SIZE,
            )
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(bundle: BundleId, data: bytes) -> list[bytes]:
    """Split an entry bundle into exactly ``bundle.width`` entries.

    Raises:
        EncodingError: truncated, too few or too many entries, or trailing bytes.
    """
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(entries) == bundle.width:
            raise EncodingError(f"{bundle.path()} has bytes after entry {bundle.width - 1}")
        if pos + 2 > len(data):
            raise EncodingError(f"{bundle.path()} ends inside a length prefix")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + length > len(data):
            raise EncodingError(f"{bundle.path()} entry {len(entries)} is truncated")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != bundle.width:
        raise EncodingError(f"{bundle.path()} has {len(entries)} entries, want {bundle.width}")
    return entries


def verify_bundle(bundle: BundleId, data: bytes, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Decode a bundle and check its entries against authenticated leaf hashes.

    Args:
        bundle: which bundle ``data`` claims to be.
        data: the bundle as received.
        leaf_hashes: the hashes of the bundle's level-0 tile, already checked with
            :func:`verify_tiles` or :func:`hashes_from_tiles`.

    Returns:
        The entries.

    Raises:
        EncodingError: the bundle is malformed.
        ProofError: an entry does not hash to its leaf hash.
    """
    entries = decode_bundle(bundle, data)
    if len(leaf_hashes) != len(entries):
        raise ProofError(f"{len(leaf_hashes)} leaf hashes given for {bundle.path()}")
    for i, (entry, want) in enumerate(zip(entries, leaf_hashes, strict=True)):
        got = leaf_hash(entry)
        if got != want:
            raise ProofError(
                f"entry {bundle.start + i} does not hash to its leaf hash",
                index=bundle.start + i,
                expected=want,
                calculated=got,
            )
    return entries


def _width(level: int, index: int, size: int) -> int:
    """Width of tile (level, index) in the tree of ``size`` leaves; <= 0 if it does not exist."""
    return min(TILE_WIDTH, (size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH)


def _parent(tile: TileId, size: int) -> TileId | None:
    """The tile holding ``tile``'s root hash, or None if ``tile`` is partial (it has none)."""
    if tile.is_partial:
        return None
    index = tile.index >> TILE_HEIGHT
    return TileId(tile.level + 1, index, _width(tile.level + 1, index, size))


__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "BundleId",
    "TileId",
    "decode_bundle",
    "decode_tile",
    "encode_bundle",
    "encode_tile",
    "hash_from_tile",
    "hashes_from_tiles",
    "new_tiles",
    "parse_tile_path",
    "tile_for",
    "tile_plan",
    "verify_bundle",
    "verify_tiles",
]
