"""Paths across chains: joins, endorsements (transitive trust), orgs, logs and policy rules."""

from __future__ import annotations

import json

import pytest

from ledger.errors import InputError
from ledger.trust import Explanation, Policy, explain
from tests.ledger.trust.world import P256, World, digest, kid, policy

AT = 10_000


def _codes(ex: Explanation) -> set[str]:
    return {r.code for p in ex.paths for r in p.reasons}


def _transitive_codes(ex: Explanation) -> set[str]:
    """Reasons of the candidates going through an endorsement (others start at libfoo's
    own root, which is no anchor)."""
    paths = [p for p in ex.paths if any(h.kind == "transitive" for h in p.hops)]
    assert paths
    assert all({r.code for r in p.reasons} == {"not_anchor"} for p in ex.paths if p not in paths)
    return {r.code for p in paths for r in p.reasons}


def _art(w: World, name: str, pol: Policy, purpose: str = "release") -> Explanation:
    return explain(w.graph, "sha256:" + digest(name), purpose=purpose, at=AT, policy=pol)


def _two_orgs() -> World:
    """acme (root 0) and libfoo (root 5, release key 6 attesting libfoo-1.0)."""
    w = World()
    w.root(0, "acme", ts=1)
    w.root(5, "libfoo", ts=1, origin="log.b")
    w.delegate(5, 6, ts=2, org="libfoo", artefacts=("libfoo-*",), origin="log.b")
    w.attest(6, "libfoo-1.0", ts=3, origin="log.b")
    return w


def test_root_anchor_alone() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    ex = explain(w.graph, kid(0), purpose="release", at=AT, policy=policy(("acme", 0)))
    assert ex.trusted and ex.trust == "delegated" and ex.kind == "key"
    assert [h.kind for h in ex.paths[0].hops] == ["root"]


def test_a_root_that_is_not_an_anchor_is_rejected() -> None:
    w = _two_orgs()
    ex = _art(w, "libfoo-1.0", policy(("acme", 0)))
    assert not ex.trusted and _codes(ex) == {"not_anchor"}


def test_anchor_pinned_for_another_org_is_rejected() -> None:
    w = _two_orgs()
    ex = _art(w, "libfoo-1.0", policy(("acme", 5)))
    assert _codes(ex) == {"not_anchor"} and "declares org 'libfoo'" in ex.paths[0].reasons[0].message


def test_anchor_purposes_limit_what_it_is_trusted_for() -> None:
    w = _two_orgs()
    pol = policy(("libfoo", 5, ("build",)))
    assert _codes(_art(w, "libfoo-1.0", pol)) == {"anchor_purpose"}


def test_software_root_rejected_when_hsm_required_and_named_weakest_otherwise() -> None:
    w = World()
    w.root(0, "acme", ts=1, hsm=False)
    w.delegate(0, 1, ts=2)
    w.attest(1, "app", ts=3)
    assert _codes(_art(w, "app", policy(("acme", 0)))) == {"hsm"}
    ex = _art(w, "app", policy(("acme", 0), require_hsm_root=False))
    assert ex.trusted and ex.weakest_link is not None
    assert (ex.weakest_link.criterion, ex.weakest_link.hop) == ("software_root", 0)


def test_cross_org_delegation_is_a_marked_join() -> None:
    w = _two_orgs()
    w.delegate(0, 6, ts=4, org="libfoo", artefacts=("libfoo-*",))  # acme delegates to libfoo's key
    w.attest(6, "libfoo-2.0", ts=5, origin="log.b")
    ex = _art(w, "libfoo-2.0", policy(("acme", 0)))
    assert ex.trusted and ex.trust == "delegated"
    hop = ex.paths[0].hops[1]
    assert (hop.kind, hop.join, hop.org_from, hop.org_to) == ("delegated", True, "acme", "libfoo")
    assert ex.weakest_link is not None and ex.weakest_link.criterion == "join"
    assert ex.paths[0].hops[2].org_from == "libfoo" and not ex.paths[0].hops[2].join


def test_a_delegation_without_org_keeps_the_issuers_org() -> None:
    w = _two_orgs()
    w.delegate(0, 6, ts=4, org="libfoo", artefacts=("libfoo-*",), purposes=("delegate", "release"), max_depth=1)
    w.delegate(6, 7, ts=5, artefacts=("libfoo-*",))  # org nil: acts for libfoo, the issuer's org here
    w.attest(7, "libfoo-9.0", ts=6)
    ex = _art(w, "libfoo-9.0", policy(("acme", 0)))
    assert ex.trusted
    hops = ex.paths[0].hops
    assert [(h.org_from, h.org_to, h.join) for h in hops[1:3]] == [("acme", "libfoo", True), ("libfoo", "libfoo", False)]
    assert kid(7) in w.graph.org_keys("libfoo")


def test_endorsement_is_transitive_refused_by_default_accepted_with_one_hop() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2)
    ex = _art(w, "libfoo-1.0", policy(("acme", 0)))
    assert not ex.trusted and _transitive_codes(ex) == {"transitive"}
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=1))
    assert ex.trusted and ex.trust == "transitive"
    hops = ex.paths[0].hops
    assert [h.kind for h in hops] == ["root", "transitive", "root", "delegated", "attestation"]
    assert hops[1].join and (hops[1].org_from, hops[1].org_to) == ("acme", "libfoo")
    assert ex.weakest_link is not None and (ex.weakest_link.criterion, ex.weakest_link.hop) == ("transitive", 1)
    assert ex.paths[0].trust == "transitive"


def test_endorsement_logged_after_the_endorsed_orgs_releases_covers_them() -> None:
    w = _two_orgs()  # libfoo's delegation (ts 2) and release (ts 3) are logged first
    w.endorse(0, 5, org="libfoo", ts=50)
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=1))
    assert ex.trusted and ex.trust == "transitive", [r.to_dict() for p in ex.paths for r in p.reasons]
    assert [h.reliance_time for h in ex.paths[0].hops][:3] == [50, AT, 2]


def test_an_endorsement_is_judged_at_the_verification_time() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=50, not_after=AT - 1)
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=1))
    assert not ex.trusted and "expired" in _transitive_codes(ex)


def test_endorsement_purposes_narrow_what_the_endorsed_org_is_trusted_for() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2, purposes=("build",))
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=1))
    assert _transitive_codes(ex) == {"purpose"}


def test_endorsement_must_name_the_org_of_the_root_record() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="other", ts=2)
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=1))
    assert _transitive_codes(ex) == {"org_mismatch"}


def test_endorsement_of_a_key_without_root_record_is_ignored_with_a_note() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.endorse(0, 7, org="ghost", ts=2)
    ex = explain(w.graph, kid(7), purpose="release", at=AT, policy=policy(("acme", 0), max_transitive_hops=1))
    assert not ex.trusted and not ex.paths
    assert any("no root record" in n for n in ex.notes)


def test_delegated_path_preferred_over_transitive() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2)
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), ("libfoo", 5), max_transitive_hops=1))
    assert ex.trusted and ex.trust == "delegated"
    assert [p.trust for p in ex.accepted] == ["delegated", "transitive"]


def test_org_subject_means_its_roots() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2)
    ex = explain(w.graph, "libfoo", purpose="release", at=AT, policy=policy(("acme", 0), max_transitive_hops=1))
    assert ex.kind == "org" and ex.trusted and ex.trust == "transitive"
    assert ex.paths[0].hops[-1].to == kid(5)
    none = explain(w.graph, "nobody", purpose="release", at=AT, policy=policy(("acme", 0)))
    assert not none.trusted and any("no root record" in n for n in none.notes)


def test_endorsement_loops_terminate() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2)
    w.endorse(5, 0, org="acme", ts=2, origin="log.b")
    ex = _art(w, "libfoo-1.0", policy(("acme", 0), max_transitive_hops=4))
    assert ex.trusted and ex.trust == "transitive"
    assert any("cycle" in n for n in ex.notes)


def test_delegation_cycles_terminate() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=5)
    w.delegate(1, 2, ts=3, purposes=("delegate", "release"), max_depth=5)
    w.delegate(2, 1, ts=4, purposes=("delegate", "release"), max_depth=5)  # 1 -> 2 -> 1
    w.delegate(2, 2 + 1, ts=5, purposes=("delegate", "release"), max_depth=5)
    w.delegate(3, 2, ts=6, purposes=("delegate", "release"), max_depth=5)  # 2 -> 3 -> 2
    ex = explain(w.graph, kid(2), purpose="release", at=AT, policy=policy(("acme", 0)))
    assert ex.trusted and any("cycle" in n for n in ex.notes)
    assert all(len({h.to for h in p.hops}) == len(p.hops) for p in ex.paths)  # simple paths only


def test_a_record_held_by_two_logs_is_one_link() -> None:
    w = World()
    root = w.root(0, "acme", ts=1)
    d = w.delegate(0, 1, ts=2)
    w.copy(root, origin="log.b", ts=1)
    w.copy(d, origin="log.b", ts=2)
    ex = explain(w.graph, kid(1), purpose="release", at=AT, policy=policy(("acme", 0)))
    assert len(ex.paths) == 1 and ex.trusted


def test_equivocating_origin_loses_trust_unless_another_log_holds_the_record() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    d = w.delegate(0, 1, ts=2, origin="log.b")
    w.graph.mark_equivocating("log.b", "two checkpoints")
    ex = explain(w.graph, kid(1), purpose="release", at=AT, policy=policy(("acme", 0)))
    assert not ex.trusted and _codes(ex) == {"equivocating"}
    w.copy(d, origin="log.c", ts=3)
    ex = explain(w.graph, kid(1), purpose="release", at=AT, policy=policy(("acme", 0)))
    assert ex.trusted and ex.paths[0].hops[1].position.origin == "log.c"


def test_witness_quorum_and_fewest_witnesses() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, artefacts=("app",))
    w.attest(1, "app", ts=3)
    w.graph.set_witnessed("log.a", 2, frozenset({"w1", "w2"}))
    ex = _art(w, "app", policy(("acme", 0), witness_quorum=1))
    assert not ex.trusted and _codes(ex) == {"witness"} and ex.paths[0].reasons[0].hop == 2
    w.graph.set_witnessed("log.a", 3, frozenset({"w3"}))
    ex = _art(w, "app", policy(("acme", 0), witness_quorum=1))
    assert ex.trusted and ex.weakest_link is not None
    assert ex.weakest_link.criterion == "fewest_witnesses"
    assert [len(h.witnesses) for h in ex.paths[0].hops] == [3, 3, 1]
    assert _codes(_art(w, "app", policy(("acme", 0), witness_quorum=3))) == {"witness"}


def test_allowed_algorithms_and_weakest_algorithm() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, P256[0], ts=2, artefacts=("app",))
    w.attest(P256[0], "app", ts=3)
    ex = _art(w, "app", policy(("acme", 0), allowed_algorithms=("ed25519",)))
    assert _codes(ex) == {"algorithm"}
    ex = _art(w, "app", policy(("acme", 0)))
    assert ex.trusted and ex.weakest_link is not None
    assert (ex.weakest_link.criterion, ex.weakest_link.hop) == ("weakest_algorithm", 1)
    assert ex.paths[0].hops[2].alg == "p256"


def test_max_path_length() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    for i in range(5):
        w.delegate(i, i + 1, ts=2 + i, purposes=("delegate", "release"), max_depth=8)
    w.attest(5, "app", ts=10)
    ex = _art(w, "app", policy(("acme", 0)))
    assert ex.trusted and len(ex.paths[0].hops) == 7
    assert ex.weakest_link is not None and ex.weakest_link.criterion == "long_chain"
    assert ex.weakest_link.hop == 5
    short = _art(w, "app", policy(("acme", 0), max_path_length=6))
    assert not short.trusted and not short.paths
    assert any("longer than 6" in n for n in short.notes)


def test_widest_scope_and_soonest_expiry_and_exposure() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, artefacts=("*",))
    w.attest(1, "app", ts=3)
    ex = _art(w, "app", policy(("acme", 0)))
    assert ex.weakest_link is not None and (ex.weakest_link.criterion, ex.weakest_link.hop) == ("widest_scope", 1)
    w.delegate(0, 2, ts=2, artefacts=("app2",), not_after=AT + 5)
    w.attest(2, "app2", ts=3)
    w.delegate(0, 3, ts=2, artefacts=("app3",))
    w.attest(3, "app3", ts=3)
    ex = _art(w, "app2", policy(("acme", 0)))
    assert ex.weakest_link is not None and ex.weakest_link.criterion == "soonest_expiry"
    assert "expires first" in ex.weakest_link.why
    ex = _art(w, "app3", policy(("acme", 0)))
    assert ex.weakest_link is not None and (ex.weakest_link.criterion, ex.weakest_link.hop) == ("exposure", 2)


def test_diamond_gives_every_path_strongest_first() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=1, not_after=AT + 1)
    w.delegate(0, 2, ts=2, purposes=("delegate", "release"), max_depth=1, artefacts=("app*",))
    w.delegate(1, 3, ts=3, artefacts=("app*",))
    w.delegate(2, 3, ts=3, artefacts=("app*",))
    w.attest(3, "app", ts=4)
    ex = _art(w, "app", policy(("acme", 0)))
    assert len(ex.accepted) == 2
    assert [p.weakest.criterion for p in ex.accepted if p.weakest] == ["exposure", "soonest_expiry"]
    assert ex.accepted[0].hops[1].to == kid(2)
    assert [p.weakest.path for p in ex.paths if p.weakest] == [0, 1]


def test_attestation_signed_by_two_keys_gives_two_candidates() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2)
    w.attest([1, 2], "app", ts=3)
    ex = _art(w, "app", policy(("acme", 0)))
    assert ex.trusted and len(ex.paths) == 1  # key 2 has no chain at all
    assert ex.paths[0].hops[-1].from_key == kid(1)


def test_bounded_enumeration_is_reported() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    for i in range(1, 9):
        w.delegate(0, i, ts=2, purposes=("delegate", "release"), max_depth=2)
        w.delegate(i, 9, ts=3)
    ex = explain(w.graph, kid(9), purpose="release", at=AT, policy=policy(("acme", 0)), limit=3)
    assert ex.truncated and len(ex.paths) == 3 and ex.trusted


def test_subject_kind_resolution() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2)
    w.attest(1, "app", ts=3)
    pol = policy(("acme", 0))
    d = digest("app")
    assert explain(w.graph, kid(1), purpose="release", at=AT, policy=pol).kind == "key"
    assert explain(w.graph, "sha256:" + d, purpose="release", at=AT, policy=pol).kind == "artefact"
    assert explain(w.graph, d, purpose="release", at=AT, policy=pol).kind == "artefact"
    assert explain(w.graph, "acme", purpose="release", at=AT, policy=pol).kind == "org"
    forced = explain(w.graph, kid(1), purpose="release", at=AT, policy=pol, kind="artefact")
    assert forced.kind == "artefact" and not forced.trusted
    unknown = explain(w.graph, "sha256:" + "0" * 64, purpose="release", at=AT, policy=pol)
    assert unknown.kind == "key" and not unknown.trusted and unknown.notes
    with pytest.raises(InputError):
        explain(w.graph, "Not An Org!", purpose="release", at=AT, policy=pol)
    with pytest.raises(InputError):
        explain(w.graph, "acme", purpose="release", at=AT, policy=pol, kind="key")


def test_explanation_is_json_serialisable_with_every_hop_kind() -> None:
    w = _two_orgs()
    w.endorse(0, 5, org="libfoo", ts=2)
    w.rotate(6, 7, ts=3, origin="log.b")
    w.attest(7, "libfoo-3.0", ts=4, origin="log.b")
    w.root(8, "evil", ts=1)
    w.revoke(8, 7, ts=5)
    ex = _art(w, "libfoo-3.0", policy(("acme", 0), max_transitive_hops=1))
    assert ex.trusted
    kinds = {h.kind for p in ex.paths for h in p.hops}
    assert kinds == {"root", "transitive", "delegated", "rotation", "attestation"}
    doc = json.loads(json.dumps(ex.to_dict()))
    assert doc["trusted"] is True and doc["trust"] == "transitive"
    assert doc["paths"][0]["hops"][1]["kind"] == "transitive"
    assert doc["paths"][0]["hops"][-1]["names"] == ["libfoo-3.0"]
    assert doc["weakest_link"]["criterion"] == "transitive"
    assert doc["ignored_revocations"][0]["issuer"] == kid(8)
    assert doc["policy"]["trust"]["max_transitive_hops"] == 1
    assert len(doc["paths"][0]["hops"][0]["position"]["leaf_hash"]) == 64
