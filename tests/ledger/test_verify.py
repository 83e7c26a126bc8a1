"""Verdicts for artefacts (ledger.verify): real keys, real LevelDB logs, real proofs.

The organisations, clock and witness keys come from ``tests/ledger/orgs.py`` (shared with
the bundle, lineage and interop tests); the fixtures from ``tests/ledger/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bundle import build_bundle
from ledger.checkpoint import add_signatures, cosign, cosigner_vkey, note_signer
from ledger.errors import ExpiredError, ScopeError
from ledger.keys import SoftwareSigner
from ledger.verify import verify_bundle, verify_held
from tests.ledger.orgs import DAY, Clock, Org, WitnessKey, mirror, sha

# --- the trusted path ------------------------------------------------------------------------


def test_a_five_hop_chain_is_trusted_with_every_link_explicit_and_proven(acme: Org, clock: Clock) -> None:
    keys = acme.chain(3)
    digest = acme.attest(keys[-1], "app@1.0", b"app")
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert v.trusted and v.trust == "delegated" and v.exit_code == 0 and v.reasons == ()
    links = v.links()
    assert [lk.hop.kind for lk in links] == ["attestation", "delegated", "delegated", "delegated", "root"]
    assert links[0].hop.to == "sha256:" + digest and links[0].hop.from_key == keys[-1].key_id
    assert links[-1].hop.to == acme.root.key_id and links[-1].hop.hsm is True
    size = acme.log.size
    for lk in links:
        assert lk.inclusion is not None and lk.inclusion.tree_size == size
        assert lk.inclusion.root == acme.log.root_at(size)
        assert lk.log is not None and lk.log.basis == "delegated"
    assert v.weakest_link is not None and v.weakest_link.criterion
    assert [g.origin for g in v.logs] == [acme.origin] and "anchored root" in v.logs[0].why
    d = v.to_dict()
    assert d["trusted"] and d["path"][0]["kind"] == "attestation"
    assert all(h["inclusion"]["verified"] for h in d["path"])


def test_an_artefact_nobody_attested_is_not_trusted(acme: Org, clock: Clock) -> None:
    v = verify_held(acme.holdings, sha(b"nothing"), policy=acme.policy(), at=clock.later())
    assert not v.trusted and v.exit_code == 1 and "no attestation" in v.reasons[0]


def test_a_root_the_policy_does_not_anchor_is_not_trusted(acme: Org, beta: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    v = verify_held(acme.holdings, digest, policy=beta.policy(), at=clock.later())
    assert not v.trusted and v.exit_code == 1
    assert any("not an anchor" in r or "not trusted" in r for r in v.reasons)


def test_a_signer_outside_its_scope_is_not_trusted(acme: Org, beta: Org, clock: Clock) -> None:
    maint = SoftwareSigner.generate()
    acme.delegate(acme.root, maint.public_key, globs=("lib-*",), org="beta")
    acme.delegate(acme.root, beta.log_key.public_key, globs=(beta.origin,), purposes=("log",), org="beta")
    beta.delegate(beta.root, maint.public_key)  # beta's log admits anything from maint
    inside, outside = beta.attest(maint, "lib-z@1"), beta.attest(maint, "app@1.0")
    mirror(beta.holdings, acme)
    policy = acme.policy(purposes=("release",))
    assert verify_held(beta.holdings, inside, policy=policy, at=clock.later()).trusted
    v = verify_held(beta.holdings, outside, policy=policy, at=clock.later())
    assert not v.trusted and any("outside the scope" in r for r in v.reasons)
    with pytest.raises(ScopeError):  # and acme's own log refuses such an attestation outright
        acme.attest(maint, "app@1.0")


# --- log keys: pinned, delegated, or not trusted ------------------------------------------------


def test_a_log_key_without_a_log_delegation_is_not_trusted_unless_pinned(tmp_path: Path, clock: Clock) -> None:
    org = Org(tmp_path, "solo", clock=clock, delegate_log=False)
    try:
        digest = org.attest(org.chain(1)[-1], "app@1.0")
        v = verify_held(org.holdings, digest, policy=org.policy(), at=clock.later())
        assert not v.trusted
        assert v.logs[0].basis == "untrusted" and "not pinned" in v.logs[0].why
        assert any("is not trusted" in r for r in v.reasons)
        assert all(lk.inclusion is None for lk in v.links())
        pinned = verify_held(org.holdings, digest, policy=org.policy(), at=clock.later(),
                             pinned_logs={org.origin: org.vkey})
        assert pinned.trusted and pinned.logs[0].basis == "pinned"
        other = Org(tmp_path, "other", clock=clock)
        wrong = verify_held(org.holdings, digest, policy=org.policy(), at=clock.later(),
                            pinned_logs={org.origin: other.vkey.replace(other.origin, org.origin, 1)})
        other.close()
        assert not wrong.trusted and wrong.logs[0].basis == "untrusted"
    finally:
        org.close()


def test_a_log_delegation_must_cover_the_origin(tmp_path: Path, clock: Clock) -> None:
    org = Org(tmp_path, "narrow", clock=clock, delegate_log=False)
    try:
        org.delegate(org.root, org.log_key.public_key, globs=("elsewhere/*",), purposes=("log",))
        digest = org.attest(org.chain(1)[-1], "app@1.0")
        v = verify_held(org.holdings, digest, policy=org.policy(), at=clock.later())
        assert not v.trusted and "does not cover origin" in v.logs[0].why
    finally:
        org.close()


def test_a_revoked_log_key_is_not_trusted(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    acme.revoke(acme.root, acme.log_key)
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert not v.trusted and v.logs[0].basis == "untrusted"


# --- revocation, expiry (T7) ---------------------------------------------------------------------


def test_revocation_logged_after_the_attestation_cuts_it_entirely(acme: Org, clock: Clock) -> None:
    keys = acme.chain(2)
    digest = acme.attest(keys[-1], "app@1.0")
    assert verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later()).trusted
    acme.revoke(acme.root, keys[1])
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert not v.trusted and any("revoked" in r for r in v.reasons)


def test_revocation_since_a_later_time_keeps_earlier_records(acme: Org, clock: Clock) -> None:
    keys = acme.chain(1)
    digest = acme.attest(keys[-1], "app@1.0")
    acme.revoke(acme.root, keys[-1], since=clock.later(1000))
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later(5000))
    assert v.trusted


@pytest.mark.parametrize(("offset", "trusted"), [(0, False), (1, True)])
def test_a_revocation_since_the_attestations_own_time_applies_closed_interval(
    acme: Org, clock: Clock, offset: int, trusted: bool
) -> None:
    """T7: ``since`` is inclusive -- a record integrated exactly at ``since`` is cut."""
    keys = acme.chain(1)
    digest = acme.attest(keys[-1], "app@1.0")
    ts = acme.log.entry(acme.log.size - 1).ts
    acme.revoke(acme.root, keys[-1], since=ts + offset)
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert v.trusted is trusted


def test_an_expired_delegation_does_not_back_later_records(acme: Org, clock: Clock) -> None:
    k = SoftwareSigner.generate()
    acme.delegate(acme.root, k.public_key, not_after=clock.later(10))
    clock.t += 100
    with pytest.raises(ExpiredError):
        acme.attest(k, "app@1.0")


# --- cross-organisation chains, joins, transitive trust ------------------------------------------


def test_a_chain_across_two_logs_is_trusted_with_the_join_marked(acme: Org, beta: Org, clock: Clock) -> None:
    maint = SoftwareSigner.generate()
    acme.delegate(acme.root, maint.public_key, org="beta")  # acme vouches for a beta maintainer
    acme.delegate(acme.root, beta.log_key.public_key, globs=(beta.origin,), purposes=("log",), org="beta")
    beta.delegate(beta.root, maint.public_key)
    digest = beta.attest(maint, "lib@2.0")
    mirror(beta.holdings, acme)
    policy = acme.policy(purposes=("release",))
    alone = verify_held(beta.holdings, digest, policy=policy, at=clock.later(), pinned_logs={})
    assert alone.trusted, alone.reasons
    v = alone
    hops = v.links()
    assert hops[0].inclusion is not None and hops[0].inclusion.origin == beta.origin
    assert hops[1].inclusion is not None and hops[1].inclusion.origin == acme.origin
    assert any(lk.hop.join for lk in hops)
    assert {g.origin for g in v.logs} == {acme.origin, beta.origin}


def test_transitive_trust_needs_the_policy_to_allow_it(tmp_path: Path, acme: Org, clock: Clock) -> None:
    beta = Org(tmp_path, "beta", clock=clock, delegate_log=False)
    try:
        # the endorsement includes "log", so that beta's log key is trusted transitively too
        acme.endorse("beta", beta.root, purposes=("log", "release"))
        beta.delegate(beta.root, beta.log_key.public_key, globs=(beta.origin,), purposes=("log",))
        digest = beta.attest(beta.chain(1)[-1], "lib@2.0")
        mirror(beta.holdings, acme)
        strict = verify_held(beta.holdings, digest, policy=acme.policy(), at=clock.later())
        assert not strict.trusted and strict.logs[1].basis == "untrusted"  # beta's log: only transitively
        loose = verify_held(beta.holdings, digest, policy=acme.policy(max_transitive_hops=1), at=clock.later())
        assert loose.trusted and loose.trust == "transitive"
        assert [lk.hop.kind for lk in loose.links()][-3:] == ["root", "transitive", "root"]
        assert {g.origin: g.basis for g in loose.logs} == {acme.origin: "delegated", beta.origin: "delegated"}
    finally:
        beta.close()


# --- logs trusted because a trusted log's node witnessed them ------------------------------------


def _node_cosign(witness: Org, note: str, at: int) -> str:
    """``witness``'s node cosigns ``note`` as it does for the logs it mirrors (its origin, its log key)."""
    text = note[: note.index("\n\n") + 1]
    line = cosign(text, witness.origin, note_signer(witness.origin, witness.log_key).signer, at // 1000)
    return add_signatures(note, [line])


def _cross_org_release(acme: Org, beta: Org) -> str:
    """acme (the anchor) delegates to a beta maintainer, who releases in beta's own log;
    acme never delegates beta's log key."""
    maint = SoftwareSigner.generate()
    acme.delegate(acme.root, maint.public_key, org="beta")
    beta.delegate(beta.root, maint.public_key)
    digest = beta.attest(maint, "lib@3.0")
    mirror(beta.holdings, acme)
    return digest


def test_a_log_is_trusted_when_a_trusted_logs_node_witnessed_it(tmp_path: Path, acme: Org, clock: Clock) -> None:
    beta = Org(tmp_path, "beta", clock=clock, delegate_log=False)
    try:
        digest = _cross_org_release(acme, beta)
        policy = acme.policy(purposes=("release",))
        at = clock.later()
        plain = verify_bundle(build_bundle(beta.holdings, digest), digest, policy=policy, at=at)
        assert not plain.trusted
        assert {g.origin: g.basis for g in plain.logs}[beta.origin] == "untrusted"
        acme_witness = cosigner_vkey(acme.origin, acme.log_key.public_key.raw)
        notes = {beta.origin: _node_cosign(acme, beta.log.checkpoint(), at)}
        bundle = build_bundle(beta.holdings, digest, notes=notes, witnesses=[acme_witness])
        witnessed = verify_bundle(bundle, digest, policy=policy, at=at)
        assert witnessed.trusted, witnessed.reasons
        assert {g.origin: g.basis for g in witnessed.logs} == {acme.origin: "delegated", beta.origin: "witnessed"}
        # a cosignature by a key that is no trusted log's witness key proves nothing
        stranger = WitnessKey(acme.origin)
        forged = {beta.origin: stranger.cosign(beta.log.checkpoint(), at // 1000)}
        bundle = build_bundle(beta.holdings, digest, notes=forged, witnesses=[stranger.vkey])
        assert not verify_bundle(bundle, digest, policy=policy, at=at).trusted
    finally:
        beta.close()


def test_trusted_logs_witnesses_count_toward_the_quorum(tmp_path: Path, acme: Org, clock: Clock) -> None:
    beta = Org(tmp_path, "beta", clock=clock, delegate_log=False)
    try:
        digest = _cross_org_release(acme, beta)
        at = clock.later()
        policy = acme.policy(purposes=("release",), witness_quorum=1)
        witnesses = [cosigner_vkey(o.origin, o.log_key.public_key.raw) for o in (acme, beta)]
        one_way = {beta.origin: _node_cosign(acme, beta.log.checkpoint(), at)}
        v = verify_bundle(build_bundle(beta.holdings, digest, notes=one_way, witnesses=witnesses), digest,
                          policy=policy, at=at)
        assert not v.trusted  # acme's own records are covered by no witness
        assert v.explanation is not None
        assert any(r.code == "witness" for path in v.explanation.paths for r in path.reasons)
        both = {**one_way, acme.origin: _node_cosign(beta, acme.log.checkpoint(), at)}
        v = verify_bundle(build_bundle(beta.holdings, digest, notes=both, witnesses=witnesses), digest,
                          policy=policy, at=at)
        assert v.trusted, v.reasons
        assert {g.origin: g.counted_witnesses for g in v.logs} == {acme.origin: (beta.origin,),
                                                                   beta.origin: (acme.origin,)}
    finally:
        beta.close()


# --- witnesses and freshness (W5) ---------------------------------------------------------------


def test_witness_quorum_counts_only_trusted_cosigners(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    w = WitnessKey()
    at = clock.later()
    note = w.cosign(acme.log.checkpoint(), at // 1000)
    bundle = build_bundle(acme.holdings, digest, notes={acme.origin: note}, witnesses=[w.vkey])
    policy = acme.policy(witness_quorum=1)
    untrusted = verify_bundle(bundle, digest, policy=policy, at=at)
    assert not untrusted.trusted and any("witness" in r for r in untrusted.reasons)
    assert [c.name for c in untrusted.logs[0].cosignatures] == [w.name]
    trusted = verify_bundle(bundle, digest, policy=policy, at=at, witnesses=[w.vkey])
    assert trusted.trusted and trusted.logs[0].counted_witnesses == (w.name,)
    assert trusted.evidence_time == (at // 1000) * 1000


def test_a_cosignature_from_the_future_rejects_the_bundle(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    w = WitnessKey()
    at = clock.later()
    note = w.cosign(acme.log.checkpoint(), at // 1000 + 3600)
    bundle = build_bundle(acme.holdings, digest, notes={acme.origin: note}, witnesses=[w.vkey])
    v = verify_bundle(bundle, digest, policy=acme.policy(), at=at, witnesses=[w.vkey])
    assert not v.trusted and "bundle rejected" in v.reasons[0] and "dated" in v.reasons[0]


def test_stale_evidence_is_reported_as_a_freeze(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    bundle = build_bundle(acme.holdings, digest)
    fresh = verify_bundle(bundle, digest, policy=acme.policy(), at=clock.later(1000), max_age=DAY)
    assert fresh.trusted
    stale = verify_bundle(bundle, digest, policy=acme.policy(), at=clock.later(3 * DAY), max_age=DAY)
    assert not stale.trusted and "freeze" in stale.reasons[-1]


def test_unknown_cosignatures_are_dropped_when_bundling(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    stranger = WitnessKey("stranger.example")
    note = stranger.cosign(acme.log.checkpoint(), clock.later() // 1000)
    bundle = build_bundle(acme.holdings, digest, notes={acme.origin: note})
    assert "stranger" not in bundle.logs[0].checkpoint and bundle.witnesses == ()
    assert verify_bundle(bundle, digest, policy=acme.policy(), at=clock.later()).trusted


def test_the_verdict_names_the_artefact_it_was_asked_about(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    bundle = build_bundle(acme.holdings, digest)
    v = verify_bundle(bundle, sha(b"tampered"), policy=acme.policy(), at=clock.later())
    assert not v.trusted and "not this artefact" in v.reasons[0]
    with pytest.raises(Exception, match="sha256"):
        verify_bundle(bundle, "not-a-digest", policy=acme.policy(), at=clock.later())
