"""Queries over every log held: artefacts, trust explain / impact, equivocations."""

from __future__ import annotations

import json

from ledger.keys import SoftwareSigner
from tests.node.conftest import Client, attestation, root_envelope

JSON = {"Content-Type": "application/json"}


def policy_for(root: SoftwareSigner, org: str = "acme") -> str:
    return f"""
[[anchor]]
org = "{org}"
root = "{root.key_id}"
purposes = ["release"]
[trust]
max_transitive_hops = 0
require_hsm_root = false
"""


async def seed(client: Client) -> tuple[SoftwareSigner, str]:
    signer, root = root_envelope()
    assert (await client.post("/v1/entries", data=root.to_json(), headers=JSON)).status == 201
    digest, att = attestation(signer, "acme-tool@1.0", b"the release")
    assert (await client.post("/v1/entries", data=att.to_json(), headers=JSON)).status == 201
    return signer, digest


async def test_artefact_lookup(client: Client) -> None:
    signer, digest = await seed(client)
    for spelling in (digest, "sha256:" + digest, digest.upper()):
        r = await client.get(f"/v1/artefacts/{spelling}")
        assert r.status == 200
        body = await r.json()
        assert body["sha256"] == digest and body["truncated"] is False
        [hit] = body["attestations"]
        assert hit["origin"] == "test.turtles.local/log" and hit["index"] == 1
        assert hit["signers"] == [signer.key_id]
        assert hit["record"]["subjects"] == [{"name": "acme-tool@1.0", "sha256": digest}]
    empty = await (await client.get("/v1/artefacts/" + "0" * 64)).json()
    assert empty["attestations"] == []
    for bad in ("xyz", "0" * 63, "sha512:" + "0" * 64):
        r = await client.get(f"/v1/artefacts/{bad}")
        assert r.status == 400


async def test_explain_trusted_and_untrusted(client: Client) -> None:
    signer, digest = await seed(client)
    question = {"subject": "sha256:" + digest, "purpose": "release", "policy": policy_for(signer)}
    r = await client.post("/v1/trust/explain", data=json.dumps(question), headers=JSON)
    assert r.status == 200, await r.text()
    answer = await r.json()
    assert answer["trusted"] is True and answer["trust"] == "delegated"
    assert answer["paths"]
    other = SoftwareSigner.generate()
    question["policy"] = policy_for(other)
    answer = await (await client.post("/v1/trust/explain", data=json.dumps(question), headers=JSON)).json()
    assert answer["trusted"] is False
    at = {**question, "at": "2020-01-01T00:00:00Z", "policy": policy_for(signer)}
    answer = await (await client.post("/v1/trust/explain", data=json.dumps(at), headers=JSON)).json()
    assert answer["trusted"] is False  # before the records were logged


async def test_explain_refusals(client: Client) -> None:
    signer, digest = await seed(client)
    good = {"subject": "sha256:" + digest, "purpose": "release", "policy": policy_for(signer)}
    cases = [
        {**good, "purpose": "fun"},
        {**good, "policy": "not toml ["},
        {**good, "policy": "[trust]\nmax_transitive_hops = 0\n"},
        {**good, "policy": "/etc/passwd"},
        {**good, "at": "yesterday"},
        {**good, "at": True},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "subject"},
        {**good, "subject": 5},
    ]
    for doc in cases:
        r = await client.post("/v1/trust/explain", data=json.dumps(doc), headers=JSON)
        assert r.status == 400, doc
        assert "error" in await r.json()
    r = await client.post("/v1/trust/explain", data=json.dumps(good), headers={"Content-Type": "text/plain"})
    assert r.status == 415
    r = await client.get("/v1/trust/explain")
    assert r.status == 405


async def test_impact(client: Client) -> None:
    signer, digest = await seed(client)
    r = await client.get("/v1/trust/impact", params={"key": signer.key_id})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["key"] == signer.key_id
    assert any(i["subject"] == "sha256:" + digest for i in body["items"])
    for params in ({}, {"key": "nope"}, {"key": signer.key_id, "at": "soon"}, {"key": signer.key_id, "purpose": "x"}):
        assert (await client.get("/v1/trust/impact", params=params)).status == 400, params


async def test_equivocations_empty(client: Client) -> None:
    r = await client.get("/v1/equivocations")
    assert r.status == 200 and await r.json() == []
