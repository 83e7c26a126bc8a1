"""Read endpoints of one log: checkpoint, log info, entries, inclusion and consistency proofs.

Every read except ``/checkpoint`` takes ``?origin=`` to address a mirrored log.

Invariants (RELIABILITY L2): a proof is served only for ``index < size <= current size``
or ``from <= to <= current size``; anything else is a 4xx naming the bad parameter, and
a size beyond the log is answered 400 with the current size (``"size"``), never a proof.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ledger.errors import InputError, NotFoundError
from ledger.reader import LogReader
from node.render import entry_view
from node.routes._common import log_vkey, parse_uint, query_uint, reader_for
from node.state import served_checkpoint

routes = web.RouteTableDef()

NOTE_TYPE = "text/plain; charset=utf-8"
MAX_PAGE = 1000
MAX_PAGE_BYTES = 8 << 20


@routes.get("/checkpoint")
async def get_checkpoint(request: web.Request) -> web.Response:
    """The own log's latest checkpoint as a C2SP signed note, with collected cosignatures."""
    note = served_checkpoint(request.app)
    return web.Response(
        body=note.encode(), headers={"Content-Type": NOTE_TYPE, "Cache-Control": "no-cache"}
    )


@routes.get("/v1/log")
async def get_log(request: web.Request) -> web.Response:
    """``{"origin", "vkey", "size", "root"}`` of the addressed log."""
    reader = reader_for(request)
    head = reader.head
    return web.json_response(
        {"origin": reader.origin, "vkey": log_vkey(reader), "size": head.size, "root": head.root.hex()}
    )


def _entry_json(reader: LogReader, index: int) -> dict[str, object]:
    entry = reader.entry(index)
    signers = next((s for seq, s in reader.store.by_record_id(entry.record_id) if seq == index), [])
    return entry_view(entry, origin=reader.origin, signers=signers)


@routes.get("/v1/entries/{index}")
async def get_entry(request: web.Request) -> web.Response:
    """One entry: exact leaf bytes (base64), leaf hash, time, decoded record, signers."""
    index = parse_uint("index", request.match_info["index"])
    reader = reader_for(request)
    if index >= reader.size:
        raise NotFoundError(
            f"log {reader.origin} has no entry {index} (size {reader.size})", current_size=reader.size
        )
    return web.json_response(await asyncio.to_thread(_entry_json, reader, index))


def _page(reader: LogReader, start: int, limit: int) -> dict[str, object]:
    size = reader.size
    entries: list[dict[str, object]] = []
    total = 0
    for entry in reader.entries(start, min(size, start + limit)):
        signers = next((s for seq, s in reader.store.by_record_id(entry.record_id) if seq == entry.seq), [])
        entries.append(entry_view(entry, origin=reader.origin, signers=signers))
        total += len(entry.raw)
        if total >= MAX_PAGE_BYTES:
            break
    stop = start + len(entries)
    return {
        "origin": reader.origin,
        "start": start,
        "size": size,
        "entries": entries,
        "next": stop if stop < size else None,
    }


@routes.get("/v1/entries")
async def get_entries(request: web.Request) -> web.Response:
    """A page of entries from ``start`` (at most ``limit`` <= 1000, and at most 8 MiB)."""
    start = query_uint(request, "start", 0)
    limit = min(query_uint(request, "limit", 100), MAX_PAGE)
    if limit == 0:
        raise InputError("limit must be at least 1", field="limit")
    reader = reader_for(request)
    if start > reader.size:
        raise InputError(
            f"start {start} is beyond the log (size {reader.size})", field="start", current_size=reader.size
        )
    return web.json_response(await asyncio.to_thread(_page, reader, start, limit))


def _check_size(reader: LogReader, size: int, name: str) -> None:
    if size > reader.size:
        raise InputError(
            f"{name} {size} is beyond the log (current size {reader.size}); no proof",
            field=name, current_size=reader.size,
        )


def _stored_checkpoint(reader: LogReader, size: int) -> str | None:
    return reader.store.checkpoint(size)


@routes.get("/v1/proofs/inclusion")
async def get_inclusion(request: web.Request) -> web.Response:
    """Proof that entry ``index`` is in the tree of ``size`` (default: current size)."""
    index = query_uint(request, "index")
    reader = reader_for(request)
    size = query_uint(request, "size", reader.size)
    _check_size(reader, size, "size")
    if index >= size:
        raise InputError(f"index {index} is not below size {size}", field="index", current_size=reader.size)

    def prove() -> dict[str, object]:
        proof = reader.inclusion_proof(index, size)
        return {
            "index": index,
            "size": size,
            "leaf_hash": reader.entry(index).leaf_hash.hex(),
            "proof": [h.hex() for h in proof],
            "root": reader.root_at(size).hex(),
            "checkpoint": _stored_checkpoint(reader, size),
        }

    return web.json_response(await asyncio.to_thread(prove))


@routes.get("/v1/proofs/consistency")
async def get_consistency(request: web.Request) -> web.Response:
    """Proof that the tree of ``from`` is a prefix of the tree of ``to`` (default: current size)."""
    first = query_uint(request, "from")
    reader = reader_for(request)
    second = query_uint(request, "to", reader.size)
    _check_size(reader, second, "to")
    if first > second:
        raise InputError(f"from {first} is larger than to {second}", field="from", current_size=reader.size)

    def prove() -> dict[str, object]:
        proof = reader.consistency_proof(first, second)
        return {
            "from": first,
            "to": second,
            "proof": [h.hex() for h in proof],
            "root": reader.root_at(second).hex(),
            "checkpoint": _stored_checkpoint(reader, second),
        }

    return web.json_response(await asyncio.to_thread(prove))


__all__ = ["routes"]
