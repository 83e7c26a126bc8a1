"""The node's middlewares: metrics, the one place errors become HTTP, rate limit, timeout.

Order (outermost first): :func:`metrics_middleware` sees the final status of every
request; :func:`error_middleware` turns every exception into a JSON body; then the rate
limit and the per-request timeout run around the handler.

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
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ledger.errors import TurtlesError
from node.state import CONFIG, LIMITER, METRICS

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
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every exception to a JSON reply: the one place errors become HTTP."""
    try:
        return await handler(request)
    except TurtlesError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _http_error(e)
    except TimeoutError:
        timeout = request.app[CONFIG].limits.request_timeout_s
        return web.json_response(
            {"error": "timeout", "message": f"the request took longer than {timeout:g} s"},
            status=503, headers={"Retry-After": "1"},
        )
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal", "message": "internal error; the node logged it"}, status=500
        )


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One token per request from the client's address (health and metrics exempt)."""
    if request.path not in _UNLIMITED:
        request.app[LIMITER].check(request.remote or "unknown")
    return await handler(request)


@web.middleware
async def timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound each request (body reading included) by ``limits.request_timeout_s``."""
    async with asyncio.timeout(request.app[CONFIG].limits.request_timeout_s):
        return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests and observe latency per route template, method and status."""
    registry = request.app[METRICS]
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        registry.counter(
            "turtles_http_requests_total", "HTTP requests answered", ("route", "method", "status")
        ).inc(route=route, method=request.method, status=str(status))
        registry.histogram(
            "turtles_http_request_seconds", "HTTP request latency", ("route", "method")
        ).observe(time.perf_counter() - start, route=route, method=request.method)


MIDDLEWARES = (metrics_middleware, error_middleware, rate_limit_middleware, timeout_middleware)

__all__ = [
    "MIDDLEWARES",
    "error_body",
    "error_middleware",
    "error_response",
    "metrics_middleware",
    "rate_limit_middleware",
    "timeout_middleware",
]
