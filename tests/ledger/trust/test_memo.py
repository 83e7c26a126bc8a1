"""The per-call memo (ledger.trust.memo) never changes an answer, and forgets what a change
of the graph makes stale: a revocation, a new record, an equivocation, within a call too."""

from __future__ import annotations

import pytest

from ledger.keys import KeyId
from ledger.trust import Rules, TrustGraph, explain_with, impact
from ledger.trust.memo import QueryMemo
from tests.ledger.trust.world import HookedAttestationIndex, World, digest, kid, policy

AT = 1_000


def _world(graph: TrustGraph | None = None) -> World:
    """acme root 0 -> team 1 (may delegate) -> releaser 2, which attested app@1..app@3."""
    w = World() if graph is None else World(graph=graph)
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=1)
    w.delegate(1, 2, ts=3)
    for i in (1, 2, 3):
        w.attest(2, f"app@{i}", ts=10 + i)
    return w


def _rules() -> Rules:
    return Rules.from_policy(policy(("acme", 0)))


def test_the_graph_version_grows_with_every_change_that_can_alter_an_answer() -> None:
    w = _world()
    g = w.graph
    v = g.version
    rec = w.attest(2, "app@4", ts=20)
    assert g.version == v + 1
    assert not g.add(rec) and g.version == v + 1  # a duplicate changes nothing
    g.mark_equivocating("log.b", "evidence")
    assert g.version == v + 2
    g.mark_equivocating("log.b", "other evidence")
    assert g.version == v + 2
    g.set_witnessed("log.a", 3, {"w1"})
    assert g.version == v + 3
    g.set_witnessed("log.a", 2, {"w1"})  # coverage only grows: nothing new
    assert g.version == v + 3


def test_a_memo_forgets_what_a_revocation_changes() -> None:
    w = _world()
    rules = _rules()
    memo = QueryMemo(w.graph, rules, AT)
    subjects = [(digest("app@1"), "artefact"), (kid(2), "key")]
    for subject, kind in subjects:
        assert explain_with(w.graph, subject, rules=rules, purpose="release", at=AT, kind=kind, memo=memo).trusted  # type: ignore[arg-type]
    w.revoke(1, 2, ts=30)  # after the memo answered
    for subject, kind in reversed(subjects):  # the key first: no attestation read to notice the change
        cached = explain_with(w.graph, subject, rules=rules, purpose="release", at=AT, kind=kind, memo=memo)  # type: ignore[arg-type]
        fresh = explain_with(w.graph, subject, rules=rules, purpose="release", at=AT, kind=kind)  # type: ignore[arg-type]
        assert not cached.trusted
        assert cached.to_dict() == fresh.to_dict()


def test_a_memo_sees_new_attestations_and_new_equivocations() -> None:
    w = _world()
    rules = _rules()
    memo = QueryMemo(w.graph, rules, AT)
    d = digest("late@1")
    assert not explain_with(w.graph, d, rules=rules, purpose="release", at=AT, kind="artefact", memo=memo).trusted
    assert memo.attestations_for(d) == ()
    w.attest(2, "late@1", ts=40)
    assert len(memo.attestations_for(d)) == 1
    assert explain_with(w.graph, d, rules=rules, purpose="release", at=AT, kind="artefact", memo=memo).trusted
    w.graph.mark_equivocating("log.a", "two views")
    after = explain_with(w.graph, d, rules=rules, purpose="release", at=AT, kind="artefact", memo=memo)
    assert not after.trusted
    assert after.to_dict() == explain_with(w.graph, d, rules=rules, purpose="release", at=AT, kind="artefact").to_dict()


def test_a_memo_is_for_one_graph_rules_and_time() -> None:
    w = _world()
    rules = _rules()
    memo = QueryMemo(w.graph, rules, AT)
    for graph, r, at in ((TrustGraph(), rules, AT), (w.graph, Rules.open(max_transitive_hops=0), AT),
                         (w.graph, rules, AT + 1)):
        with pytest.raises(ValueError, match="memo"):
            explain_with(graph, kid(2), rules=r, purpose="release", at=at, kind="key", memo=memo)


def test_a_memo_starts_again_past_its_bound() -> None:
    w = _world()
    rules = _rules()
    memo = QueryMemo(w.graph, rules, AT, max_entries=2)
    for i in (1, 2, 3):
        d = digest(f"app@{i}")
        with_memo = explain_with(w.graph, d, rules=rules, purpose="release", at=AT, kind="artefact", memo=memo)
        assert with_memo.to_dict() == explain_with(w.graph, d, rules=rules, purpose="release", at=AT,
                                                   kind="artefact").to_dict()


_Hooked = HookedAttestationIndex


def test_impact_sees_a_revocation_made_during_the_call() -> None:
    index = _Hooked()
    w = _world(TrustGraph(index))
    before = impact(w.graph, kid(1), at=AT)
    assert {i.subject for i in before.lost} >= {"sha256:" + digest(f"app@{i}") for i in (1, 2, 3)}
    # the revocation lands while app@2 is read: app@1 was judged before it, app@2 and app@3 after
    index.hooks[digest("app@2")] = lambda: w.revoke(1, 2, ts=30)
    during = impact(w.graph, kid(1), at=AT)
    lost = {i.subject for i in during.lost}
    assert "sha256:" + digest("app@1") in lost
    assert not lost & {"sha256:" + digest("app@2"), "sha256:" + digest("app@3")}
    assert during.already_untrusted == 2
    after = impact(w.graph, kid(1), at=AT)  # a new call: everything below 2 is untrusted now
    assert after.to_dict()["already_untrusted"] == 4  # key 2 and its three artefacts


def test_impact_answers_change_after_a_revocation() -> None:
    w = _world()
    first = impact(w.graph, KeyId(kid(1)), at=AT)
    w.revoke(0, 1, ts=30)
    second = impact(w.graph, KeyId(kid(1)), at=AT)
    assert first.lost and not second.items and second.already_untrusted == len(first.items)
