"""The node's middleware: metrics, the one place errors become HTTP, rate limit, timeout.

One middleware does all four, in this order (outermost first): the metrics see the final
status of every request; every exception becomes a JSON body; then the rate limit and the
per-request timeout run around the handler. One layer instead of four saves three
coroutines per request; the metric series are looked up once per label set
(:class:`node.metrics.RequestMetrics`).

Invariants:
* Every error reply is JSON ``{"error": CODE, "message": TEXT[, "hint"]}`` plus named
  evidence fields (``size``, ``retry_after``, ``field``); 429/503 carry ``Retry-After``.
* A node never crashes on a request: an unexpected exception is logged with its
  traceback and answered 500 with a body that reveals nothing internal.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from aiohttp import web

from ledger.errors import TurtlesError
from node.state import CONFIG, LIMITER, REQUEST_METRICS

log = logging.getLogger("turtles.node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Evidence attributes that are safe and useful to show a client, and their JSON names.
_EVIDENCE = {"current_size": "size", "retry_after": "retry_after", "field": "field", "limit": "limit"}
_UNLIMITED = frozenset({"/healthz", "/metrics"})


def error_body(e: TurtlesError) -> dict[str, Any]:
    """The JSON body of the HTTP reply for ``e``."""
    body = e.to_dict()
    for attr, name in _EVIDENCE.items():
        value = e.evidence.get(attr)
        if isinstance(value, str | int) and not isinstance(value, bool):
            body[name] = value
    return body


def error_response(e: TurtlesError) -> web.Response:
    """``e`` as a JSON reply with its status (and Retry-After when it says when to retry)."""
    headers = {}
    retry = e.evidence.get("retry_after")
    if isinstance(retry, int | float) and not isinstance(retry, bool):
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    elif e.http_status in (429, 503):
        headers["Retry-After"] = "1"
    return web.json_response(error_body(e), status=e.http_status, headers=headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
        exc.status, exc.reason.lower().replace(" ", "_")
    )
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return web.json_response({"error": code, "message": message}, status=exc.status, headers=headers)


@web.middleware
async def node_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics, errors, rate limit and timeout in one layer (one coroutine per request).

    Outermost first, as separate layers would be: the metrics see the final status of
    every request; every exception becomes a JSON reply; one token per request from the
    client's address (health and metrics exempt); the handler, body reading included, is
    bounded by ``limits.request_timeout_s``.
    """
    app = request.app
    start = perf_counter()
    status = 500
    try:
        try:
            if request.path not in _UNLIMITED:
                app[LIMITER].check(request.remote or "unknown")
            async with asyncio.timeout(app[CONFIG].limits.request_timeout_s):
                response = await handler(request)
        except TurtlesError as e:
            response = error_response(e)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _http_error(e)
        except TimeoutError:
            timeout = app[CONFIG].limits.request_timeout_s
            response = web.json_response(
                {"error": "timeout", "message": f"the request took longer than {timeout:g} s"},
                status=503, headers={"Retry-After": "1"},
            )
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            response = web.json_response(
                {"error": "internal", "message": "internal error; the node logged it"}, status=500
            )
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        app[REQUEST_METRICS].record(route, request.method, status, perf_counter() - start)


MIDDLEWARES = (node_middleware,)

__all__ = [
    "MIDDLEWARES",
    "error_body",
    "error_response",
    "node_middleware",
]
