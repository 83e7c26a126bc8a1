"""Provenance reads: offline bundles and lineage DAGs of artefacts.

* ``GET /v1/bundle/{sha256}`` -- the bundle (:mod:`ledger.bundle`) of an artefact, as the
  exact canonical file ``turtles verify --bundle`` reads. ``turtles verify --node`` fetches
  it and verifies it locally like any offline bundle, so the node is never trusted for a
  verdict: it only supplies evidence.
* ``GET /v1/trace/{sha256}`` -- the lineage (:func:`ledger.lineage.trace`) judged
  structurally (every root an anchor); ``POST /v1/trace/{sha256}`` with
  ``{"policy": "<toml>", "at"?, "max_depth"?}`` judges it under the caller's policy.

Invariants: handlers only parse the question, run the pure ledger code in a thread and
serve the result object's canonical form; a policy arrives as TOML text, never as a path.
The own log's note in a bundle is the one ``GET /checkpoint`` serves (with the
cosignatures the witness code collected); cosignatures by keys not listed under
:data:`KNOWN_WITNESSES` are left out so that every line of a bundle can be verified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ledger.bundle import build_bundle
from ledger.errors import InputError
from ledger.holdings import Holdings
from ledger.lineage import DEFAULT_MAX_DEPTH, trace
from ledger.trust.policy import Policy, parse_policy
from node.limits import read_body
from node.routes._common import (
    JSON_TYPES,
    UnsupportedMediaError,
    media_type,
    parse_json,
    parse_sha256,
    query_uint,
)
from node.routes.query import parse_time
from node.state import RUNTIME, served_checkpoint
from node.witness import WITNESS

routes = web.RouteTableDef()

BUNDLE_CONTENT_TYPE = "application/vnd.turtles.bundle+json"
MAX_TRACE_BODY = 1 << 20
MAX_TRACE_DEPTH = 256
KNOWN_WITNESSES = web.AppKey("turtles.provenance.witnesses", tuple)
"""Cosigner vkeys (tlog-cosignature/v1) whose cosignatures a bundle may carry (default: none)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@routes.get("/v1/bundle/{sha256}")
async def get_bundle(request: web.Request) -> web.Response:
    """The offline verification bundle of an artefact (404 when no log held attests it)."""
    digest = parse_sha256(request.match_info["sha256"])
    holdings = request.app[RUNTIME].open_holdings()
    notes = {}
    if holdings.own is not None:
        notes[holdings.own.origin] = served_checkpoint(request.app)
    known = {str(v) for v in request.app.get(KNOWN_WITNESSES, ())}
    witness = request.app.get(WITNESS)
    if witness is not None:
        # This node witnessed the logs it mirrors: bundle its cosigned notes, so a verifier
        # that trusts this node's log can trust those logs too (basis "witnessed").
        notes.update(_cosigned_mirror_notes(holdings, witness.witnessed_notes()))
        known |= {v.vkey for v in witness.cosigners.values()}
    witnesses = tuple(sorted(known))
    bundle = await asyncio.to_thread(holdings.read, build_bundle, holdings, digest, notes=notes, witnesses=witnesses)
    return web.Response(body=bundle.to_bytes(), content_type=BUNDLE_CONTENT_TYPE)


def _cosigned_mirror_notes(holdings: Holdings, cosigned: Mapping[str, str]) -> dict[str, str]:
    """Cosigned notes of mirrors, where they cover exactly what the mirror serves."""
    out = {}
    for origin, mirror in holdings.mirrors.items():
        note = cosigned.get(origin)
        if note is not None and note.split("\n\n", 1)[0] == (mirror.checkpoint() or "").split("\n\n", 1)[0]:
            out[origin] = note
    return out


@routes.get("/v1/trace/{sha256}")
async def get_trace(request: web.Request) -> web.Response:
    """The lineage of an artefact, judged structurally (``?max_depth=``, ``?at=``)."""
    digest = parse_sha256(request.match_info["sha256"])
    depth = _depth(query_uint(request, "max_depth", DEFAULT_MAX_DEPTH))
    at = parse_time("at", request.query["at"]) if "at" in request.query else _now_ms()
    return await _trace(request, digest, None, at, depth)


@routes.post("/v1/trace/{sha256}")
async def post_trace(request: web.Request) -> web.Response:
    """The lineage of an artefact under the caller's policy.

    Body: ``{"policy": "<toml>", "at"?: T, "max_depth"?: N}``.
    """
    digest = parse_sha256(request.match_info["sha256"])
    if media_type(request) not in JSON_TYPES:
        raise UnsupportedMediaError("send the question as application/json")
    doc = parse_json(await read_body(request, MAX_TRACE_BODY))
    if not isinstance(doc, dict):
        raise InputError("body: want a JSON object with policy")
    extra = set(doc) - {"policy", "at", "max_depth"}
    if extra:
        raise InputError(f"body: unknown field(s) {', '.join(sorted(extra))}", field=sorted(extra)[0])
    if not isinstance(doc.get("policy"), str):
        raise InputError("policy: want the policy file's TOML text", field="policy")
    depth = doc.get("max_depth", DEFAULT_MAX_DEPTH)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise InputError("max_depth: want a non-negative integer", field="max_depth")
    at = parse_time("at", doc["at"]) if "at" in doc else _now_ms()
    return await _trace(request, digest, parse_policy(doc["policy"]), at, _depth(depth))


def _depth(depth: int) -> int:
    if depth > MAX_TRACE_DEPTH:
        raise InputError(f"max_depth: at most {MAX_TRACE_DEPTH}", field="max_depth")
    return depth


async def _trace(request: web.Request, digest: str, policy: Policy | None, at: int, depth: int) -> web.Response:
    holdings = request.app[RUNTIME].open_holdings()
    lineage = await asyncio.to_thread(holdings.read, trace, holdings.graph, digest, policy=policy, at=at, max_depth=depth)
    body: dict[str, Any] = lineage.to_dict()
    return web.json_response(body)


def _error_responses(*codes: int) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {str(c): {"description": f"Error {c}", "content": {"application/json": {"schema": schema}}} for c in codes}


_SHA256_PARAM = {
    "name": "sha256", "in": "path", "required": True, "description": "Artefact digest (64 hex digits)",
    "schema": {"type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$"},
}
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/bundle/{sha256}": {"get": {
        "operationId": "getBundle", "summary": "Offline verification bundle of an artefact (docs/bundles.md)",
        "parameters": [_SHA256_PARAM],
        "responses": {
            "200": {"description": "The canonical bundle file",
                    "content": {BUNDLE_CONTENT_TYPE: {"schema": {"type": "object"}}}},
            **_error_responses(400, 404, 413, 429, 503),
        },
    }},
    "/v1/trace/{sha256}": {
        "get": {
            "operationId": "getTrace", "summary": "Lineage DAG of an artefact, judged structurally",
            "parameters": [
                _SHA256_PARAM,
                {"name": "max_depth", "in": "query", "required": False, "description": "Levels of materials",
                 "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TRACE_DEPTH}},
                {"name": "at", "in": "query", "required": False, "description": "Unix ms or RFC 3339",
                 "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "Lineage", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **_error_responses(400, 429, 503)},
        },
        "post": {
            "operationId": "postTrace", "summary": "Lineage DAG of an artefact under the caller's policy",
            "parameters": [_SHA256_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["policy"], "additionalProperties": False,
                "properties": {"policy": {"type": "string"}, "at": {"type": ["integer", "string"]},
                               "max_depth": {"type": "integer", "minimum": 0, "maximum": MAX_TRACE_DEPTH}},
            }}}},
            "responses": {"200": {"description": "Lineage", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **_error_responses(400, 413, 415, 429, 503)},
        },
    },
}
"""OpenAPI path items of these routes (pass as ``create_app(extra_openapi_paths=...)``)."""


__all__ = ["BUNDLE_CONTENT_TYPE", "KNOWN_WITNESSES", "OPENAPI_PATHS", "routes"]
