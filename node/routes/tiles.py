"""C2SP tlog-tiles read endpoints, for the own log and for every mirrored log.

``/tile/<L>/<N>[.p/<W>]`` and ``/tile/entries/<N>[.p/<W>]`` serve the own log;
``/mirror/<sha256(origin) hex>/tile/...`` and ``/mirror/<hash>/checkpoint`` serve a
mirror, so ordinary HTTP caches and existing tlog clients can read every log a node holds.

Invariants:
* A tile is served only when every hash (or entry) it holds is durable: the content at a
  path never changes, so full tiles are ``immutable`` for a year; partial tiles get a
  short max-age (clients should move on to the wider tile as the log grows).
* Paths are parsed strictly by :func:`ledger.tiles.parse_tile_path`; anything else is 400.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ledger.errors import NotFoundError, TooLargeError
from ledger.reader import LogReader
from ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    BundleId,
    TileId,
    encode_bundle,
    encode_tile,
    parse_tile_path,
)
from node.routes._common import origin_hash
from node.routes.log import NOTE_TYPE
from node.state import RUNTIME, served_checkpoint

routes = web.RouteTableDef()

IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=5"
TILE_TYPE = "application/octet-stream"


def _tile_bytes(reader: LogReader, tile: TileId | BundleId, size: int) -> bytes:
    if isinstance(tile, BundleId):
        if tile.start + tile.width > size:
            raise NotFoundError(f"{tile.path()} is beyond the log (size {size})", current_size=size)
        raws = [raw for _, raw in reader.store.entries(tile.start, tile.start + tile.width)]
        try:
            return encode_bundle(raws)
        except TooLargeError as e:
            raise NotFoundError(
                f"{tile.path()} cannot be served: an entry is over the 65535 bytes a bundle holds",
                hint="read the entries with GET /v1/entries",
            ) from e
    if (tile.index * TILE_WIDTH + tile.width) << (TILE_HEIGHT * tile.level) > size:
        raise NotFoundError(f"{tile.path()} is beyond the log (size {size})", current_size=size)
    return encode_tile(reader.store.hashes(tile.coords()))


async def _serve(reader: LogReader, path: str) -> web.Response:
    tile = parse_tile_path(path)
    data = await asyncio.to_thread(_tile_bytes, reader, tile, reader.size)
    partial = tile.width < TILE_WIDTH
    return web.Response(
        body=data,
        headers={"Content-Type": TILE_TYPE, "Cache-Control": PARTIAL if partial else IMMUTABLE},
    )


def _mirror(request: web.Request) -> LogReader:
    want = request.match_info["log"]
    holdings = request.app[RUNTIME].open_holdings()
    for reader in holdings.logs():
        if origin_hash(reader.origin) == want:
            return reader
    raise NotFoundError(f"this node holds no log whose origin hashes to {want[:64]!r}")


@routes.get("/tile/{path:.+}")
async def get_tile(request: web.Request) -> web.Response:
    """A hash tile or entry bundle of the own log."""
    return await _serve(request.app[RUNTIME].own_log(), "tile/" + request.match_info["path"])


@routes.get("/mirror/{log}/tile/{path:.+}")
async def get_mirror_tile(request: web.Request) -> web.Response:
    """A hash tile or entry bundle of a log this node holds (by hex SHA-256 of its origin)."""
    return await _serve(_mirror(request), "tile/" + request.match_info["path"])


@routes.get("/mirror/{log}/checkpoint")
async def get_mirror_checkpoint(request: web.Request) -> web.Response:
    """The latest checkpoint this node holds for a log (the own log's is the served one)."""
    reader = _mirror(request)
    if reader is request.app[RUNTIME].own_log():
        note = served_checkpoint(request.app)
    else:
        latest = await asyncio.to_thread(reader.store.latest_checkpoint)
        if latest is None:
            raise NotFoundError(f"no checkpoint of {reader.origin} is held yet")
        note = latest[1]
    return web.Response(body=note.encode(), headers={"Content-Type": NOTE_TYPE, "Cache-Control": "no-cache"})


__all__ = ["IMMUTABLE", "PARTIAL", "routes"]
