"""C2SP tlog-tiles paths: tile and entry-bundle ids and their one canonical spelling.

Re-exported by :mod:`ledger.tiles`, which holds tile and bundle contents and their checks.

Invariants:

* A hash tile ``(L, N, W)`` holds the ``W`` stored hashes at tree level ``8*L`` with indexes
  ``N*256 .. N*256+W-1``; a full tile has ``W == 256``; a bundle ``(N, W)`` holds entries
  ``N*256 .. N*256+W-1``.
* Paths are canonical: ``tile/<L>/<N>[.p/<W>]`` and ``tile/entries/<N>[.p/<W>]`` with ``N`` in
  zero-padded 3-digit groups, all but the last prefixed ``x``; the parser accepts only the
  one spelling the formatter produces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.errors import InputError
from ledger.merkle import MAX_TREE_SIZE, Coord

TILE_HEIGHT = 8
"""Tree levels spanned by one tile."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile, and entries in a full bundle."""

MAX_TILE_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
"""Largest entry an entry bundle can hold (uint16 length prefix)."""

_MAX_PATH = 128
_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_GROUP = re.compile(r"x[0-9]{3}")
_LAST_GROUP = re.compile(r"[0-9]{3}")


@dataclass(frozen=True)
class TileId:
    """A hash tile: ``level`` L, ``index`` N within the level, ``width`` W (1..256)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL:
            raise InputError(f"tile level {self.level} is outside 0..{MAX_TILE_LEVEL}")
        _check_index_width(self.index, self.width, self.level)

    @property
    def is_partial(self) -> bool:
        """Whether the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """The canonical path, ``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{_encode_index(self.index, self.width)}"

    def coords(self) -> list[Coord]:
        """The stored-hash coordinates the tile holds, in order."""
        level, first = TILE_HEIGHT * self.level, self.index * TILE_WIDTH
        return [(level, first + i) for i in range(self.width)]


@dataclass(frozen=True)
class BundleId:
    """An entry bundle: entries ``index*256 .. index*256+width-1``."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        _check_index_width(self.index, self.width, 0)

    @property
    def start(self) -> int:
        """Log index of the first entry in the bundle."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        """The canonical path, ``tile/entries/<N>[.p/<W>]``."""
        return f"tile/entries/{_encode_index(self.index, self.width)}"

    def tile(self) -> TileId:
        """The level-0 hash tile holding the leaf hashes of this bundle's entries."""
        return TileId(0, self.index, self.width)


def parse_tile_path(path: str) -> TileId | BundleId:
    """Parse a canonical tile or entry-bundle path (without the log prefix).

    Raises:
        InputError: the path is not exactly what :meth:`TileId.path` or
            :meth:`BundleId.path` would produce.
    """
    if len(path) > _MAX_PATH or not path.isascii():
        raise InputError(f"tile path {path[:_MAX_PATH]!r} is too long or not ASCII")
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise InputError(f"tile path {path!r} does not start with tile/<L>/ or tile/entries/")
    groups = parts[2:]
    width = TILE_WIDTH
    if len(groups) >= 2 and groups[-2].endswith(".p"):
        if not _WIDTH.fullmatch(groups[-1]) or int(groups[-1]) >= TILE_WIDTH:
            raise InputError(f"tile path {path!r} has a bad partial width {groups[-1]!r}")
        width = int(groups[-1])
        groups = [*groups[:-2], groups[-2][:-2]]
    if not _LAST_GROUP.fullmatch(groups[-1]) or not all(_GROUP.fullmatch(g) for g in groups[:-1]):
        raise InputError(f"tile path {path!r} does not encode the index in x-prefixed groups")
    if len(groups) > 1 and groups[0] == "x000":
        raise InputError(f"tile path {path!r} has a leading zero group")
    index = int("".join(g.lstrip("x") for g in groups))
    if parts[1] == "entries":
        return BundleId(index, width)
    if not _LEVEL.fullmatch(parts[1]):
        raise InputError(f"tile path {path!r} has a bad level {parts[1]!r}")
    return TileId(int(parts[1]), index, width)


def _encode_index(index: int, width: int) -> str:
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    path = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def _check_index_width(index: int, width: int, level: int) -> None:
    if not 1 <= width <= TILE_WIDTH:
        raise InputError(f"tile width {width} is outside 1..{TILE_WIDTH}")
    if index < 0 or index * TILE_WIDTH ** (level + 1) > MAX_TREE_SIZE:
        raise InputError(f"tile index {index} is outside any possible tree")


__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "BundleId",
    "TileId",
    "parse_tile_path",
]
