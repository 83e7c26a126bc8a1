"""Three real node processes: entries are mirrored and witnessed by every other node, every
node's view proves them, and a node killed with SIGKILL catches up after a restart."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

from ledger.checkpoint import (
    Checkpoint,
    cosigner_vkey,
    open_note,
    parse_verifier_key,
    split_note,
    verify_note,
)
from ledger.merkle import verify_consistency, verify_inclusion
from node.client import NodeClient
from node.cluster import ClusterNode, start_node, stop_node, wait_healthy, write_cluster
from tests.integration.conftest import checkpoint_of, get, log_info, wait_until
from tests.integration.malicious_peer import Org


def mirrored(nodes: list[ClusterNode], source: ClusterNode, size: int) -> bool:
    """Every other node holds ``source``'s log up to at least ``size`` under a signed checkpoint."""
    return all(log_info(n, source.origin)["size"] >= size for n in nodes if n is not source)


def prove(node: ClusterNode, source: ClusterNode, index: int) -> Checkpoint:
    """Check, on ``node``'s view of ``source``'s log, that entry ``index`` is proven included."""
    answer = get(node.url, "/v1/proofs/inclusion", origin=source.origin, index=index)
    cp = checkpoint_of(answer["checkpoint"], source.vkey)
    assert cp.size == answer["size"] and cp.root.hex() == answer["root"]
    entry = get(node.url, f"/v1/entries/{index}", origin=source.origin)
    verify_inclusion(bytes.fromhex(entry["leaf_hash"]), index, cp.size,
                     [bytes.fromhex(h) for h in answer["proof"]], cp.root)
    return cp


def attestations(node: ClusterNode, digest: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(node.url, f"/v1/artefacts/{digest}")["attestations"]
    return found


def cosigners(note: str, nodes: list[ClusterNode]) -> set[str]:
    keys = [parse_verifier_key(cosigner_vkey(n.origin, parse_verifier_key(n.vkey).public_raw)) for n in nodes]
    opened = verify_note(note, [parse_verifier_key(nodes[0].vkey), *keys])
    return {s.name for s in opened.signatures if s.verified and s.timestamp is not None}


def test_every_log_starts_with_its_hsm_root_and_log_key_delegation(cluster: list[ClusterNode]) -> None:
    for node in cluster:
        root = get(node.url, "/v1/entries/0")["record"]
        assert root["kind"] == "root" and root["hsm"] is True and root["org"] == node.org
        assert root["key"]["id"] == node.root_key_id
        deleg = get(node.url, "/v1/entries/1")["record"]
        assert deleg["kind"] == "delegation" and deleg["purposes"] == ["log"]
        assert deleg["issuer"] == node.root_key_id


def test_an_entry_is_mirrored_witnessed_and_proven_on_every_node(cluster: list[ClusterNode]) -> None:
    first = cluster[0]
    org = Org("acme")
    client = NodeClient(first.url, vkey=first.vkey)
    results = [client.submit(env) for env in org.records(["pkg-a@1", "pkg-b@1"])]
    last = results[-1]["index"]
    size = last + 1
    wait_until("the other nodes to mirror node1", lambda: mirrored(cluster, first, size))
    # the same entry, proven on each node's own view against node1's signed checkpoints
    for node in cluster:
        assert prove(node, first, last).size >= size
    # node1's served checkpoint gathers the others' cosignatures (witnessing)
    def witnessed() -> set[str] | None:
        note = get(first.url, "/checkpoint")
        cp = Checkpoint.parse(split_note(note)[0])
        names = cosigners(note, cluster)
        return names if cp.size >= size and names >= {n.origin for n in cluster[1:]} else None

    assert wait_until("node1's checkpoint to be cosigned by node2 and node3", witnessed)
    # the artefact is found through every node (the global graph holds mirrored records)
    digest = hashlib.sha256(b"pkg-a@1").hexdigest()
    for node in cluster:
        hits = wait_until(f"{node.name} to find the artefact", partial(attestations, node, digest))
        assert {h["origin"] for h in hits} == {first.origin}


def test_a_node_killed_with_sigkill_catches_up_after_restart(cluster: list[ClusterNode]) -> None:
    first, victim = cluster[0], cluster[2]
    before = log_info(victim, victim.origin)
    killed = stop_node(victim, kill=True)
    assert killed.pid is None
    org = Org("beta")
    client = NodeClient(first.url)
    for env in org.records([f"pkg-{i}@1" for i in range(6)]):
        client.submit(env)
    second_client = NodeClient(cluster[1].url)
    for env in Org("gamma").records(["pkg-g@1"]):
        second_client.submit(env)
    sizes = {n.origin: log_info(n, n.origin)["size"] for n in cluster[:2]}

    restarted = start_node(killed)
    cluster[2] = restarted
    write_cluster(Path(restarted.dir).parent, cluster)
    wait_healthy(restarted, timeout=30)
    after = log_info(restarted, restarted.origin)
    assert after["size"] == before["size"] and after["root"] == before["root"]  # its own log is intact

    def caught_up() -> bool:
        return all(log_info(restarted, o)["size"] >= s for o, s in sizes.items())

    wait_until("the restarted node to catch up", caught_up)
    for source in cluster[:2]:
        mine = log_info(restarted, source.origin)
        theirs: dict[str, Any] = get(source.url, "/v1/proofs/consistency", **{"from": mine["size"]})
        cp = checkpoint_of(get(source.url, "/checkpoint"), source.vkey)
        verify_consistency(mine["size"], cp.size, [bytes.fromhex(h) for h in theirs["proof"]],
                           bytes.fromhex(mine["root"]), cp.root)
        prove(restarted, source, mine["size"] - 1)
    assert get(restarted.url, "/v1/equivocations") == []
    note = get(restarted.url, "/checkpoint")
    assert checkpoint_of(note, restarted.vkey).size == after["size"]
    open_note(note, restarted.vkey)
