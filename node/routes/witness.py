"""Witness endpoints: C2SP tlog-witness ``POST /add-checkpoint`` and the monitoring view.

``POST /add-checkpoint`` answers exactly as C2SP tlog-witness says: 200 with the
cosignature line(s) (``text/plain``), 404 unknown origin, 403 no valid signature by the
log's key, 400 malformed or old size above the new size, 409 with ``text/x.tlog.size``
(the cosigned size and a newline) when the old size is not the stored one, 409 (JSON) on
an equivocation, 422 when the proof does not verify, 413 for bodies over
:data:`~ledger.witness.MAX_BODY_BYTES` (refused before they are read).

``GET /v1/witness/checkpoints`` serves the latest checkpoint this node cosigned for each
log it witnesses, so peers can compare views (split-view gossip).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ledger.errors import UnavailableError
from ledger.witness import MAX_BODY_BYTES, SIZE_CONTENT_TYPE, AddCheckpoint, SizeConflictError
from node.limits import read_body
from node.witness import WITNESS, NodeWitness

witness_routes = web.RouteTableDef()
MAX_GOSSIP_BYTES = 4 << 20


def _witness(request: web.Request) -> NodeWitness:
    witness = request.app.get(WITNESS)
    if witness is None:
        raise UnavailableError("the witness is not running (starting, stopping or not installed)", retry_after=1)
    return witness


@witness_routes.post("/add-checkpoint")
async def post_add_checkpoint(request: web.Request) -> web.Response:
    """Cosign a peer log's checkpoint if it is consistent with the one cosigned before."""
    witness = _witness(request)
    add = AddCheckpoint.parse(await read_body(request, MAX_BODY_BYTES))
    try:
        body = await asyncio.to_thread(witness.add_checkpoint, add, source=request.remote)
    except SizeConflictError as e:
        return web.Response(status=409, text=f"{e.current_size}\n", content_type=SIZE_CONTENT_TYPE)
    return web.Response(text=body, content_type="text/plain")


@witness_routes.get("/v1/witness/checkpoints")
async def get_witnessed(request: web.Request) -> web.Response:
    """``{"name", "vkey", "checkpoints": {origin: note}}``: the latest note cosigned per log."""
    witness = _witness(request)
    notes = await asyncio.to_thread(witness.cosigned_notes)
    return web.json_response({"name": witness.name, "vkey": witness.core.vkey, "checkpoints": notes})


OPENAPI_PATHS = {
    "/add-checkpoint": {"post": {
        "summary": "C2SP tlog-witness add-checkpoint: cosign a peer log's checkpoint",
        "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
        "responses": {
            "200": {"description": "cosignature lines", "content": {"text/plain": {}}},
            "400": {"description": "malformed request, or old size above the checkpoint size"},
            "403": {"description": "no valid signature by the log's key"},
            "404": {"description": "unknown log origin"},
            "409": {"description": "old size is not the cosigned size (text/x.tlog.size), or equivocation"},
            "413": {"description": "body too large"},
            "422": {"description": "consistency proof does not verify"},
        },
    }},
    "/v1/witness/checkpoints": {"get": {
        "summary": "Latest checkpoint cosigned for each witnessed log (split-view gossip)",
        "responses": {"200": {"description": "name, vkey and a map origin -> signed note"}},
    }},
}

__all__ = ["MAX_GOSSIP_BYTES", "OPENAPI_PATHS", "witness_routes"]
