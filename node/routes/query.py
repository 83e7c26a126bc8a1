"""Queries over every log the node holds: artefacts, trust explanations, impact, equivocations.

Invariants:
* Trust answers come from :mod:`ledger.trust` over the node's global graph; this module
  only parses the question and renders the answer object (``to_dict``).
* A consumer policy arrives as TOML text in the body and is parsed with
  :func:`ledger.trust.policy.parse_policy`: never read as a path on the node's disk.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from ledger.errors import InputError
from ledger.keys import KeyId, parse_key_id
from ledger.reader import LogReader
from ledger.records import PURPOSES
from ledger.trust import explain, impact, parse_policy
from node.limits import read_body
from node.render import record_view
from node.routes._common import (
    JSON_TYPES,
    UnsupportedMediaError,
    media_type,
    parse_json,
    parse_sha256,
)
from node.state import EQUIVOCATIONS, RUNTIME

routes = web.RouteTableDef()

MAX_ARTEFACT_HITS = 1000
MAX_QUERY_BODY = 1 << 20


def parse_time(name: str, value: Any) -> int:
    """A time given as Unix milliseconds (integer) or RFC 3339 text, in Unix ms."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**63:
            raise InputError(f"{name} is out of range", field=name)
        return value
    if isinstance(value, str):
        if value.isdigit() and len(value) < 19:
            return int(value)
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise InputError(f"{name}: not an RFC 3339 time: {value[:60]!r}", field=name) from e
        if dt.tzinfo is None:
            raise InputError(f"{name}: time {value[:60]!r} has no time zone", field=name)
        return int(dt.timestamp() * 1000)
    raise InputError(f"{name}: want Unix milliseconds or an RFC 3339 time", field=name)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _artefact_hits(readers: list[LogReader], digest: str) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []
    for reader in readers:
        for index in reader.by_artefact(digest):
            if index >= reader.size or len(hits) >= MAX_ARTEFACT_HITS:
                continue
            rec = next(reader.logged_records(index, index + 1))
            hits.append({
                "origin": rec.origin, "index": rec.index, "ts": rec.ts,
                "leaf_hash": rec.leaf_hash.hex(), "signers": list(rec.signers),
                "record": record_view(rec.record),
            })
    return hits


@routes.get("/v1/artefacts/{sha256}")
async def get_artefact(request: web.Request) -> web.Response:
    """Attestations naming the artefact, in every log held, with origin and index."""
    digest = parse_sha256(request.match_info["sha256"])
    readers = list(request.app[RUNTIME].open_holdings().logs())
    hits = await asyncio.to_thread(_artefact_hits, readers, digest)
    return web.json_response({
        "sha256": digest, "attestations": hits, "truncated": len(hits) >= MAX_ARTEFACT_HITS,
    })


@routes.post("/v1/trust/explain")
async def post_explain(request: web.Request) -> web.Response:
    """Explain whether a subject is trusted for a purpose under a policy (TOML in the body).

    Body: ``{"subject": KEYID|ORG|sha256:HEX, "purpose": P, "policy": "<toml>", "at"?: T}``.
    """
    if media_type(request) not in JSON_TYPES:
        raise UnsupportedMediaError("send the question as application/json")
    doc = parse_json(await read_body(request, MAX_QUERY_BODY))
    if not isinstance(doc, dict):
        raise InputError("body: want a JSON object with subject, purpose, policy")
    extra = set(doc) - {"subject", "purpose", "policy", "at"}
    if extra:
        raise InputError(f"body: unknown field(s) {', '.join(sorted(extra))}", field=sorted(extra)[0])
    subject, purpose, policy_text = doc.get("subject"), doc.get("purpose"), doc.get("policy")
    if not isinstance(subject, str) or not subject or len(subject) > 256:
        raise InputError("subject: want a key id, an org name or sha256:HEX", field="subject")
    if purpose not in PURPOSES:
        raise InputError(f"purpose: want one of {', '.join(PURPOSES)}", field="purpose")
    if not isinstance(policy_text, str):
        raise InputError("policy: want the policy file's TOML text", field="policy")
    at = parse_time("at", doc["at"]) if "at" in doc else _now_ms()
    policy = parse_policy(policy_text)
    holdings = request.app[RUNTIME].open_holdings()
    answer = await asyncio.to_thread(
        holdings.read, explain, holdings.graph, subject, purpose=str(purpose), at=at, policy=policy
    )
    return web.json_response(answer.to_dict())


@routes.get("/v1/trust/impact")
async def get_impact(request: web.Request) -> web.Response:
    """What would lose trust if ``key`` were revoked (``since``, ``at``, ``purpose`` optional)."""
    text = request.query.get("key")
    if text is None:
        raise InputError("query parameter key is required", field="key")
    key: KeyId = parse_key_id(text)
    at = parse_time("at", request.query["at"]) if "at" in request.query else _now_ms()
    since = parse_time("since", request.query["since"]) if "since" in request.query else None
    purpose = request.query.get("purpose")
    if purpose is not None and purpose not in PURPOSES:
        raise InputError(f"purpose: want one of {', '.join(PURPOSES)}", field="purpose")
    holdings = request.app[RUNTIME].open_holdings()
    answer = await asyncio.to_thread(holdings.read, impact, holdings.graph, key, at=at, since=since, purpose=purpose)
    return web.json_response(answer.to_dict())


@routes.get("/v1/equivocations")
async def get_equivocations(request: web.Request) -> web.Response:
    """Evidence of equivocations (two signed checkpoints that cannot both be true), as a list."""
    return web.json_response(request.app[EQUIVOCATIONS].items())


__all__ = ["parse_time", "routes"]
