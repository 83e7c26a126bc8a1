"""Read endpoints of the own log: checkpoint, log info, entries, proofs (L2), tiles."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from ledger import merkle
from ledger.checkpoint import Checkpoint, open_note
from ledger.entry import Entry
from ledger.keys import SoftwareSigner
from ledger.tiles import BundleId, TileId, hashes_from_tiles, tile_plan, verify_bundle, verify_tiles
from node.app import create_app
from node.config import NodeConfig
from node.routes._common import origin_hash
from node.routes.tiles import IMMUTABLE, PARTIAL
from node.state import RUNTIME
from tests.node.conftest import Client, attestation, root_envelope


async def fill(client: Client, n: int) -> tuple[SoftwareSigner, list[str]]:
    """A root, then ``n - 1`` attestations by it (one batch); returns the key and leaf hashes."""
    signer, root = root_envelope()
    r = await client.post("/v1/entries", data=root.to_json(), headers={"Content-Type": "application/json"})
    assert r.status == 201
    envs = [attestation(signer, f"pkg{i}", f"content {i}".encode())[1] for i in range(n - 1)]
    if envs:
        body = json.dumps({"envelopes": [e.to_dict() for e in envs]})
        r = await client.post("/v1/entries:batch", data=body, headers={"Content-Type": "application/json"})
        assert r.status == 200, await r.text()
        assert all(x["status"] == 201 for x in (await r.json())["results"])
    page = await (await client.get("/v1/entries", params={"limit": "1000"})).json()
    leaves = [e["leaf_hash"] for e in page["entries"]]
    assert len(leaves) == n
    return signer, leaves


async def log_info(client: Client) -> dict[str, Any]:
    r = await client.get("/v1/log")
    assert r.status == 200
    info: dict[str, Any] = await r.json()
    return info


async def test_empty_log_checkpoint_and_info(client: Client) -> None:
    info = await log_info(client)
    assert info["size"] == 0 and info["root"] == merkle.EMPTY_ROOT.hex()
    assert info["origin"] == "test.turtles.local/log"
    r = await client.get("/checkpoint")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    cp = Checkpoint.parse(open_note(await r.text(), info["vkey"]))
    assert (cp.origin, cp.size, cp.root) == (info["origin"], 0, merkle.EMPTY_ROOT)


async def test_checkpoint_follows_appends_and_matches_log_info(client: Client) -> None:
    _, leaves = await fill(client, 5)
    info = await log_info(client)
    cp = Checkpoint.parse(open_note(await (await client.get("/checkpoint")).text(), info["vkey"]))
    assert cp.size == info["size"] == 5
    assert cp.root.hex() == info["root"] == merkle.root_hash([bytes.fromhex(h) for h in leaves]).hex()


async def test_entry_view(client: Client) -> None:
    signer, leaves = await fill(client, 2)
    r = await client.get("/v1/entries/0")
    assert r.status == 200
    e = await r.json()
    raw = base64.b64decode(e["entry"])
    entry = Entry.from_bytes(raw)
    assert merkle.leaf_hash(raw).hex() == e["leaf_hash"] == leaves[0]
    assert e["index"] == 0 and e["ts"] == entry.ts and e["prev"] == "00" * 32
    assert e["signers"] == [signer.key_id]
    rec = e["record"]
    assert rec["kind"] == "root" and rec["org"] == "acme" and rec["hsm"] is False
    assert rec["key"]["id"] == signer.key_id and "BEGIN PUBLIC KEY" in rec["key"]["pem"]
    att = await (await client.get("/v1/entries/1")).json()
    assert att["record"]["kind"] == "attestation"
    assert att["record"]["statement"]["_type"] == "https://in-toto.io/Statement/v1"
    assert att["prev"] == leaves[0]


async def test_entry_errors(client: Client) -> None:
    await fill(client, 1)
    for path, status in [
        ("/v1/entries/1", 404), ("/v1/entries/-1", 400), ("/v1/entries/x", 400),
        ("/v1/entries/01", 400), ("/v1/entries/99999999999999999999999", 400),
    ]:
        r = await client.get(path)
        assert r.status == status, path
        body = await r.json()
        assert set(body) >= {"error", "message"}
    body = await (await client.get("/v1/entries/5")).json()
    assert body["error"] == "not_found" and body["size"] == 1


async def test_entry_pages(client: Client) -> None:
    _, leaves = await fill(client, 7)
    got: list[str] = []
    start: int | None = 0
    while start is not None:
        page = await (await client.get("/v1/entries", params={"start": str(start), "limit": "3"})).json()
        assert page["size"] == 7 and page["start"] == start
        got += [e["leaf_hash"] for e in page["entries"]]
        start = page["next"]
    assert got == leaves
    end = await (await client.get("/v1/entries", params={"start": "7"})).json()
    assert end["entries"] == [] and end["next"] is None
    for params in ({"start": "8"}, {"limit": "0"}, {"start": "-1"}, {"limit": "x"}):
        assert (await client.get("/v1/entries", params=params)).status == 400, params
    capped = await (await client.get("/v1/entries", params={"limit": "5000"})).json()
    assert len(capped["entries"]) == 7


async def test_inclusion_proofs_verify_and_match_reference(client: Client) -> None:
    _, leaves = await fill(client, 11)
    hashes = [bytes.fromhex(h) for h in leaves]
    for size in (1, 2, 5, 8, 11):
        for index in range(size):
            r = await client.get("/v1/proofs/inclusion", params={"index": str(index), "size": str(size)})
            assert r.status == 200
            body = await r.json()
            proof = [bytes.fromhex(h) for h in body["proof"]]
            assert proof == merkle.inclusion_proof(hashes, index, size)
            assert body["root"] == merkle.root_hash(hashes[:size]).hex()
            merkle.verify_inclusion(hashes[index], index, size, proof, bytes.fromhex(body["root"]))
            assert body["leaf_hash"] == leaves[index]
            if size in (1, 11):  # a checkpoint was signed after the root and after the batch
                assert body["checkpoint"].split("\n")[1] == str(size)
            else:
                assert body["checkpoint"] is None
    default = await (await client.get("/v1/proofs/inclusion", params={"index": "3"})).json()
    assert default["size"] == 11


async def test_consistency_proofs_verify_and_match_reference(client: Client) -> None:
    _, leaves = await fill(client, 9)
    hashes = [bytes.fromhex(h) for h in leaves]
    for first in range(10):
        for second in range(first, 10):
            r = await client.get("/v1/proofs/consistency", params={"from": str(first), "to": str(second)})
            assert r.status == 200
            body = await r.json()
            proof = [bytes.fromhex(h) for h in body["proof"]]
            assert proof == merkle.consistency_proof(hashes, first, second)
            merkle.verify_consistency(
                first, second, proof, merkle.root_hash(hashes[:first]), bytes.fromhex(body["root"])
            )


async def test_out_of_range_proofs_are_4xx_never_fabricated(client: Client) -> None:
    """RELIABILITY L2: index >= size, size > current, from > to, negatives, non-integers."""
    await fill(client, 4)
    cases = [
        ("/v1/proofs/inclusion", {"index": "4", "size": "4"}, 400),
        ("/v1/proofs/inclusion", {"index": "0", "size": "0"}, 400),
        ("/v1/proofs/inclusion", {"index": "0", "size": "5"}, 400),
        ("/v1/proofs/inclusion", {"index": "-1", "size": "2"}, 400),
        ("/v1/proofs/inclusion", {"index": "1.5", "size": "2"}, 400),
        ("/v1/proofs/inclusion", {"index": "a"}, 400),
        ("/v1/proofs/inclusion", {}, 400),
        ("/v1/proofs/inclusion", {"index": "0", "size": "9223372036854775808"}, 400),
        ("/v1/proofs/consistency", {"from": "3", "to": "2"}, 400),
        ("/v1/proofs/consistency", {"from": "0", "to": "5"}, 400),
        ("/v1/proofs/consistency", {"from": "-1", "to": "0"}, 400),
        ("/v1/proofs/consistency", {"from": "5"}, 400),
        ("/v1/proofs/consistency", {"to": "2"}, 400),
        ("/v1/proofs/consistency", {"from": "0x1", "to": "2"}, 400),
    ]
    for path, params, status in cases:
        r = await client.get(path, params=params)
        assert r.status == status, (path, params)
        body = await r.json()
        assert "proof" not in body and body["error"] == "bad_input", (path, params)
    beyond = await (await client.get("/v1/proofs/inclusion", params={"index": "0", "size": "5"})).json()
    assert beyond["size"] == 4 and beyond["field"] == "size"
    beyond = await (await client.get("/v1/proofs/consistency", params={"from": "1", "to": "50"})).json()
    assert beyond["size"] == 4
    ok = await client.get("/v1/proofs/consistency", params={"from": "0", "to": "0"})
    assert ok.status == 200 and (await ok.json())["proof"] == []


async def test_unknown_origin_is_404(client: Client) -> None:
    for path in ("/v1/log", "/v1/entries/0", "/v1/entries", "/v1/proofs/inclusion?index=0"):
        r = await client.get(path, params={"origin": "nobody.example/log"})
        assert r.status == 404, path
        assert (await r.json())["error"] == "not_found"


async def test_origin_param_addresses_the_own_log_too(client: Client) -> None:
    await fill(client, 2)
    info = await log_info(client)
    r = await client.get("/v1/log", params={"origin": info["origin"]})
    assert await r.json() == info


async def test_tiles_rebuild_the_root(client: Client) -> None:
    """A client reading only tiles rebuilds the signed root, and bundles match the leaves."""
    _, leaves = await fill(client, 300)
    info = await log_info(client)
    cp = Checkpoint.parse(open_note(await (await client.get("/checkpoint")).text(), info["vkey"]))
    size, root = cp.size, cp.root
    tiles: dict[TileId, bytes] = {}
    for tile in tile_plan([(0, i) for i in range(size)], size):
        r = await client.get("/" + tile.path())
        assert r.status == 200, tile.path()
        assert r.headers["Cache-Control"] == (PARTIAL if tile.is_partial else IMMUTABLE)
        tiles[tile] = await r.read()
    verify_tiles(tiles, size=size, root=root)
    got = hashes_from_tiles([(0, i) for i in range(size)], tiles, size=size, root=root)
    assert [h.hex() for h in got] == leaves
    assert merkle.root_hash(got) == root
    for bundle in (BundleId(0), BundleId(1, 44)):
        r = await client.get("/" + bundle.path())
        assert r.status == 200
        assert r.headers["Cache-Control"] == (IMMUTABLE if bundle.width == 256 else PARTIAL)
        entries = verify_bundle(bundle, await r.read(), got[bundle.start : bundle.start + bundle.width])
        assert len(entries) == bundle.width
    # A narrower partial tile than the log has is a prefix: still served and correct.
    r = await client.get("/tile/0/001.p/10")
    assert r.status == 200 and await r.read() == b"".join(got[256:266])


async def test_tile_errors(client: Client) -> None:
    await fill(client, 3)
    for path, status in [
        ("/tile/0/000", 404),            # full tile of a log of 3
        ("/tile/0/000.p/4", 404),        # wider than the log
        ("/tile/1/000.p/1", 404),        # no level-1 hash yet
        ("/tile/entries/000.p/4", 404),
        ("/tile/0/0", 400),
        ("/tile/0/000.p/0", 400),
        ("/tile/0/000.p/256", 400),
        ("/tile/0/x000/001", 400),
        ("/tile/abc/000", 400),
        ("/tile/entries/000.p/-1", 400),
    ]:
        r = await client.get(path)
        assert r.status == status, path
        assert "error" in await r.json()
    r = await client.get("/tile/0/000.p/3")
    assert r.status == 200 and len(await r.read()) == 96


async def test_mirror_prefix_serves_held_logs(client: Client) -> None:
    await fill(client, 3)
    info = await log_info(client)
    prefix = f"/mirror/{origin_hash(info['origin'])}"
    r = await client.get(prefix + "/tile/0/000.p/3")
    assert r.status == 200 and len(await r.read()) == 96
    note = await (await client.get(prefix + "/checkpoint")).text()
    assert note == await (await client.get("/checkpoint")).text()
    assert (await client.get(f"/mirror/{'0' * 64}/tile/0/000.p/1")).status == 404
    assert (await client.get(f"/mirror/{'0' * 64}/checkpoint")).status == 404


async def test_a_restarted_node_fills_its_hash_cache_before_the_first_proof(aiohttp_client: Any,
                                                                            config: NodeConfig) -> None:
    """The own log's stored-hash cache is filled in the background as the node starts, so
    the first proof after a restart does not pay for reading every stored hash."""
    first = await aiohttp_client(create_app(config))
    _, leaves = await fill(first, 40)
    await first.close()  # the app's cleanup closes the store
    again = await aiohttp_client(create_app(config))
    own = again.app[RUNTIME].open_holdings().own
    assert own is not None
    deadline = asyncio.get_running_loop().time() + 10
    while own.hash_cache_bytes == 0:  # no request has asked for a proof or a root
        assert asyncio.get_running_loop().time() < deadline, "the hash cache was not filled at start"
        await asyncio.sleep(0.02)
    assert own.hash_cache_bytes == 32 * (2 * 40 - bin(40).count("1"))  # every stored hash of 40 leaves
    metrics = await (await again.get("/metrics")).text()
    assert f'turtles_hash_cache_bytes{{origin="{own.origin}"}} {own.hash_cache_bytes}' in metrics
    r = await again.get("/v1/proofs/inclusion", params={"index": "7", "size": "40"})
    assert r.status == 200, await r.text()
    hashes = [bytes.fromhex(h) for h in leaves]
    assert [bytes.fromhex(h) for h in (await r.json())["proof"]] == merkle.inclusion_proof(hashes, 7, 40)
