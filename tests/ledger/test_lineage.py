"""Artefact lineage (ledger.lineage.trace): DAGs across chains, and every way one goes wrong."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.attestation import Artefact, Attestation, make_statement
from ledger.errors import InputError
from ledger.lineage import trace
from ledger.trust import TrustGraph
from tests.ledger.orgs import Clock, Org, mirror, sha
from tests.ledger.trust.world import HookedAttestationIndex, World, policy


def art(name: str) -> Artefact:
    return Artefact(name, sha(name.encode()))


def test_a_dag_across_two_organisations_logs(acme: Org, beta: Org, clock: Clock) -> None:
    a_key, b_key = acme.chain(1)[-1], beta.chain(1)[-1]
    beta.attest(b_key, "lib@2", materials=[art("zlib@1")])
    acme.attest(a_key, "tool@1")
    app = acme.attest(a_key, "app@1", materials=[art("lib@2"), art("tool@1")])
    mirror(acme.holdings, beta)
    lin = trace(acme.holdings.graph, app, policy=acme.policy(beta), at=clock.later())
    assert [n.names for n in lin.nodes] == [("app@1",), ("lib@2",), ("tool@1",), ("zlib@1",)]
    status = {n.names[0]: n.status for n in lin.nodes}
    assert status == {"app@1": "trusted", "lib@2": "trusted", "tool@1": "trusted", "zlib@1": "missing"}
    lib = lin.node(sha(b"lib@2"))
    assert lib.depth == 1 and lib.verdict.org == "beta" and lib.verdict.signer == b_key.key_id
    assert lib.attestations[0].positions[0].origin == beta.origin  # followed into beta's log
    assert lin.node(app).verdict.org == "acme" and lin.node(app).verdict.root == acme.root.key_id
    assert {(e.parent, e.child) for e in lin.edges} == {
        (app, sha(b"lib@2")), (app, sha(b"tool@1")), (sha(b"lib@2"), sha(b"zlib@1"))}
    assert [(i.kind, i.digest) for i in lin.issues] == [("missing", sha(b"zlib@1"))]
    doc = json.loads(json.dumps(lin.to_dict()))
    assert doc["counts"] == {"trusted": 3, "missing": 1, "issue:missing": 1}
    assert doc["nodes"][0]["digest"] == "sha256:" + app


def test_untrusted_and_transitive_only_nodes_are_told_apart(tmp_path: Path, acme: Org, clock: Clock) -> None:
    gamma = Org(tmp_path, "gamma", clock=clock, delegate_log=False)
    rogue = Org(tmp_path, "rogue", clock=clock)
    try:
        acme.endorse("gamma", gamma.root, purposes=("log", "release"))
        gamma.delegate(gamma.root, gamma.log_key.public_key, globs=(gamma.origin,), purposes=("log",))
        gamma.attest(gamma.chain(1)[-1], "g@1")
        rogue.attest(rogue.chain(1)[-1], "r@1")
        app = acme.attest(acme.chain(1)[-1], "app@1", materials=[art("g@1"), art("r@1")])
        for o in (gamma, rogue):
            mirror(acme.holdings, o)
        lin = trace(acme.holdings.graph, app, policy=acme.policy(max_transitive_hops=1), at=clock.later())
        status = {n.names[0]: n.status for n in lin.nodes}
        assert status == {"app@1": "trusted", "g@1": "transitive", "r@1": "untrusted"}
        assert lin.node(sha(b"g@1")).trust == "transitive"
        assert lin.node(sha(b"r@1")).verdict.reasons  # says why
        strict = trace(acme.holdings.graph, app, policy=acme.policy(), at=clock.later())
        assert strict.node(sha(b"g@1")).status == "untrusted"
        structural = trace(acme.holdings.graph, app, policy=None, at=clock.later())
        assert structural.policy is None and structural.node(sha(b"r@1")).status == "trusted"
    finally:
        gamma.close()
        rogue.close()


def test_cycles_are_reported_and_not_followed(acme: Org, clock: Clock) -> None:
    k = acme.chain(1)[-1]
    a, b = sha(b"a@1"), sha(b"b@1")
    acme.attest(k, "a@1", materials=[art("b@1")])
    acme.attest(k, "b@1", materials=[art("a@1")])
    acme.attest(k, "self@1", materials=[art("self@1")])
    lin = trace(acme.holdings.graph, a, policy=acme.policy(), at=clock.later())
    assert [n.digest for n in lin.nodes] == [a, b]
    assert [(e.parent, e.child, e.cycle) for e in lin.edges] == [(a, b, False), (b, a, True)]
    assert [(i.kind, i.digest) for i in lin.issues] == [("cycle", a)]
    own = trace(acme.holdings.graph, sha(b"self@1"), policy=acme.policy(), at=clock.later())
    assert [e.cycle for e in own.edges] == [True] and own.issues[0].kind == "cycle"


def test_a_shared_material_is_one_node_with_two_edges(acme: Org, clock: Clock) -> None:
    k = acme.chain(1)[-1]
    acme.attest(k, "base@1")
    acme.attest(k, "left@1", materials=[art("base@1")])
    acme.attest(k, "right@1", materials=[art("base@1")])
    top = acme.attest(k, "top@1", materials=[art("left@1"), art("right@1")])
    lin = trace(acme.holdings.graph, top, policy=acme.policy(), at=clock.later())
    assert len(lin.nodes) == 4 and not lin.issues
    assert sum(e.child == sha(b"base@1") for e in lin.edges) == 2 and not any(e.cycle for e in lin.edges)


def test_conflicting_attestations_are_reported(acme: Org, clock: Clock) -> None:
    k1, k2 = acme.chain(1)[-1], acme.chain(1)[-1]
    d = acme.attest(k1, "app@1", b"app", materials=[art("lib@1")])
    acme.attest(k1, "app@1", b"app", materials=[art("evil@1")])
    acme.attest(k2, "app@1", b"app", materials=[art("lib@1"), art("x@1")])
    lin = trace(acme.holdings.graph, d, policy=acme.policy(), at=clock.later())
    conflicts = [i for i in lin.issues if i.kind == "conflict"]
    assert len(conflicts) == 1 and "materials and signers" in conflicts[0].message
    assert len(lin.node(d).attestations) == 3
    assert {e.child for e in lin.children(d)} == {sha(b"lib@1"), sha(b"evil@1"), sha(b"x@1")}


def test_other_signers_alone_conflict_but_corroboration_does_not(acme: Org, clock: Clock) -> None:
    k1, k2, k3 = (acme.chain(1)[-1] for _ in range(3))
    d = acme.attest(k1, "app@1", materials=[art("a@1"), art("b@1")])
    acme.attest(k2, "app@1", materials=[art("a@1"), art("b@1")])  # the same statement: corroborates
    lin = trace(acme.holdings.graph, d, policy=acme.policy(), at=clock.later())
    assert not [i for i in lin.issues if i.kind == "conflict"]
    assert lin.node(d).attestations[0].signers == tuple(sorted((k1.key_id, k2.key_id)))
    acme.attest(k3, "app@1", materials=[art("b@1"), art("a@1")])  # same materials, another statement
    lin = trace(acme.holdings.graph, d, policy=acme.policy(), at=clock.later())
    conflicts = [i for i in lin.issues if i.kind == "conflict"]
    assert len(conflicts) == 1 and "disagree on signers" in conflicts[0].message


def test_identical_attestations_by_one_signer_do_not_conflict(acme: Org, beta: Org, clock: Clock) -> None:
    k = acme.chain(1)[-1]
    d = acme.attest(k, "app@1")
    mirror(beta.holdings, acme)  # the same record held twice: one attestation, two positions
    lin = trace(beta.holdings.graph, d, policy=acme.policy(), at=clock.later())
    assert not [i for i in lin.issues if i.kind == "conflict"]
    (att,) = lin.node(d).attestations
    assert [p.origin for p in att.positions] == [acme.origin]


def test_depth_and_node_limits_are_reported(acme: Org, clock: Clock) -> None:
    k = acme.chain(1)[-1]
    acme.attest(k, "n5")
    for i in range(4, -1, -1):
        acme.attest(k, f"n{i}", materials=[art(f"n{i + 1}")])
    top = sha(b"n0")
    lin = trace(acme.holdings.graph, top, policy=acme.policy(), at=clock.later(), max_depth=2)
    assert [n.depth for n in lin.nodes] == [0, 1, 2]
    assert not lin.nodes[-1].expanded and [i.kind for i in lin.issues] == ["depth"]
    full = trace(acme.holdings.graph, top, policy=acme.policy(), at=clock.later())
    assert len(full.nodes) == 6 and not full.issues
    small = trace(acme.holdings.graph, top, policy=acme.policy(), at=clock.later(), max_nodes=3)
    assert len(small.nodes) == 3 and [i.kind for i in small.issues] == ["truncated"]
    with pytest.raises(InputError):
        trace(acme.holdings.graph, "nope", policy=None, at=clock.later())


def test_an_unattested_subject_is_one_missing_node(acme: Org, clock: Clock) -> None:
    lin = trace(acme.holdings.graph, "sha256:" + sha(b"?"), policy=acme.policy(), at=clock.later())
    assert [n.status for n in lin.nodes] == ["missing"] and lin.issues[0].kind == "missing"
    assert "the artefact itself" in lin.issues[0].message


# --- the per-trace memo never serves a stale verdict ---------------------------------------------


_Hooked = HookedAttestationIndex


def _chain_world(index: _Hooked) -> World:
    """root 0 -> key 1 -> key 2, which attested a chain app -> lib -> zlib -> base."""
    w = World(graph=TrustGraph(index))
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("build", "delegate", "release"), max_depth=1)
    w.delegate(1, 2, ts=3, purposes=("build", "release"))
    names = ["app@1", "lib@1", "zlib@1", "base@1"]
    for i, name in enumerate(names):
        mats = (art(names[i + 1]),) if i + 1 < len(names) else ()
        w.log(Attestation.from_payload(make_statement(subject=art(name), materials=mats)), [2], ts=10 + i)
    return w


def test_a_revocation_after_a_trace_changes_the_next_trace() -> None:
    w = _chain_world(_Hooked())
    top, pol = sha(b"app@1"), policy(("acme", 0))
    assert {n.status for n in trace(w.graph, top, policy=pol, at=100).nodes} == {"trusted"}
    w.revoke(1, 2, ts=50)
    assert {n.status for n in trace(w.graph, top, policy=pol, at=100).nodes} == {"untrusted"}


def test_a_revocation_during_a_trace_counts_for_the_nodes_judged_after_it() -> None:
    index = _Hooked()
    w = _chain_world(index)
    top, pol = sha(b"app@1"), policy(("acme", 0))
    index.hooks[sha(b"zlib@1")] = lambda: w.revoke(1, 2, ts=50)  # read before zlib is judged
    lin = trace(w.graph, top, policy=pol, at=100)
    assert [n.status for n in lin.nodes] == ["trusted", "trusted", "untrusted", "untrusted"]
    assert "revoked" in lin.node(sha(b"zlib@1")).verdict.reasons[0]


# --- against a naive reference, on random graphs ----------------------------------------------


def _reference(materials: dict[int, list[int]], start: int, max_depth: int) -> tuple[set[int], set[tuple[int, int]]]:
    """Nodes reached within ``max_depth`` (BFS), and the edges back to an ancestor (recursive DFS)."""
    depth = {start: 0}
    q = deque([start])
    while q:
        n = q.popleft()
        if depth[n] >= max_depth:
            continue
        for m in materials.get(n, []):
            if m not in depth:
                depth[m] = depth[n] + 1
                q.append(m)
    back: set[tuple[int, int]] = set()
    done: set[int] = set()

    def dfs(n: int, path: list[int]) -> None:
        done.add(n)
        if depth[n] >= max_depth:
            return
        for m in dict.fromkeys(materials.get(n, [])):
            if m in path:
                back.add((n, m))
            elif m not in done:
                dfs(m, [*path, m])

    dfs(start, [start])
    return set(depth), back


@settings(max_examples=25, deadline=None)
@given(
    edges=st.dictionaries(st.integers(0, 11), st.lists(st.integers(0, 11), max_size=4), max_size=12),
    max_depth=st.integers(0, 6),
)
def test_trace_matches_a_naive_reference(edges: dict[int, list[int]], max_depth: int) -> None:
    w = World()
    w.root(0, "acme")
    w.delegate(0, 1, ts=1, purposes=("build", "release"))
    for i, mats in edges.items():
        stmt = make_statement(subject=art(f"n{i}"), materials=tuple(art(f"n{m}") for m in mats))
        w.log(Attestation.from_payload(stmt), [1], ts=2)
    lin = trace(w.graph, sha(b"n0"), policy=policy(("acme", 0)), at=10, max_depth=max_depth)
    want_nodes, want_back = _reference(edges, 0, max_depth)
    by_digest = {sha(f"n{i}".encode()): i for i in range(12)}
    assert {by_digest[n.digest] for n in lin.nodes} == want_nodes
    assert {(by_digest[e.parent], by_digest[e.child]) for e in lin.edges if e.cycle} == want_back
    for node in lin.nodes:
        assert node.status == ("trusted" if by_digest[node.digest] in edges else "missing")
