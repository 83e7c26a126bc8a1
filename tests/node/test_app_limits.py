"""Limits (RELIABILITY P1, P6): 413 before buffering, 429 rate limit, 503 queue full,
request timeouts, the catch-all 500, graceful shutdown, health and metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from node.app import create_app
from node.state import EQUIVOCATIONS, METRICS, RUNTIME, set_served_checkpoint
from tests.node.conftest import Client, attestation, make_config, root_envelope

JSON = {"Content-Type": "application/json"}


async def raw_exchange(client: Client, request: bytes, *, then_wait: float = 5.0) -> bytes:
    """Send raw bytes to the test server and read what comes back (headers at least)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), then_wait)
        return data
    finally:
        writer.close()


async def test_oversized_body_refused_from_content_length_before_reading(client: Client) -> None:
    # Declares 100 MiB but sends nothing: the answer must come without waiting for the body.
    head = (
        b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    reply = await raw_exchange(client, head)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
    assert b'"too_large"' in reply


async def test_oversized_chunked_body_refused(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, max_body_bytes=1000)))

    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 100

    r = await client.post("/v1/entries", data=chunks(), headers=JSON)
    assert r.status == 413
    assert (await r.json())["error"] == "too_large"
    r = await client.post("/v1/entries", data=b"{" + b" " * 2000 + b"}", headers=JSON)
    assert r.status == 413
    _, root = root_envelope()
    assert len(root.to_json()) < 1000
    r = await client.post("/v1/entries", data=root.to_json(), headers=JSON)
    assert r.status == 201


async def test_rate_limit_429_with_retry_after(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, rate_per_second=0.5, rate_burst=3)))
    statuses = [(await client.get("/v1/log")).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    r = await client.get("/v1/log")
    assert r.status == 429
    assert int(r.headers["Retry-After"]) >= 1
    body = await r.json()
    assert body["error"] == "rate_limited" and body["retry_after"] >= 1
    # Health and metrics stay reachable for supervisors and scrapers.
    assert (await client.get("/healthz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'status="429"' in metrics


async def test_queue_full_is_503_with_retry_after(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, max_queue=1)))
    signer, root = root_envelope()
    assert (await client.post("/v1/entries", data=root.to_json(), headers=JSON)).status == 201
    envs = [attestation(signer, f"p{i}", bytes([i]))[1] for i in range(12)]
    responses = await asyncio.gather(
        *(client.post("/v1/entries", data=e.to_json(), headers=JSON) for e in envs)
    )
    statuses = [r.status for r in responses]
    assert 201 in statuses and 503 in statuses, statuses
    assert set(statuses) <= {201, 503}
    for r in responses:
        if r.status == 503:
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["error"] == "overloaded"
    batch = json.dumps({"envelopes": [e.to_dict() for e in envs[:2]]})
    r = await client.post("/v1/entries:batch", data=batch, headers=JSON)
    assert r.status == 503 and "Retry-After" in r.headers
    # Refused submissions were not appended; accepted ones were, and a retry succeeds.
    size = (await (await client.get("/v1/log")).json())["size"]
    assert size == 1 + statuses.count(201)
    for e in envs:
        r = await client.post("/v1/entries", data=e.to_json(), headers=JSON)
        assert r.status in (201, 409)
    assert (await (await client.get("/v1/log")).json())["size"] == 13


async def test_slow_body_times_out(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, request_timeout_s=0.3)))
    head = (
        b"POST /v1/entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n{"
    )
    reply = await raw_exchange(client, head)
    assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
    assert b'"timeout"' in reply


async def test_unexpected_exception_is_a_json_500_and_the_node_keeps_serving(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    extra = web.RouteTableDef()

    @extra.get("/boom")
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    started: list[str] = []

    async def plugin(app: web.Application) -> Any:
        started.append("holdings open" if app[RUNTIME].holdings is not None else "no holdings")
        yield
        started.append("stopped")

    app = create_app(make_config(tmp_path), extra_routes=[extra], extra_cleanup_ctx=[plugin])
    client = await aiohttp_client(app)
    assert started == ["holdings open"]
    r = await client.get("/boom")
    assert r.status == 500
    body = await r.json()
    assert body["error"] == "internal" and "secret" not in json.dumps(body)
    assert (await client.get("/v1/log")).status == 200
    await client.close()
    assert started == ["holdings open", "stopped"]


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    r = await client.get("/nope")
    assert r.status == 404 and (await r.json())["error"] == "not_found"
    r = await client.delete("/v1/log")
    assert r.status == 405 and (await r.json())["error"] == "method_not_allowed"
    assert "GET" in r.headers["Allow"]


async def test_healthz(aiohttp_client: Any, tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    client = await aiohttp_client(app)
    r = await client.get("/healthz")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "ok" and body["size"] == 0
    # A node whose store is closed (here: by hand) reports 503, and so does every read.
    holdings = app[RUNTIME].holdings
    app[RUNTIME].holdings = None
    try:
        r = await client.get("/healthz")
        assert r.status == 503 and (await r.json())["status"] == "unavailable"
        r = await client.get("/v1/log")
        assert r.status == 503 and "Retry-After" in r.headers
    finally:
        app[RUNTIME].holdings = holdings


async def test_metrics_text_format(client: Client) -> None:
    _, root = root_envelope()
    await client.post("/v1/entries", data=root.to_json(), headers=JSON)
    await client.post("/v1/entries", data=root.to_json(), headers=JSON)
    text = await (await client.get("/metrics")).text()
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith("#") or " " in line
    assert 'turtles_log_size{origin="test.turtles.local/log",kind="own"} 1' in text
    assert 'turtles_appends_total{outcome="appended"} 1' in text
    assert 'turtles_appends_total{outcome="duplicate"} 1' in text
    assert 'turtles_http_requests_total{route="/v1/entries",method="POST",status="201"} 1' in text
    assert 'turtles_http_request_seconds_bucket{route="/v1/entries",method="POST",le="+Inf"} 2' in text
    assert "turtles_submissions_in_flight 0" in text
    assert "# TYPE turtles_replication_lag_entries gauge" in text
    assert "turtles_equivocations 0" in text


async def test_plugin_state_hooks(aiohttp_client: Any, tmp_path: Path) -> None:
    """The witness code's hooks: served checkpoint with cosignatures, equivocation evidence."""
    app = create_app(make_config(tmp_path))
    client = await aiohttp_client(app)
    note = await (await client.get("/checkpoint")).text()
    cosigned = note + "— witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
    set_served_checkpoint(app, cosigned)
    assert await (await client.get("/checkpoint")).text() == cosigned
    _, root = root_envelope()
    await client.post("/v1/entries", data=root.to_json(), headers=JSON)
    newer = await (await client.get("/checkpoint")).text()
    assert newer.split("\n")[1] == "1" and "witness.example" not in newer
    set_served_checkpoint(app, cosigned)  # an older note never replaces a newer one
    assert (await (await client.get("/checkpoint")).text()).split("\n")[1] == "1"
    app[EQUIVOCATIONS].add({"origin": "bad.example/log", "notes": ["a", "b"]})
    assert await (await client.get("/v1/equivocations")).json() == [
        {"origin": "bad.example/log", "notes": ["a", "b"]}
    ]
    assert "turtles_equivocations 1" in app[METRICS].render()
