"""Validity windows, revocation and rotation at their exact boundaries (log time, closed)."""

from __future__ import annotations

from ledger.records import Delegation
from ledger.trust import Explanation, explain
from tests.ledger.trust.world import POOL, World, digest, kid, policy

AT = 10_000
POLICY = policy(("acme", 0))


def _codes(ex: Explanation) -> set[str]:
    return {r.code for p in ex.paths for r in p.reasons}


def _art(w: World, name: str, at: int = AT) -> Explanation:
    return explain(w.graph, "sha256:" + digest(name), purpose="release", at=at, policy=POLICY)


def _key(w: World, i: int, at: int = AT, purpose: str = "release") -> Explanation:
    return explain(w.graph, kid(i), purpose=purpose, at=at, policy=POLICY)


def _base(**window: int | None) -> World:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=10, purposes=("delegate", "release"), max_depth=2, **window)  # type: ignore[arg-type]
    return w


# --- windows ---------------------------------------------------------------------------


def test_window_is_closed_at_not_after() -> None:
    w = _base(not_after=100)
    w.attest(1, "at-edge", ts=100)
    w.attest(1, "after", ts=101)
    ok = _art(w, "at-edge")
    assert ok.trusted
    assert ok.paths[0].hops[1].expired_now  # valid when relied upon, expired at AT
    assert ok.weakest_link is not None and ok.weakest_link.criterion == "soonest_expiry"
    assert "expired at" in ok.weakest_link.why
    late = _art(w, "after")
    assert not late.trusted and _codes(late) == {"expired"}


def test_window_is_closed_at_not_before() -> None:
    w = _base(not_before=50)
    w.attest(1, "early", ts=49)
    w.attest(1, "at-edge", ts=50)
    assert _art(w, "at-edge").trusted
    assert _codes(_art(w, "early")) == {"not_yet_valid"}


def test_the_window_of_every_link_must_contain_the_time_of_the_record_below() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=10, purposes=("delegate", "release"), max_depth=1, not_after=100)
    w.delegate(1, 2, ts=20)  # integrated inside 1's window, no expiry of its own
    w.attest(2, "app", ts=500)  # long after 1 expired: 2's link was created in time
    assert _art(w, "app").trusted
    w.delegate(1, 3, ts=101)  # created after 1 expired
    w.attest(3, "app3", ts=102)
    assert _codes(_art(w, "app3")) == {"expired"}


def test_a_key_subject_is_judged_at_the_verification_time() -> None:
    w = _base(not_after=100)
    assert _key(w, 1, at=100).trusted
    ex = _key(w, 1, at=101)
    assert not ex.trusted and _codes(ex) == {"expired"}


def test_a_link_logged_after_the_record_relying_on_it_does_not_back_it() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.attest(1, "app", ts=5)
    w.delegate(0, 1, ts=6)  # backdated window (not_before 0) but integrated later
    ex = _art(w, "app")
    assert not ex.trusted and _codes(ex) == {"not_integrated"}


def test_an_attestation_integrated_after_at_is_not_trusted_yet() -> None:
    w = _base()
    w.attest(1, "app", ts=500)
    assert _art(w, "app", at=500).trusted
    assert _codes(_art(w, "app", at=499)) >= {"not_integrated"}


# --- revocation --------------------------------------------------------------------------


def test_revocation_since_keeps_earlier_records_and_cuts_from_since_inclusive() -> None:
    w = _base()
    w.attest(1, "before", ts=99)
    w.attest(1, "at-since", ts=100)
    w.revoke(0, 1, ts=200, since=100)
    assert _art(w, "before").trusted
    ex = _art(w, "at-since")
    assert not ex.trusted and _codes(ex) == {"revoked"}
    reason = ex.paths[0].reasons[0]
    assert reason.evidence is not None and reason.evidence.ts == 200 and reason.hop == 1
    assert ex.weakest_link is not None and ex.weakest_link.criterion == "revoked"


def test_revocation_without_since_cuts_everything() -> None:
    w = _base()
    w.attest(1, "old", ts=20)
    w.revoke(0, 1, ts=200)
    assert _codes(_art(w, "old")) == {"revoked"}
    assert _codes(_key(w, 1)) == {"revoked"}


def test_revocation_cuts_the_subtree_until_redelegated_from_below() -> None:
    w = _base()
    w.delegate(1, 2, ts=20)
    w.attest(2, "app", ts=30)
    assert _art(w, "app").trusted
    w.revoke(0, 1, ts=40)  # entirely: 1's delegation to 2 is gone too
    assert _codes(_art(w, "app")) == {"revoked"}
    assert not _key(w, 2).trusted
    w.delegate(0, 3, ts=50, purposes=("delegate", "release"), max_depth=2)  # new key from the layer below
    w.delegate(3, 2, ts=60)
    w.attest(2, "app2", ts=70)
    assert _key(w, 2).trusted
    ex = _art(w, "app2")
    assert ex.trusted and [h.to for h in ex.paths[0].hops[:3]] == [kid(0), kid(3), kid(2)]
    assert any(r.code == "revoked" for p in ex.rejected for r in p.reasons)  # the old path is listed
    assert _codes(_art(w, "app")) == {"revoked", "not_integrated"}  # app predates the new link


def test_revocation_since_keeps_the_subtree_signed_before() -> None:
    w = _base()
    w.delegate(1, 2, ts=20)
    w.revoke(0, 1, ts=40, since=30)
    w.attest(2, "app", ts=50)
    assert _art(w, "app").trusted  # 1 signed 2's delegation at 20 < 30
    w.delegate(1, 3, ts=35)
    w.attest(3, "app3", ts=36)
    assert _codes(_art(w, "app3")) == {"revoked"}


def test_self_revocation_counts() -> None:
    w = _base()
    w.revoke(1, 1, ts=20, since=15)
    assert _codes(_key(w, 1)) == {"revoked"}


def test_revocation_by_an_unrelated_key_is_ignored_and_reported() -> None:
    w = _base()
    w.root(5, "evil", ts=2)
    w.revoke(5, 1, ts=20)
    ex = _key(w, 1)
    assert ex.trusted
    assert [(r.issuer, r.target) for r in ex.ignored_revocations] == [(kid(5), kid(1))]
    assert "neither" in ex.ignored_revocations[0].why


def test_revocation_by_a_non_anchored_issuer_that_delegated_the_key_is_ignored() -> None:
    w = _base()
    w.root(5, "evil", ts=2)
    w.delegate(5, 1, ts=3, org="evil")  # anyone can "delegate" to a key ...
    w.revoke(5, 1, ts=20)  # ... but that gives no right to revoke it under this policy
    ex = _key(w, 1)
    assert ex.trusted and len(ex.ignored_revocations) == 1


def test_revocation_by_an_ancestor_on_another_path_counts() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=2)
    w.delegate(0, 2, ts=2, purposes=("delegate", "release"), max_depth=2)
    w.delegate(1, 3, ts=3)
    w.delegate(2, 3, ts=3)
    assert len(_key(w, 3).accepted) == 2  # a diamond: two paths
    w.revoke(2, 3, ts=10)
    ex = _key(w, 3)
    assert not ex.trusted and _codes(ex) == {"revoked"} and len(ex.paths) == 2


def test_revoking_a_root_since_t_keeps_what_it_signed_before() -> None:
    w = _base()
    w.revoke(0, 0, ts=20, since=15)
    assert _key(w, 1).trusted  # delegated at 10 < 15
    assert _codes(_key(w, 0)) == {"revoked"}


def test_revoking_a_root_entirely_cuts_all_below() -> None:
    w = _base()
    w.revoke(0, 0, ts=20)
    assert _codes(_key(w, 1)) == {"revoked"}
    assert _codes(_key(w, 0)) == {"revoked"}


# --- rotation ----------------------------------------------------------------------------


def test_rotation_passes_the_position_to_the_new_key_from_its_time() -> None:
    w = _base()
    w.attest(1, "by-old-before", ts=49)
    w.rotate(1, 2, ts=50)
    w.attest(2, "by-new-at", ts=50)
    w.attest(1, "by-old-at", ts=50)
    assert _art(w, "by-old-before").trusted
    ex = _art(w, "by-new-at")
    assert ex.trusted
    hops = ex.paths[0].hops
    assert [h.kind for h in hops] == ["root", "delegated", "rotation", "attestation"]
    assert hops[2].from_key == kid(1) and hops[2].to == kid(2)
    assert hops[2].scope == hops[1].scope  # the position passes unchanged
    assert _codes(_art(w, "by-old-at")) == {"rotated"}
    assert _key(w, 2).trusted and _codes(_key(w, 1)) == {"rotated"}


def test_the_new_key_is_not_valid_before_the_rotation() -> None:
    w = _base()
    w.attest(2, "early", ts=40)
    w.rotate(1, 2, ts=50)
    assert _codes(_art(w, "early")) == {"not_integrated"}


def test_a_second_rotation_of_the_same_key_is_refused() -> None:
    w = _base()
    w.rotate(1, 2, ts=50)
    w.rotate(1, 3, ts=60)
    assert _key(w, 2).trusted
    assert _codes(_key(w, 3)) == {"rotated"}  # 1 was already handed over at 50


def test_root_rotation_keeps_the_anchor() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.rotate(0, 4, ts=5)
    w.delegate(4, 1, ts=6)
    w.delegate(0, 2, ts=7)  # the old root signs after the rotation: invalid
    w.attest(1, "app", ts=8)
    ex = _art(w, "app")
    assert ex.trusted
    assert [h.kind for h in ex.paths[0].hops] == ["root", "rotation", "delegated", "attestation"]
    assert ex.paths[0].hops[1].scope.root  # a root position may delegate
    assert _codes(_key(w, 2)) == {"rotated"}


def test_a_revoked_old_key_cannot_rotate() -> None:
    w = _base()
    w.revoke(0, 1, ts=40, since=40)
    w.rotate(1, 2, ts=50)
    assert _codes(_key(w, 2)) == {"revoked"}


# --- log time, not claimed time; no rollback ---------------------------------------------


def test_claimed_creation_times_are_ignored() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    d = Delegation(kid(0), POOL[1].public_key, "k", None, ("*",), ("release",), 0, 0, 50, created=10)
    w.log(d, [0], ts=60)  # claims creation at 10, but the log integrated it after its window
    w.attest(1, "app", ts=61)
    assert _codes(_art(w, "app")) == {"expired"}


def test_replaying_old_records_does_not_undo_a_revocation() -> None:
    w = _base()
    d = w.delegate(1, 2, ts=20)
    w.revoke(0, 2, ts=30)
    w.copy(d, origin="log.mirror")  # the same delegation again, from a mirror
    w.copy(w.records[1], origin="log.mirror")  # and 1's delegation
    ex = _key(w, 2)
    assert not ex.trusted and _codes(ex) == {"revoked"}


def test_rotation_signed_by_the_new_key_only_is_not_a_link() -> None:
    w = _base()
    w.rotate(1, 2, ts=50, signers=[2])
    assert w.graph.stats()["skipped"] == 1
    assert not _key(w, 2).paths
    assert _key(w, 1).trusted  # and it does not end the old key either
