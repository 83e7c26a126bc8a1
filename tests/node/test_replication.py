"""Replication against real servers on 127.0.0.1: honest nodes, and peers that misbehave."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import node._replication_progress
from ledger.checkpoint import Checkpoint, open_note, verifier_key
from ledger.errors import CorruptionError, UnavailableError
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.merkle import verify_inclusion
from ledger.trust import RootsPolicy
from ledger.witness import SIZE_CONTENT_TYPE, verify_evidence
from node.app import create_app
from node.client import AsyncNodeClient, Reply
from node.config import NodeConfig, PeerConfig, ReplicationSection
from node.metrics import Registry
from node.replication import Replicator
from node.routes.witness import witness_routes
from node.witness import NodeWitness, witness_ctx
from tests.integration.malicious_peer import Org, Peer, build_app, make_peer
from tests.node.conftest import make_config

LOCAL = "local.example/log"
Server = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Local:
    """The replicating side: its own log, its witness, its replicator (no HTTP server)."""

    path: Path
    key: SoftwareSigner
    holdings: Holdings
    witness: NodeWitness
    served: list[str] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)
    metrics: Registry = field(default_factory=Registry)

    @property
    def vkey(self) -> str:
        return verifier_key(LOCAL, self.key.public_key.raw)

    def replicator(self, *peers: PeerConfig, **settings: Any) -> Replicator:
        fast = ReplicationSection(interval_s=0.05, page_size=2, timeout_s=2.0, max_backoff_s=0.2)
        return Replicator(self.holdings, peers, witness=self.witness, settings=dataclasses.replace(fast, **settings),
                          user_agent=f"turtles-node/{LOCAL}", seed=7)


def open_local(path: Path, key: SoftwareSigner, peers: list[PeerConfig], quorum: int = 0) -> Local:
    holdings = Holdings.open(path, origin=LOCAL, signer=key, roots=RootsPolicy.any_self_signed(), create=True)
    local = Local(path, key, holdings, None)  # type: ignore[arg-type]
    local.witness = NodeWitness(holdings, name=LOCAL, signer=key, peers=peers, quorum=quorum,
                                serve=local.served.append, publish=local.published.append, metrics=local.metrics)
    return local


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Callable[..., Local]]:
    """Makes the replicating side (closed at the end of the test)."""
    made: list[Local] = []

    def make(peers: list[PeerConfig], key: SoftwareSigner | None = None, quorum: int = 0) -> Local:
        loc = open_local(tmp_path / "local", key or SoftwareSigner.generate(), peers, quorum)
        made.append(loc)
        return loc

    yield make
    for loc in made:
        if not loc.holdings.db.closed:
            loc.holdings.close()


async def honest_node(tmp: Path, server: Server, witnessed: list[PeerConfig]) -> tuple[NodeConfig, TestServer]:
    config = dataclasses.replace(make_config(tmp, origin="alpha.example/log"), peers=tuple(witnessed))
    app = create_app(config, extra_cleanup_ctx=[witness_ctx], extra_routes=[witness_routes])
    return config, await server(app)


async def submit(url: str, org: Org, releases: list[str], *, with_keys: bool = True) -> None:
    envs = org.records(releases) if with_keys else [org.attestation(r) for r in releases]
    async with aiohttp.ClientSession() as s:
        for env in envs:
            async with s.post(url + "/v1/entries", data=env.to_json(),
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 201, await r.text()


def peer_of(config: NodeConfig, server: TestServer) -> PeerConfig:
    key = SoftwareSigner.from_pem(Path(config.keys.log_key).read_bytes())
    return PeerConfig(str(server.make_url("")).rstrip("/"), config.node.origin,
                      verifier_key(config.node.origin, key.public_key.raw))


@asynccontextmanager
async def manual(rep: Replicator) -> AsyncIterator[Replicator]:
    """A replicator driven round by round (no background tasks)."""
    try:
        yield rep
    finally:
        await rep.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- honest peers ---------------------------------------------------------------------------------


async def test_mirrors_witnesses_and_collects_cosignatures(tmp_path: Path, aiohttp_server: Server, local: Any) -> None:
    key = SoftwareSigner.generate()
    me = PeerConfig("http://127.0.0.1:9", LOCAL, verifier_key(LOCAL, key.public_key.raw))
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [me])
    alpha = peer_of(config, server)
    org = Org("alpha")
    await submit(alpha.url, org, [f"pkg-{i}@1" for i in range(5)])
    loc: Local = local([alpha], key)  # alpha's witness knows this key
    assert loc.holdings.own is not None
    loc.holdings.own.append(Org("local").root_envelope())

    async with manual(loc.replicator(alpha)) as rep:
        status = await rep.sync_once(alpha.origin)
        assert status.state == "ok", status.last_error
        mirror = loc.holdings.mirrors[alpha.origin]
        assert mirror.size == status.peer_size == 7
        # the mirror's view verifies against the peer's own checkpoint
        async with aiohttp.ClientSession() as s, s.get(alpha.url + "/checkpoint") as r:
            cp = Checkpoint.parse(open_note(await r.text(), alpha.vkey))
        assert mirror.root_at(cp.size) == cp.root
        verify_inclusion(mirror.entry(6).leaf_hash, 6, cp.size, mirror.inclusion_proof(6, cp.size), cp.root)
        # this node cosigned alpha's checkpoint as a witness, and alpha cosigned ours
        assert loc.witness.core.size(alpha.origin) == 7
        assert LOCAL in loc.holdings.graph.witnesses(alpha.origin, 6)
        assert loc.served and loc.served[-1].count("\u2014 ") == 2
        assert alpha.origin in loc.holdings.graph.witnesses(LOCAL, 0)
        assert status.push_error is None

        await submit(alpha.url, org, ["pkg-5@1"], with_keys=False)
        assert (await rep.sync_once(alpha.origin)).state == "ok"
        assert mirror.size == 8 and loc.witness.core.size(alpha.origin) == 8


@pytest.mark.parametrize(("quorum", "witnessed"), [(0, True), (1, True), (2, False)])
async def test_witnessed_size_counts_only_checkpoints_that_reach_the_quorum(
    tmp_path: Path, aiohttp_server: Server, local: Any, quorum: int, witnessed: bool,
) -> None:
    key = SoftwareSigner.generate()
    me = PeerConfig("http://127.0.0.1:9", LOCAL, verifier_key(LOCAL, key.public_key.raw))
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [me])
    alpha = peer_of(config, server)
    await submit(alpha.url, Org("alpha"), ["pkg-0@1"])
    loc: Local = local([alpha], key, quorum)  # one peer witness: a quorum of 2 is never reached
    assert loc.holdings.own is not None
    loc.holdings.own.append(Org("local").root_envelope())
    async with manual(loc.replicator(alpha)) as rep:
        status = await rep.sync_once(alpha.origin)
        assert status.state == "ok" and status.push_error is None
    text = loc.metrics.render()
    assert f"turtles_witness_quorum {max(quorum, 1)}" in text
    assert ("turtles_witnessed_size 1" in text) is witnessed
    assert alpha.origin in loc.holdings.graph.witnesses(LOCAL, 0)  # cosigned either way


async def test_background_tasks_follow_a_growing_log(tmp_path: Path, aiohttp_server: Server, local: Any) -> None:
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [])
    alpha = peer_of(config, server)
    loc: Local = local([alpha])
    org = Org("alpha")
    await submit(alpha.url, org, ["pkg-0@1"])
    async with loc.replicator(alpha):
        await wait_for(lambda: alpha.origin in loc.holdings.mirrors and loc.holdings.mirrors[alpha.origin].size == 3)
        await submit(alpha.url, org, [f"pkg-{i}@2" for i in range(6)], with_keys=False)
        await wait_for(lambda: loc.holdings.mirrors[alpha.origin].size == 9)
        await wait_for(lambda: loc.witness.core.size(alpha.origin) == 9)  # cosigned after mirroring
    # restart: the mirror and the witness state come back from the store
    loc.holdings.close()
    again: Local = local([alpha], loc.key)
    assert again.holdings.mirrors[alpha.origin].size == 9
    assert again.witness.core.size(alpha.origin) == 9


# --- misbehaving peers -------------------------------------------------------------------------------


async def bad_peer(server: Server, mode: str, **kw: Any) -> tuple[Peer, PeerConfig]:
    peer = make_peer("mallory.example/log", SoftwareSigner.generate(), mode=mode, **kw)
    srv = await server(build_app(peer))
    return peer, PeerConfig(str(srv.make_url("")).rstrip("/"), peer.log.origin, peer.log.vkey)


@pytest.mark.parametrize(("mode", "kind", "proven"), [
    ("fork", "fork", True),
    ("rewrite", "bad-entries", False),
    ("wrong-key", "bad-note", False),
    ("garbage", "bad-note", False),
])
async def test_misbehaviour_pauses_with_evidence_and_leaves_the_mirror(
    aiohttp_server: Server, local: Any, mode: str, kind: str, proven: bool,
) -> None:
    peer, cfg = await bad_peer(aiohttp_server, mode, switch_after=1)
    loc: Local = local([cfg])
    async with manual(loc.replicator(cfg)) as rep:
        first = await rep.sync_once(cfg.origin)
        if mode == "fork":  # the first round sees the honest view
            assert first.state == "ok", first.last_error
        mirror = loc.holdings.mirror(cfg.origin, cfg.vkey)
        before = (mirror.tip, mirror.checkpoint(), list(mirror.store.checkpoints()))
        status = first if mode != "fork" else await rep.sync_once(cfg.origin)
        assert status.state == "paused"
        assert status.evidence is not None and status.evidence.kind == kind
        assert verify_evidence(status.evidence, cfg.vkey) is proven
        assert (mirror.tip, mirror.checkpoint(), list(mirror.store.checkpoints())) == before
        assert loc.holdings.graph.is_equivocating(cfg.origin) is proven
        assert [e["kind"] for e in loc.published] == [kind]
        assert loc.witness.evidence.all()[0].kind == kind
        if mode == "fork":
            assert mirror.size == peer.log.size and mirror.root_at(mirror.size) == peer.log.root()
        # paused: no more pulls until resumed
        fetches = peer.fetches
        await asyncio.sleep(0.3)
        assert peer.fetches == fetches
        rep.resume(cfg.origin)
        assert (await rep.sync_once(cfg.origin)).state == "paused"
        if mode != "garbage":  # (random bytes are a new incident each time)
            assert len(loc.witness.evidence.all()) == 1  # the same incident is recorded once


async def test_split_view_is_caught_by_gossip(tmp_path: Path, aiohttp_server: Server, local: Any) -> None:
    """Mallory shows view A to us and view B to alpha; alpha's witness view exposes it."""
    peer, cfg = await bad_peer(aiohttp_server, "split", victim=LOCAL)
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [cfg])
    alpha = peer_of(config, server)
    # alpha's witness cosigns view B (what mallory shows everyone but us)
    async with aiohttp.ClientSession() as s:
        body = f"old 0\n\n{peer.other.note()}".encode()  # type: ignore[union-attr]
        async with s.post(alpha.url + "/add-checkpoint", data=body) as r:
            assert r.status == 200, await r.text()
    loc: Local = local([cfg, alpha])
    async with manual(loc.replicator(cfg, alpha)) as rep:
        assert (await rep.sync_once(cfg.origin)).state == "ok"  # we mirror view A
        assert (await rep.sync_once(alpha.origin)).state == "ok"  # gossip from alpha shows view B
        assert rep.status()[cfg.origin].state == "paused"  # no more pulls from the equivocating log
    assert loc.holdings.graph.is_equivocating(cfg.origin)
    ev = loc.witness.evidence.all()[0]
    assert ev.kind == "equivocation" and verify_evidence(ev, cfg.vkey)
    assert {ev.older, ev.newer} == {peer.log.note(), peer.other.note()}  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["endless", "trickle"])
async def test_endless_or_trickling_peer_is_unhealthy_not_fatal(aiohttp_server: Server, local: Any, mode: str) -> None:
    _, cfg = await bad_peer(aiohttp_server, mode)
    loc: Local = local([cfg])
    async with manual(loc.replicator(cfg, timeout_s=1.0)) as rep:
        start = time.monotonic()
        status = await rep.sync_once(cfg.origin)
        assert time.monotonic() - start < 5
        assert status.state == "retrying" and status.failures == 1 and status.last_error
        assert not loc.witness.evidence.all()
        assert loc.holdings.mirrors[cfg.origin].tip.size == 0


async def test_a_stalled_peer_does_not_hold_up_the_others(tmp_path: Path, aiohttp_server: Server, local: Any) -> None:
    _, stalled = await bad_peer(aiohttp_server, "trickle")
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [])
    alpha = peer_of(config, server)
    await submit(alpha.url, Org("alpha"), ["pkg-0@1", "pkg-1@1"])
    loc: Local = local([stalled, alpha])
    async with loc.replicator(stalled, alpha, timeout_s=30.0) as rep:
        start = time.monotonic()
        await wait_for(lambda: alpha.origin in loc.holdings.mirrors and loc.holdings.mirrors[alpha.origin].size == 4)
        assert time.monotonic() - start < 10
        assert rep.status()[stalled.origin].state in ("idle", "retrying")


async def test_backoff_grows_with_jitter_and_is_capped(aiohttp_server: Server, local: Any) -> None:
    _, cfg = await bad_peer(aiohttp_server, "trickle")
    loc: Local = local([cfg])
    rep = loc.replicator(cfg, interval_s=0.1, max_backoff_s=1.0)
    await rep.start()
    await rep.stop()
    worker = rep.peers[cfg.origin]
    delays = []
    for failures in range(8):
        worker.status.failures = failures
        delays.append(worker._delay())
    assert 0.08 <= delays[0] <= 0.12
    assert all(d <= 1.0 for d in delays) and delays[5] >= 0.5
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered


async def test_evidence_survives_a_restart(aiohttp_server: Server, local: Any) -> None:
    _, cfg = await bad_peer(aiohttp_server, "fork", switch_after=1)
    loc: Local = local([cfg])
    async with manual(loc.replicator(cfg)) as rep:
        await rep.sync_once(cfg.origin)
        assert (await rep.sync_once(cfg.origin)).state == "paused"
    loc.holdings.close()
    again: Local = local([cfg], loc.key)
    assert [e.kind for e in again.witness.evidence.all()] == ["fork"]
    assert [e["kind"] for e in again.published] == ["fork"]
    assert again.holdings.graph.is_equivocating(cfg.origin)


async def test_stopped_mid_copy_resumes_from_the_stored_tip(aiohttp_server: Server, local: Any) -> None:
    peer = make_peer("big.example/log", SoftwareSigner.generate(), mode="honest", entries=60)
    peer.page_delay = 0.05
    srv = await aiohttp_server(build_app(peer))
    cfg = PeerConfig(str(srv.make_url("")).rstrip("/"), peer.log.origin, peer.log.vkey)
    loc: Local = local([cfg])
    rep = loc.replicator(cfg, page_size=1)
    await rep.start()
    await wait_for(lambda: cfg.origin in loc.holdings.mirrors and loc.holdings.mirrors[cfg.origin].tip.size >= 5)
    await rep.stop()  # mid-copy: the round is cancelled, its store writes are waited for
    copied = loc.holdings.mirrors[cfg.origin].tip.size
    assert 5 <= copied < 60
    loc.holdings.close()
    again: Local = local([cfg], loc.key)
    mirror = again.holdings.mirrors[cfg.origin]
    assert mirror.tip.size == copied and mirror.size == 0  # nothing served until a checkpoint is reached
    assert mirror.verified == 0  # reopening the store verified nothing
    peer.page_delay = 0.0
    async with manual(again.replicator(cfg, page_size=16)) as rep2:
        status = await rep2.sync_once(cfg.origin)
        assert status.state == "ok"
    assert mirror.size == 60 and mirror.root_at(60) == peer.log.root()
    # only the entries it did not hold were fetched and verified after the restart
    assert mirror.verified == status.verified == 60 - copied


async def test_a_catch_up_reads_entry_bundles_and_shows_its_progress(
    tmp_path: Path, aiohttp_server: Server, local: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, server = await honest_node(tmp_path / "alpha", aiohttp_server, [])
    alpha = peer_of(config, server)
    org = Org("alpha")
    await submit(alpha.url, org, [])
    envs = [org.attestation(f"pkg-{i}@1") for i in range(1300)]
    async with aiohttp.ClientSession() as s:
        for lo in range(0, len(envs), 650):
            body = {"envelopes": [e.to_dict() for e in envs[lo : lo + 650]]}
            async with s.post(alpha.url + "/v1/entries:batch", json=body) as r:
                assert r.status == 200, await r.text()

    async def no_json_pages(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("an honest node serves entry bundles: /v1/entries is not needed")

    monkeypatch.setattr(AsyncNodeClient, "get_entries", no_json_pages)
    monkeypatch.setattr(node._replication_progress, "EVERY_S", 0.0)  # a progress line per page
    loc: Local = local([alpha])
    metrics = Registry()
    rep = Replicator(loc.holdings, [alpha], witness=loc.witness, metrics=metrics,
                     settings=ReplicationSection(interval_s=0.05, page_size=256, timeout_s=5.0), seed=1)
    with caplog.at_level(logging.DEBUG, logger="turtles.replication"):
        async with manual(rep):
            status = await rep.sync_once(alpha.origin)
    assert status.state == "ok", status.last_error
    mirror = loc.holdings.mirrors[alpha.origin]
    assert mirror.size == status.mirror_tip == 1302 and mirror.root_at(1302) == (
        Checkpoint.parse(open_note(mirror.checkpoint() or "", alpha.vkey)).root)
    assert status.verified == mirror.verified == 1302 and status.eta_s is None and status.rate > 0
    lines = [r.getMessage() for r in caplog.records if r.name == "turtles.replication"]
    assert f"mirroring {alpha.origin}: 0 of 1,302 entries held, 1,302 to fetch and verify" in lines
    shown = [line for line in lines if " of 1,302 entries (" in line]
    assert shown and shown[0].startswith(f"mirroring {alpha.origin}: 1,024 of 1,302 entries (78.6%), ")
    assert all(" entries/s, ETA " in line for line in shown)  # pages of 1,024 entries (4 bundles)
    assert any(line.startswith(f"mirrored {alpha.origin}: 1,302 entries verified and stored in ") for line in lines)
    text = metrics.render()
    assert f'turtles_replication_tip_entries{{origin="{alpha.origin}"}} 1302' in text
    assert f'turtles_replication_verified_entries_total{{origin="{alpha.origin}"}} 1302' in text


@pytest.mark.parametrize("bundles", ["absent", "slow"])
async def test_a_peer_without_usable_entry_bundles_is_read_through_v1_entries(
    aiohttp_server: Server, local: Any, bundles: str
) -> None:
    peer = make_peer("old.example/log", SoftwareSigner.generate(), mode="honest", entries=300)
    app = build_app(peer)  # serves /v1/entries and no tiles ...
    if bundles == "slow":  # ... or tiles that take longer than the timeout (a slow link)
        async def slow(request: web.Request) -> web.Response:
            await asyncio.sleep(5)
            return web.Response(body=b"")

        app.router.add_get("/tile/entries/{n:.+}", slow)
    srv = await aiohttp_server(app)
    cfg = PeerConfig(str(srv.make_url("")).rstrip("/"), peer.log.origin, peer.log.vkey)
    loc: Local = local([cfg])
    async with manual(loc.replicator(cfg, page_size=256, timeout_s=0.5)) as rep:
        status = await rep.sync_once(cfg.origin)
        assert status.state == "ok", status.last_error
        assert rep.peers[cfg.origin]._fetcher.tiles is False
    mirror = loc.holdings.mirrors[cfg.origin]
    assert mirror.size == 300 and mirror.root_at(300) == peer.log.root() and mirror.verified == 300


async def test_a_malformed_entry_bundle_is_evidence(aiohttp_server: Server, local: Any) -> None:
    peer = make_peer("odd.example/log", SoftwareSigner.generate(), mode="honest", entries=20)
    app = build_app(peer)

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x05abc")  # a length prefix longer than the bytes

    app.router.add_get("/tile/entries/{n:.+}", garbage)
    srv = await aiohttp_server(app)
    cfg = PeerConfig(str(srv.make_url("")).rstrip("/"), peer.log.origin, peer.log.vkey)
    loc: Local = local([cfg])
    async with manual(loc.replicator(cfg, page_size=256)) as rep:
        status = await rep.sync_once(cfg.origin)
    assert status.state == "paused" and status.evidence is not None
    assert status.evidence.kind == "bad-entries" and "tile/entries/000.p/20" in status.evidence.message
    assert loc.holdings.mirrors[cfg.origin].tip.size == 0


def test_a_witness_ahead_of_the_own_log_reveals_a_stale_store(local: Any) -> None:
    alpha = PeerConfig("http://127.0.0.1:9", "alpha.example/log",
                       verifier_key("alpha.example/log", SoftwareSigner.generate().public_key.raw))
    loc: Local = local([alpha])
    request = loc.witness.push_request(alpha.origin)
    assert request is not None and request.old_size == 0
    # the witness says it cosigned 100 entries of our log: more than the store holds (S6)
    assert loc.witness.push_reply(alpha.origin, request, Reply(409, SIZE_CONTENT_TYPE, b"100\n", {})) is False
    with pytest.raises(CorruptionError):
        loc.witness.push_request(alpha.origin)
    with pytest.raises(UnavailableError):
        loc.witness.push_reply(alpha.origin, request, Reply(409, SIZE_CONTENT_TYPE, b"01x\n", {}))
    with pytest.raises(UnavailableError):  # a 200 without a cosignature by the witness's key
        loc.witness.push_reply(alpha.origin, request, Reply(200, "text/plain", b"\xe2\x80\x94 x AAAA\n", {}))
