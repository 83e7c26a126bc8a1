"""Misbehaving peers as real processes, against a cluster of real nodes.

Each peer signs with its own real log key and misbehaves one way: it switches to a fork,
rewrites an entry, signs with a key nobody configured, shows two views (split), sends
garbage, or streams an endless checkpoint. The honest nodes must detect each with evidence
(proven where the misbehaviour can be proven), keep their mirrors as they were, and keep
replicating each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ledger.witness import Evidence, verify_evidence
from node.cluster import ClusterNode, cluster_down, cluster_up
from tests.integration.conftest import (
    FAST,
    BadPeer,
    get,
    log_info,
    start_bad_peer,
    stop_process,
    wait_until,
)

MODES = ("fork", "rewrite", "wrong-key", "split", "garbage", "endless")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[ClusterNode], dict[str, BadPeer]]]:
    base = tmp_path_factory.mktemp("malice")
    peers: dict[str, BadPeer] = {}
    try:
        for mode in MODES:
            options: dict[str, object] = {"entries": 7, "fork_at": 4, "switch_after": 1}
            if mode == "split":
                options["victim"] = "turtles-node/org1.turtles.local/log"
            peers[mode] = start_bad_peer(base / mode, mode, **options)
        nodes = cluster_up(base / "cluster", 2, timeout=90, replication=FAST,
                           extra_peers=[p.peer for p in peers.values()])
        try:
            yield nodes, peers
        finally:
            cluster_down(base / "cluster", timeout=20)
    finally:
        for p in peers.values():
            stop_process(p.proc)


def evidence(node: ClusterNode, origin: str) -> list[Evidence]:
    items: list[dict[str, Any]] = get(node.url, "/v1/equivocations")
    return [Evidence.from_dict(e) for e in items if e["origin"] == origin]


def same_root(node: ClusterNode, source: ClusterNode) -> bool:
    return bool(log_info(node, source.origin)["root"] == log_info(source, source.origin)["root"])


def detected(node: ClusterNode, peer: BadPeer, kind: str) -> Evidence | None:
    return next((e for e in evidence(node, peer.info["origin"]) if e.kind == kind), None)


def test_fork_is_proven_and_the_mirror_keeps_the_first_view(rig: Any) -> None:
    nodes, peers = rig
    fork = peers["fork"]
    for node in nodes:
        ev = wait_until(f"{node.name} to prove the fork", partial(detected, node, fork, "fork"))
        assert verify_evidence(ev, fork.info["vkey"])
        held = log_info(node, fork.info["origin"])
        assert held["size"] == fork.info["size"] and held["root"] == fork.info["root"]


def test_split_view_is_proven_by_gossip(rig: Any) -> None:
    nodes, peers = rig
    split = peers["split"]
    ev = wait_until("a node to prove the split view", lambda: next(
        (e for n in nodes for e in evidence(n, split.info["origin"]) if e.kind == "equivocation"), None))
    assert verify_evidence(ev, split.info["vkey"])
    assert ev.older != ev.newer


@pytest.mark.parametrize(("mode", "kind"), [("rewrite", "bad-entries"), ("wrong-key", "bad-note"),
                                            ("garbage", "bad-note")])
def test_unprovable_misbehaviour_is_reported_and_stored_nothing(rig: Any, mode: str, kind: str) -> None:
    nodes, peers = rig
    peer = peers[mode]
    for node in nodes:
        ev = wait_until(f"{node.name} to report the {mode} peer", partial(detected, node, peer, kind))
        assert not verify_evidence(ev, peer.info["vkey"])
        # nothing of it is served: no checkpoint it signed was ever fully verified
        assert log_info(node, peer.info["origin"])["size"] == 0


def test_endless_peer_is_marked_unhealthy(rig: Any) -> None:
    nodes, peers = rig
    origin = peers["endless"].info["origin"]

    def failing(node: ClusterNode) -> bool:
        metrics: str = get(node.url, "/metrics")
        return any(line.startswith("turtles_replication_errors_total") and origin in line and not line.endswith(" 0")
                   for line in metrics.splitlines())

    for node in nodes:
        wait_until(f"{node.name} to count errors for the endless peer", partial(failing, node))
        assert evidence(node, origin) == []


def test_honest_nodes_keep_mirroring_each_other(rig: Any) -> None:
    nodes, _ = rig
    for node in nodes:
        for other in nodes:
            if other is not node:
                wait_until(f"{node.name} to mirror {other.name}", partial(same_root, node, other))
        assert all(e["proven"] is False or e["origin"].endswith("mallory.example/log")
                   for e in get(node.url, "/v1/equivocations"))


def test_evidence_files_stand_alone(rig: Any, tmp_path: Path) -> None:
    nodes, peers = rig
    fork = peers["fork"]
    ev = wait_until("the fork evidence", lambda: detected(nodes[0], fork, "fork"))
    path = tmp_path / "evidence.json"
    path.write_text(ev.to_json())
    assert verify_evidence(Evidence.from_json(path.read_text()), fork.info["vkey"])
