"""POST /add-checkpoint over real HTTP: the C2SP status codes, the size body, races, evidence."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ledger.checkpoint import Checkpoint, parse_verifier_key, verify_cosignature
from ledger.keys import SoftwareSigner
from ledger.witness import MAX_BODY_BYTES, AddCheckpoint, Evidence, verify_evidence
from node.app import create_app
from node.config import PeerConfig, WitnessSection
from node.routes.witness import witness_routes
from node.witness import WITNESS, witness_ctx
from tests.integration.malicious_peer import ForgedLog, Org, honest_log
from tests.node.conftest import Client, make_config

PEER = "peer.example/log"


@pytest.fixture
def log() -> ForgedLog:
    return honest_log(PEER, [f"pkg-{i}@1" for i in range(10)])


async def witness_client(aiohttp_client: Any, tmp_path: Path, log: ForgedLog, *, enabled: bool = True) -> Client:
    config = dataclasses.replace(
        make_config(tmp_path, origin="witness.example/log", rate_per_second=1e6, rate_burst=1_000_000),
        peers=(PeerConfig("http://127.0.0.1:9", PEER, log.vkey),), witness=WitnessSection(enabled=enabled),
    )
    app = create_app(config, extra_cleanup_ctx=[witness_ctx], extra_routes=[witness_routes])
    client: Client = await aiohttp_client(app)
    return client


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, log: ForgedLog) -> Client:
    return await witness_client(aiohttp_client, tmp_path, log)


async def add(client: Client, log: ForgedLog, old: int, size: int | None = None, *,
              proof: list[bytes] | None = None, note: str | None = None) -> tuple[int, str, str]:
    n = log.size if size is None else size
    body = AddCheckpoint(old, tuple(log.proof(old, n) if proof is None else proof), note or log.note(n)).to_bytes()
    r = await client.post("/add-checkpoint", data=body)
    return r.status, r.content_type, await r.text()


async def test_cosigns_and_serves_the_monitoring_view(client: Client, log: ForgedLog) -> None:
    status, ctype, body = await add(client, log, 0, 6)
    assert (status, ctype) == (200, "text/plain")
    witness = client.app[WITNESS]
    text = Checkpoint(PEER, 6, log.root(6)).to_text()
    assert verify_cosignature(text, body.rstrip("\n"), parse_verifier_key(witness.core.vkey)) > 0
    r = await client.get("/v1/witness/checkpoints")
    doc = await r.json()
    assert doc["name"] == "witness.example/log" and doc["checkpoints"] == {PEER: log.note(6)}
    assert (await add(client, log, 6))[0] == 200


async def test_the_c2sp_status_matrix(client: Client, log: ForgedLog) -> None:
    assert (await add(client, log, 0, 4))[0] == 200
    other = honest_log("other.example/log")
    assert (await add(client, other, 0, proof=[]))[0] == 404
    assert (await add(client, log, 4, note=log.note(key=SoftwareSigner.generate())))[0] == 403
    assert (await add(client, log, 6, 5, proof=[]))[0] == 400
    status, ctype, body = await add(client, log, 2, 8)
    assert (status, ctype, body) == (409, "text/x.tlog.size", "4\n")
    bad = log.proof(4)
    bad[0] = bytes(32)
    assert (await add(client, log, 4, proof=bad))[0] == 422
    assert (await add(client, log, 4, proof=[bytes(32)] * 64))[0] == 400
    r = await client.post("/add-checkpoint", data=b"old 4\n\n" + b"x" * (MAX_BODY_BYTES + 1))
    assert r.status == 413
    r = await client.post("/add-checkpoint", data=b"garbage")
    assert r.status == 400
    # nothing above moved the state
    assert client.app[WITNESS].core.size(PEER) == 4


async def test_equivocation_is_409_and_published(client: Client, log: ForgedLog) -> None:
    assert (await add(client, log, 0, 6))[0] == 200
    fork = log.fork(5)
    fork.append(Org("acme").attestation("pkg-evil@1"))
    status, ctype, _ = await add(client, log, 6, 6, proof=[], note=fork.note())
    assert (status, ctype) == (409, "application/json")
    r = await client.get("/v1/equivocations")
    items = await r.json()
    assert len(items) == 1 and items[0]["kind"] == "equivocation" and items[0]["proven"]
    assert verify_evidence(Evidence.from_dict(items[0]), log.vkey)
    assert client.app[WITNESS].holdings.graph.is_equivocating(PEER)


async def test_concurrent_requests_never_roll_back(client: Client, log: ForgedLog) -> None:
    assert (await add(client, log, 0, 2))[0] == 200
    results = await asyncio.gather(*(add(client, log, 2, n) for n in [3, 4, 5, 6, 7, 8, 9, 10] * 4))
    won = {n for n, (status, _, _) in zip([3, 4, 5, 6, 7, 8, 9, 10] * 4, results, strict=True) if status == 200}
    assert len(won) == 1 and all(r[0] in (200, 409) for r in results)
    assert client.app[WITNESS].core.size(PEER) == won.pop()


async def test_state_survives_a_restart(aiohttp_client: Any, tmp_path: Path, log: ForgedLog) -> None:
    first = await witness_client(aiohttp_client, tmp_path, log)
    assert (await add(first, log, 0, 7))[0] == 200
    await first.close()
    second = await witness_client(aiohttp_client, tmp_path, log)
    assert (await add(second, log, 0, 5, proof=[]))[:3] == (409, "text/x.tlog.size", "7\n")
    assert (await add(second, log, 7))[0] == 200


async def test_a_disabled_witness_cosigns_nothing(aiohttp_client: Any, tmp_path: Path, log: ForgedLog) -> None:
    client = await witness_client(aiohttp_client, tmp_path, log, enabled=False)
    assert (await add(client, log, 0, 3))[0] == 404
