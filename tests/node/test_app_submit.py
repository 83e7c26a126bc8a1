"""POST /v1/entries and /v1/entries:batch: durability answers, duplicates (L4), refusals,
and concurrent appends with proof fetches cross-checked against a reference tree (L3)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

from ledger import merkle
from ledger.attestation import PAYLOAD_TYPE
from ledger.checkpoint import Checkpoint, open_note
from ledger.encoding import encode
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.keys import SoftwareSigner
from node.app import create_app
from node.client import check_appended
from node.config import NodeConfig
from node.state import RUNTIME
from tests.node.conftest import Client, attestation, make_config, root_envelope

JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}


async def post(client: Client, env: Envelope, *, msgpack_form: bool = False) -> tuple[int, dict[str, Any]]:
    if msgpack_form:
        r = await client.post("/v1/entries", data=env.to_msgpack(), headers=MSGPACK)
    else:
        r = await client.post("/v1/entries", data=env.to_json(), headers=JSON)
    return r.status, await r.json()


async def vkey(client: Client) -> str:
    return str((await (await client.get("/v1/log")).json())["vkey"])


async def test_submit_json_and_msgpack_answers_with_a_proof(client: Client) -> None:
    key = await vkey(client)
    signer, root = root_envelope()
    status, body = await post(client, root)
    assert status == 201
    assert set(body) == {"index", "leaf_hash", "checkpoint", "inclusion_proof", "size"}
    assert body["index"] == 0 and body["size"] == 1
    check_appended(body, vkey=key)
    _, att = attestation(signer, "pkg", b"one")
    status, body = await post(client, att, msgpack_form=True)
    assert status == 201 and body["index"] == 1
    check_appended(body, vkey=key)
    cp = Checkpoint.parse(open_note(body["checkpoint"], key))
    assert cp.size == body["size"] == 2
    entry = await (await client.get("/v1/entries/1")).json()
    assert entry["leaf_hash"] == body["leaf_hash"]
    assert Envelope.from_dict(entry["envelope"]) == att


async def test_duplicate_is_409_with_the_same_index(client: Client) -> None:
    signer, root = root_envelope()
    status, first = await post(client, root)
    assert status == 201
    _, att = attestation(signer, "pkg", b"x")
    await post(client, att)
    status, again = await post(client, root, msgpack_form=True)
    assert status == 409
    assert again["index"] == first["index"] and again["leaf_hash"] == first["leaf_hash"]
    assert set(again) == set(first)
    check_appended(again, vkey=await vkey(client))
    assert (await (await client.get("/v1/log")).json())["size"] == 2


async def test_concurrent_duplicates_get_one_index(client: Client) -> None:
    """RELIABILITY L4: many identical submissions at once are sequenced once."""
    signer, root = root_envelope()
    assert (await post(client, root))[0] == 201
    _, att = attestation(signer, "pkg", b"concurrent")
    results = await asyncio.gather(*(post(client, att) for _ in range(20)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [201] + [409] * 19
    assert {b["index"] for _, b in results} == {1}
    assert (await (await client.get("/v1/log")).json())["size"] == 2


async def test_duplicates_across_restarts(aiohttp_client: Any, config: NodeConfig) -> None:
    first = await aiohttp_client(create_app(config))
    signer, root = root_envelope()
    status, body = await post(first, root)
    assert status == 201
    await first.close()
    second = await aiohttp_client(create_app(config))
    status, again = await post(second, root)
    assert status == 409 and again["index"] == body["index"]
    _, att = attestation(signer, "pkg", b"after restart")
    assert (await post(second, att))[0] == 201


async def test_signature_refusals_are_403(client: Client) -> None:
    signer, root = root_envelope()
    stranger = SoftwareSigner.generate()
    _, att = attestation(stranger, "pkg", b"y")
    status, body = await post(client, att)
    assert status == 403 and body["error"] in ("bad_signature", "unknown_signer", "not_admitted")
    assert (await post(client, root))[0] == 201
    tampered = dataclasses.replace(att, signatures=(Signature(signer.key_id, bytes(64)),))
    status, body = await post(client, tampered)
    assert status == 403 and body["error"] == "bad_signature"
    # A root record signed by another key is not self-signed.
    other = root_envelope(signer=SoftwareSigner.generate())[1]
    forged = sign_envelope(other.payload_type, other.payload, [stranger])
    status, body = await post(client, forged)
    assert status == 403
    assert (await (await client.get("/v1/log")).json())["size"] == 1


async def test_malformed_submissions_are_400(client: Client) -> None:
    signer, root = root_envelope()
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"", JSON), (b"{", JSON), (b"[]", JSON), (b"null", JSON), (b'{"payloadType": 1}', JSON),
        (json.dumps({**root.to_dict(), "payload": "%%%"}).encode(), JSON),
        (json.dumps({**root.to_dict(), "extra": 1}).encode(), JSON),
        (json.dumps({**root.to_dict(), "signatures": []}).encode(), JSON),
        (b'{"a": 1, "a": 2}', JSON), (b"[" * 100_000, JSON), (b'{"n": 1.5}', JSON),
        (b"\xc1", MSGPACK), (b"", MSGPACK), (root.to_json(), MSGPACK), (b"\x91\x00", MSGPACK),
        (root.to_msgpack() + b"\x00", MSGPACK),
    ]
    for data, headers in bodies:
        r = await client.post("/v1/entries", data=data, headers=headers)
        assert r.status == 400, data[:40]
        body = await r.json()
        assert body["error"] in ("bad_envelope", "bad_encoding", "bad_input"), body
    unknown_type = sign_envelope("text/plain", b"hello", [signer])
    status, body = await post(client, unknown_type)
    assert status in (400, 403) and body["error"] in ("bad_record", "bad_signature", "unknown_signer")


async def test_wrong_content_type_is_415(client: Client) -> None:
    _, root = root_envelope()
    for ctype in ("text/plain", "application/xml", ""):
        r = await client.post("/v1/entries", data=root.to_json(), headers={"Content-Type": ctype})
        assert r.status == 415, ctype
        assert (await r.json())["error"] == "unsupported_media_type"


async def test_batch_json_and_msgpack(client: Client) -> None:
    key = await vkey(client)
    signer, root = root_envelope()
    assert (await post(client, root))[0] == 201
    envs = [attestation(signer, f"p{i}", f"batch {i}".encode())[1] for i in range(40)]
    body = json.dumps({"envelopes": [e.to_dict() for e in envs[:20]]})
    r = await client.post("/v1/entries:batch", data=body, headers=JSON)
    assert r.status == 200
    out = await r.json()
    packed = encode([e.to_value() for e in envs[20:]])
    r = await client.post("/v1/entries:batch", data=packed, headers=MSGPACK)
    out2 = await r.json()
    for result in (out, out2):
        cp = Checkpoint.parse(open_note(result["checkpoint"], key))
        assert cp.size == result["size"]
        for item in result["results"]:
            assert item["status"] == 201 and not item["duplicate"]
            proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
            merkle.verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp.size, proof, cp.root)
    indexes = [i["index"] for i in out["results"] + out2["results"]]
    assert indexes == list(range(1, 41))


async def test_batch_mixes_results_in_order(client: Client) -> None:
    signer, root = root_envelope()
    _, good = attestation(signer, "a", b"a")
    stranger = SoftwareSigner.generate()
    _, bad = attestation(stranger, "b", b"b")
    items = [root.to_dict(), good.to_dict(), {"payloadType": "x"}, bad.to_dict(), good.to_dict(), root.to_dict()]
    r = await client.post("/v1/entries:batch", data=json.dumps({"envelopes": items}), headers=JSON)
    assert r.status == 200
    results = (await r.json())["results"]
    assert [x["status"] for x in results] == [201, 201, 400, 403, 409, 409]
    assert results[4]["index"] == results[1]["index"] and results[5]["index"] == results[0]["index"]
    assert results[2]["error"] == "bad_envelope"


async def test_a_large_batch_is_verified_by_worker_processes_with_the_same_answers(client: Client) -> None:
    signer, root = root_envelope()
    assert (await post(client, root))[0] == 201
    envs = [attestation(signer, f"big{i}", f"big {i}".encode())[1] for i in range(300)]
    _, stranger = attestation(SoftwareSigner.generate(), "s", b"s")
    forged = Envelope(envs[7].payload_type, envs[7].payload, (Signature(envs[7].signatures[0].keyid, bytes(64)),))
    items = [e.to_dict() for e in envs]
    items[7], items[100], items[200] = forged.to_dict(), stranger.to_dict(), {"payloadType": "x"}
    items.append(envs[3].to_dict())  # a twin of an earlier one
    app = client.app
    assert app[RUNTIME].holdings.own.verifies_in_processes(len(items) - 1)
    r = await client.post("/v1/entries:batch", data=json.dumps({"envelopes": items}), headers=JSON)
    assert r.status == 200
    out = await r.json()
    statuses = [x["status"] for x in out["results"]]
    assert (statuses[7], statuses[100], statuses[200], statuses[-1]) == (403, 403, 400, 409)
    assert statuses.count(201) == 297
    assert out["results"][-1]["index"] == out["results"][3]["index"]
    cp = Checkpoint.parse(open_note(out["checkpoint"], await vkey(client)))
    for item in out["results"]:
        if item["status"] == 201:
            proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
            merkle.verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp.size, proof, cp.root)


async def test_a_large_msgpack_batch_takes_the_bulk_path_with_the_json_answers(client: Client) -> None:
    signer, root = root_envelope()
    assert (await post(client, root))[0] == 201
    envs = [attestation(signer, f"mp{i}", f"mp {i}".encode())[1] for i in range(300)]
    assert client.app[RUNTIME].holdings.own.verifies_in_processes(len(envs))
    r = await client.post("/v1/entries:batch", data=encode([e.to_value() for e in envs]), headers=MSGPACK)
    assert r.status == 200
    out = await r.json()
    assert [x["status"] for x in out["results"]] == [201] * 300
    assert [x["index"] for x in out["results"]] == list(range(1, 301))
    cp = Checkpoint.parse(open_note(out["checkpoint"], await vkey(client)))
    for item in out["results"]:
        proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
        merkle.verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp.size, proof, cp.root)
    again = await client.post("/v1/entries:batch", data=json.dumps({"envelopes": [e.to_dict() for e in envs]}),
                              headers=JSON)
    assert [(x["status"], x["index"]) for x in (await again.json())["results"]] == [(409, i) for i in range(1, 301)]


async def test_batch_limits(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, max_batch=3)))
    signer, _ = root_envelope()
    envs = [attestation(signer, f"p{i}", bytes([i]))[1].to_dict() for i in range(4)]
    r = await client.post("/v1/entries:batch", data=json.dumps({"envelopes": envs}), headers=JSON)
    assert r.status == 413 and (await r.json())["error"] == "too_large"
    for data in (b'{"envelopes": []}', b"{}", b'{"envelopes": {}}', b'{"envelopes": [], "x": 1}', b""):
        r = await client.post("/v1/entries:batch", data=data, headers=JSON)
        assert r.status == 400, data
    r = await client.post("/v1/entries:batch", data=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status == 415


async def test_concurrent_appends_and_proof_fetches(client: Client) -> None:
    """RELIABILITY L3: writers and verifiers race; every (proof, checkpoint) pair verifies
    and the final root equals a reference tree fed with the entries in log order."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    key = await vkey(client)
    signer, root = root_envelope()
    assert (await post(client, root))[0] == 201
    envs = [attestation(signer, f"pkg{i}", f"L3 {seed} {i}".encode())[1] for i in range(120)]
    rng.shuffle(envs)
    answers: list[dict[str, Any]] = []
    checked = 0

    async def writer(chunk: list[Envelope]) -> None:
        for env in chunk:
            if rng.random() < 0.3:
                batch = json.dumps({"envelopes": [env.to_dict()]})
                r = await client.post("/v1/entries:batch", data=batch, headers=JSON)
                out = await r.json()
                item = out["results"][0]
                answers.append({**item, "checkpoint": out["checkpoint"]})
            else:
                status, answer = await post(client, env)
                assert status == 201
                answers.append(answer)

    async def verifier() -> None:
        nonlocal checked
        for _ in range(40):
            note = await (await client.get("/checkpoint")).text()
            cp = Checkpoint.parse(open_note(note, key))
            if cp.size == 0:
                continue
            index = rng.randrange(cp.size)
            r = await client.get("/v1/proofs/inclusion", params={"index": str(index), "size": str(cp.size)})
            assert r.status == 200
            body = await r.json()
            assert body["root"] == cp.root.hex()
            proof = [bytes.fromhex(h) for h in body["proof"]]
            merkle.verify_inclusion(bytes.fromhex(body["leaf_hash"]), index, cp.size, proof, cp.root)
            if cp.size > 1:
                old = rng.randrange(1, cp.size)
                r = await client.get("/v1/proofs/consistency", params={"from": str(old), "to": str(cp.size)})
                c = await r.json()
                old_root = bytes.fromhex((await (await client.get(
                    "/v1/proofs/inclusion", params={"index": "0", "size": str(old)})).json())["root"])
                merkle.verify_consistency(old, cp.size, [bytes.fromhex(h) for h in c["proof"]], old_root, cp.root)
            checked += 1

    chunks = [envs[i::4] for i in range(4)]
    await asyncio.gather(*(writer(c) for c in chunks), *(verifier() for _ in range(3)))
    assert checked > 0
    for a in answers:
        cp = Checkpoint.parse(open_note(a["checkpoint"], key))
        proof = [bytes.fromhex(h) for h in a["inclusion_proof"]]
        merkle.verify_inclusion(bytes.fromhex(a["leaf_hash"]), a["index"], cp.size, proof, cp.root)
    page = await (await client.get("/v1/entries", params={"limit": "1000"})).json()
    reference = [bytes.fromhex(e["leaf_hash"]) for e in page["entries"]]
    assert len(reference) == 121
    assert sorted(a["index"] for a in answers) == list(range(1, 121))
    info = await (await client.get("/v1/log")).json()
    assert info["root"] == merkle.root_hash(reference).hex()
    for a in answers:
        assert reference[a["index"]].hex() == a["leaf_hash"]


async def test_rejects_unverified_payload_type_with_known_signer(client: Client) -> None:
    signer, root = root_envelope()
    await post(client, root)
    env = sign_envelope(PAYLOAD_TYPE, b'{"_type": "nope"}', [signer])
    status, body = await post(client, env)
    assert status == 400 and body["error"] == "bad_record"
