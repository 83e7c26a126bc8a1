"""The OpenAPI document matches the app (both directions), and a bounded schemathesis run
against a live node finds no 5xx."""

from __future__ import annotations

import time
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from node.app import create_app
from node.openapi import openapi_document
from tests.node.conftest import Client, LiveNode, attestation, make_config, root_envelope

METHODS = {"get", "post", "put", "delete", "patch"}


@schemathesis.serializer("application/msgpack")
def _msgpack(ctx: Any, value: Any) -> bytes:
    """Generated msgpack bodies are binary strings already."""
    return value if isinstance(value, bytes) else str(value).encode()


def served_operations(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def test_every_route_is_documented_and_vice_versa(tmp_path: Any) -> None:
    app = create_app(make_config(tmp_path))
    assert served_operations(app) == documented_operations(openapi_document())


async def test_served_document_is_openapi_31(client: Client) -> None:
    r = await client.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"] == "3.1.0" and doc == openapi_document()
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m in METHODS]
    assert len(ids) == len(set(ids))
    for item in doc["paths"].values():
        for op in item.values():
            assert op.get("summary") and op.get("responses")


def test_extra_routes_are_documented_through_the_hook(tmp_path: Any) -> None:
    from aiohttp import web

    extra = web.RouteTableDef()

    @extra.post("/add-checkpoint")
    async def add(request: web.Request) -> web.Response:
        return web.Response()

    doc_paths = {"/add-checkpoint": {"post": {"operationId": "addCheckpoint", "summary": "x", "responses": {}}}}
    app = create_app(make_config(tmp_path), extra_routes=[extra], extra_openapi_paths=doc_paths)
    assert served_operations(app) == documented_operations(openapi_document(doc_paths))


def test_schemathesis_finds_no_server_errors(live_node: LiveNode) -> None:
    """Bounded: 25 valid and 25 invalid examples per operation (50 in all), under a minute."""
    signer, root = root_envelope()
    from node.client import NodeClient

    client = NodeClient(live_node.url)
    client.submit(root)
    client.submit_batch([attestation(signer, f"p{i}", bytes([i]))[1] for i in range(20)])
    schema = schemathesis.openapi.from_dict(openapi_document())
    started = time.monotonic()
    failures: list[str] = []
    session = requests.Session()
    operations = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == len(documented_operations(openapi_document()))
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=live_node.url, session=session, timeout=30)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:200]}")

            try:
                run()
            except Unsatisfiable:
                # An operation without inputs has no invalid request to generate.
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures[:20])
    assert elapsed < 60, f"schemathesis run took {elapsed:.0f} s"
