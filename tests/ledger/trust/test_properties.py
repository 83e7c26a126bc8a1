"""Property tests on random graphs (Hypothesis), checked against the naive reference.

* Every accepted path is valid under the reference model: no verdict trusts a path with a
  revoked, rotated, expired, not-yet-valid, out-of-scope or over-depth link.
* Without truncation, the accepted paths are exactly the reference's valid chains.
* Adding an endorsement never creates delegated trust.
* impact() predicts exactly what the revocation it describes does.
* Evaluating a chain resumed from another path's shared prefix equals evaluating it whole.
* Every query terminates on cyclic graphs, within its bounds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import NotAdmittedError
from ledger.keys import KeyId
from ledger.trust import Explanation, Policy, RootsPolicy, admit, explain, impact
from ledger.trust.context import Link, Query, Rules
from ledger.trust.evaluate import Prefix, evaluate, evaluate_extended
from ledger.trust.explain import explain_with
from ledger.trust.memo import QueryMemo
from ledger.trust.search import chains_to_artefact, chains_to_key
from tests.ledger.trust.reference import Reference, signature
from tests.ledger.trust.world import World, digest, kid, policy

KEYS = list(range(9))  # 0: acme root, 1: libfoo root
ISSUERS = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8]  # biased towards roots: chains get deep
SUBJECTS = [2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 0, 1]
ORGS = ("acme", "libfoo")
NAMES = ("app-1", "lib-2", "zzz")
GLOBS = ("*", "app*", "lib*", "app-1", "[al]*")
PURPOSES = ("build", "delegate", "release")
AT = 100
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ts = st.integers(1, 90)
_window = st.tuples(st.sampled_from([0, 0, 20, 50]), st.sampled_from([None, None, 40, 70, 200]))
_purposes = st.sets(st.sampled_from(PURPOSES), min_size=1).map(lambda s: tuple(sorted(s)))
_op = st.one_of(
    st.tuples(st.just("delegate"), _ts, st.sampled_from(ISSUERS), st.sampled_from(SUBJECTS),
              st.sets(st.sampled_from(GLOBS), min_size=1), _purposes, st.integers(0, 3), _window,
              st.sampled_from(ORGS)),
    st.tuples(st.just("endorse"), _ts, st.sampled_from(ISSUERS), st.sampled_from([0, 1]),
              _purposes, _window, st.sampled_from(ORGS)),
    st.tuples(st.just("revoke"), _ts, st.sampled_from(ISSUERS), st.sampled_from(SUBJECTS),
              st.sampled_from([None, 10, 30, 60])),
    st.tuples(st.just("rotate"), _ts, st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("attest"), _ts, st.sampled_from(SUBJECTS), st.sampled_from(NAMES)),
)


@dataclass
class Case:
    world: World
    policy: Policy


def _build(ops: list[tuple[Any, ...]], hsm: tuple[bool, bool]) -> World:
    w = World()
    w.root(0, "acme", ts=0, hsm=hsm[0])
    w.root(1, "libfoo", ts=0, hsm=hsm[1])
    for op in sorted(ops, key=lambda o: o[1]):  # a log's clock never goes back
        kind, ts = op[0], op[1]
        if kind == "delegate":
            _, _, i, s, globs, purposes, depth, (nb, na), org = op
            if i != s:
                w.delegate(i, s, ts=ts, artefacts=tuple(globs), purposes=purposes, max_depth=depth,
                           not_before=nb, not_after=na if na is None or na >= nb else nb, org=org)
        elif kind == "endorse":
            _, _, e, r, purposes, (nb, na), org = op
            if e != r:
                w.endorse(e, r, org=org, ts=ts, purposes=purposes, not_before=nb,
                          not_after=na if na is None or na >= nb else nb)
        elif kind == "revoke":
            w.revoke(op[2], op[3], ts=ts, since=op[4])
        elif kind == "rotate":
            if op[2] != op[3]:
                w.rotate(op[2], op[3], ts=ts)
        else:
            w.attest(op[2], op[3], ts=ts)
    return w


cases = st.builds(
    lambda ops, hsm, pin_libfoo, hops, hsm_req, length: Case(
        _build(ops, hsm),
        policy(("acme", 0), *([("libfoo", 1)] if pin_libfoo else []), max_transitive_hops=hops,
               require_hsm_root=hsm_req, max_path_length=length),
    ),
    st.lists(_op, min_size=8, max_size=30),
    st.tuples(st.booleans(), st.booleans()),
    st.booleans(),
    st.integers(0, 2),
    st.booleans(),
    st.integers(3, 8),
)


def _subjects() -> list[tuple[str, str]]:
    return [("key", kid(i)) for i in KEYS] + [("artefact", "sha256:" + digest(n)) for n in NAMES]


def _check_against_reference(ex: Explanation, ref: Reference, kind: str, subject: str, purpose: str | None) -> None:
    chains = ref.chains_to_key(subject) if kind == "key" else ref.chains_to_artefact(subject[7:])
    valid = {signature(c) for c in chains if not ref.faults(c, purpose)}
    accepted = {tuple((h.kind, h.position.origin, h.position.index) for h in p.hops) for p in ex.accepted}
    assert accepted <= valid, f"trusted a path the reference rejects: {accepted - valid}"
    if not ex.truncated:
        assert accepted == valid, f"missed valid paths: {valid - accepted}"
        assert len(ex.paths) == len(chains)
    for p in ex.accepted:
        for h in p.hops:
            assert h.not_after is None or h.reliance_time <= h.not_after
            assert h.not_before is None or h.reliance_time >= h.not_before
            assert h.position.ts <= h.reliance_time
            assert h.scope.depth is None or h.scope.depth >= 0


@SETTINGS
@given(cases, st.sampled_from(["release", "build", "delegate"]))
def test_verdicts_match_the_naive_reference(case: Case, purpose: str) -> None:
    ref = Reference(case.world.records, case.policy, AT)
    for kind, subject in _subjects():
        ex = explain(case.world.graph, subject, purpose=purpose, at=AT, policy=case.policy,
                     kind=kind, limit=400)  # type: ignore[arg-type]
        _check_against_reference(ex, ref, kind, subject, purpose)
        assert ex.trusted == bool(ex.accepted)
        assert ex.trusted == (ex.weakest_link is not None and ex.paths[0].accepted)


@SETTINGS
@given(cases)
def test_open_rules_match_the_naive_reference(case: Case) -> None:
    """The structural rules of admission and impact (every root an anchor, any purpose)."""
    ref = Reference(case.world.records, None, AT)
    rules = Rules.open(max_transitive_hops=36)
    for kind, subject in _subjects():
        ex = explain_with(case.world.graph, subject, rules=rules, purpose=None, at=AT, kind=kind, limit=400)  # type: ignore[arg-type]
        _check_against_reference(ex, ref, kind, subject, None)


@SETTINGS
@given(cases)
def test_evaluation_resumed_from_a_shared_prefix_equals_a_full_one(case: Case) -> None:
    q = Query(case.world.graph, Rules.from_policy(case.policy), AT)
    for _, subject in _subjects():
        paths = [evaluate(q, c, purpose="release") for c in _chains(q, subject)]
        chains = [tuple(Link(h.kind, h.record, h.from_key, h.to) for h in p.hops if h.record) for p in paths]
        for chain, full in zip(chains, paths, strict=True):
            for other in paths:
                assert evaluate(q, chain, purpose="release", reuse=other) == full


@SETTINGS
@given(cases, st.sampled_from([None, 20]))
def test_one_memo_shared_by_many_questions_changes_no_answer(case: Case, limit: int | None) -> None:
    """Explanations (notes and ignored revocations included) and paths evaluated with one
    memo shared by every question of a call, and through a judged prefix, equal the ones
    computed alone."""
    g = case.world.graph
    for rules in (Rules.from_policy(case.policy), Rules.open(max_transitive_hops=36)):
        memo = QueryMemo(g, rules, AT)
        for purpose in ("release", "build", None):
            for kind, subject in _subjects() + _subjects()[::-1]:  # twice, the second time from the memo
                kw: dict[str, Any] = {"rules": rules, "purpose": purpose, "at": AT, "kind": kind}
                if limit is not None:
                    kw["limit"] = limit
                assert explain_with(g, subject, memo=memo, **kw).to_dict() == explain_with(g, subject, **kw).to_dict()
        q, alone = Query(g, rules, AT, memo=memo), Query(g, rules, AT)
        for _, subject in _subjects():
            for chain in _chains(alone, subject):
                assert evaluate(q, chain, purpose="release") == evaluate(alone, chain, purpose="release")
                if len(chain) > 1 and chain[-2].kind != "transitive":
                    prefix = Prefix(q, chain[:-1], "release")
                    assert evaluate_extended(q, prefix, chain[-1]) == evaluate(alone, chain, purpose="release")


def _chains(q: Query, subject: str) -> list[tuple[Link, ...]]:
    fresh = q.fresh(limit=400)
    if subject.startswith("sha256:") and q.graph.attestations_for(subject):
        chains_to_artefact(fresh, subject[7:])
    else:
        chains_to_key(fresh, KeyId(subject))
    return fresh.chains


@SETTINGS
@given(cases, st.sampled_from(KEYS), st.sampled_from([0, 1]), _purposes, st.integers(1, 99))
def test_an_endorsement_never_creates_delegated_trust(
    case: Case, endorser: int, root: int, purposes: tuple[str, ...], ts: int
) -> None:
    def delegated(ex: Explanation) -> set[tuple[tuple[str, int], ...]]:
        return {tuple((h.position.origin, h.position.index) for h in p.hops)
                for p in ex.accepted if p.trust == "delegated"}

    g = case.world.graph
    before = {s: explain(g, s, purpose="release", at=AT, policy=case.policy, kind=k, limit=400)  # type: ignore[arg-type]
              for k, s in _subjects()}
    if endorser != root:
        case.world.endorse(endorser, root, org=ORGS[root], ts=ts, purposes=purposes)
    for k, s in _subjects():
        after = explain(g, s, purpose="release", at=AT, policy=case.policy, kind=k, limit=400)  # type: ignore[arg-type]
        if not before[s].truncated and not after.truncated:
            assert delegated(after) <= delegated(before[s])
        if before[s].trust != "delegated":
            assert after.trust != "delegated"


@SETTINGS
@given(cases, st.sampled_from(KEYS[2:]), st.sampled_from([None, 20, 50]))
def test_impact_predicts_what_the_revocation_does(case: Case, target: int, since: int | None) -> None:
    g = case.world.graph
    im = impact(g, kid(target), at=AT, since=since)
    rules = Rules.open(max_transitive_hops=36)
    case.world.revoke(target, target, ts=95, since=since)  # a key may always revoke itself
    for item in im.items:
        ex = explain_with(g, item.subject, rules=rules, purpose=None, at=AT, kind=item.kind)
        assert ex.trusted == (not item.loses_trust), item
        if item.alternative is not None:
            assert kid(target) not in {h.to for h in item.alternative.hops if h.reliance_time >= (since or 0)}


cyclic = st.lists(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(KEYS), st.integers(0, 3), st.booleans()),
    min_size=10, max_size=40,
)


@settings(max_examples=30, deadline=None)
@given(cyclic, st.integers(1, 3))
def test_queries_terminate_on_cyclic_graphs(edges: list[tuple[int, int, int, bool]], hops: int) -> None:
    w = World()
    w.root(0, "acme", ts=0)
    w.root(1, "libfoo", ts=0)
    for n, (a, b, depth, endorse) in enumerate(edges):
        if a == b:
            continue
        if endorse and b in (0, 1):
            w.endorse(a, b, org=ORGS[b], ts=n + 1, purposes=("delegate", "release"))
        else:
            w.delegate(a, b, ts=n + 1, purposes=("delegate", "release"), max_depth=depth)
    pol = policy(("acme", 0), max_transitive_hops=hops, max_path_length=8)
    for i in KEYS:
        ex = explain(w.graph, kid(i), purpose="release", at=AT, policy=pol, limit=64)
        assert len(ex.paths) <= 64
        for p in ex.paths:
            keys = [h.to for h in p.hops if not (h.kind == "root" and p.hops.index(h) > 0)]
            assert len(keys) == len(set(keys)) and len(p.hops) <= 8
        im = impact(w.graph, kid(i), at=AT, limit=50)
        assert len(im.items) <= 50
        with contextlib.suppress(NotAdmittedError):
            admit(w.graph, record=w.records[-1].record, signers=(kid(i),), origin="log.a", at=AT,
                  roots_policy=RootsPolicy.any_self_signed())
