"""Operations endpoints: ``/healthz``, ``/metrics`` (Prometheus text), ``/openapi.json``.

``/healthz`` is 200 only when the own log is open and its store answers a read of the
durable head; otherwise 503 with the reason, so a supervisor can restart or alert.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ledger.errors import TurtlesError
from node.openapi import openapi_document
from node.state import METRICS, OPENAPI_PATHS, RUNTIME

routes = web.RouteTableDef()


@routes.get("/healthz")
async def get_healthz(request: web.Request) -> web.Response:
    """200 ``{"status": "ok", ...}`` when the log is open and the store healthy; 503 otherwise."""
    runtime = request.app[RUNTIME]
    try:
        log = runtime.own_log()
        head = await asyncio.to_thread(log.store.head)
    except TurtlesError as e:
        return web.json_response({"status": "unavailable", "error": e.code, "message": e.message}, status=503)
    except Exception as e:  # a closed or broken store raises plyvel's own errors
        return web.json_response({"status": "unavailable", "error": "store", "message": str(e)[:200]}, status=503)
    return web.json_response({
        "status": "ok", "origin": log.origin, "size": head.size,
        "mirrors": len(runtime.open_holdings().mirrors),
    })


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    """Every metric in the Prometheus text exposition format."""
    body = request.app[METRICS].render()
    return web.Response(body=body.encode(), headers={"Content-Type": request.app[METRICS].CONTENT_TYPE})


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return web.json_response(openapi_document(request.app[OPENAPI_PATHS]))


__all__ = ["routes"]
