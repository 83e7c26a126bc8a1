"""admit(): the append-time check, each rule and the error that names signer and rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.attestation import Artefact, Attestation, make_statement
from ledger.entry import Record
from ledger.errors import ExpiredError, NotAdmittedError, RevokedError, ScopeError
from ledger.records import Delegation, Endorsement, Revocation, RootRecord, Rotation
from ledger.trust import RootsPolicy, admit
from ledger.trust.admission import SignerPaths
from tests.ledger.trust.world import POOL, World, digest, kid

AT = 10_000
ANY = RootsPolicy.any_self_signed()


def _admit(w: World, record: Record, *signers: int, at: int = AT, roots: RootsPolicy = ANY) -> None:
    admit(w.graph, record=record, signers=tuple(kid(i) for i in signers), origin="log.a", at=at, roots_policy=roots)


def _root(i: int, org: str = "acme") -> RootRecord:
    return RootRecord(org, POOL[i].public_key, True, 0)


def _deleg(issuer: int, subject: int, purposes: tuple[str, ...] = ("release",)) -> Delegation:
    return Delegation(kid(issuer), POOL[subject].public_key, "k", "acme", ("*",), purposes, 0, 0, None, 0)


def _att(name: str) -> Attestation:
    return Attestation.from_payload(make_statement(subject=Artefact(name, digest(name))))


def _world() -> World:
    """acme root 0; 1 may delegate (depth 1); 2 may release 'app-*'; 3 builds."""
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=1)
    w.delegate(1, 2, ts=3, artefacts=("app-*",))
    w.delegate(0, 3, ts=4, purposes=("build",))
    w.delegate(0, 4, ts=5, purposes=("log",))
    return w


# --- roots -------------------------------------------------------------------------------


def test_self_signed_root_is_admitted_by_any() -> None:
    _admit(World(), _root(0), 0)


def test_root_must_be_self_signed() -> None:
    with pytest.raises(NotAdmittedError, match="not self-signed") as e:
        _admit(World(), _root(0), 1)
    assert e.value.rule == "self_signed" and e.value.signer == kid(0)  # type: ignore[attr-defined]


def test_roots_policy_by_key_and_by_org() -> None:
    only = RootsPolicy.only_keys([kid(0)])
    _admit(World(), _root(0), 0, roots=only)
    with pytest.raises(NotAdmittedError, match="roots policy") as e:
        _admit(World(), _root(1), 1, roots=only)
    assert e.value.rule == "roots_policy"  # type: ignore[attr-defined]
    orgs = RootsPolicy.only_orgs(["acme"])
    _admit(World(), _root(1, "acme"), 1, roots=orgs)
    with pytest.raises(NotAdmittedError):
        _admit(World(), _root(1, "other"), 1, roots=orgs)
    assert not RootsPolicy().allows(_root(0))


def test_a_key_cannot_be_the_root_of_two_orgs() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    _admit(w, _root(0, "acme"), 0)  # the same declaration again is the log's duplicate
    with pytest.raises(NotAdmittedError, match="already the root") as e:
        _admit(w, _root(0, "other"), 0)
    assert e.value.rule == "one_org_per_root"  # type: ignore[attr-defined]


# --- delegations and endorsements --------------------------------------------------------


def test_delegation_by_root_or_delegating_key() -> None:
    w = _world()
    _admit(w, _deleg(0, 7), 0)
    _admit(w, _deleg(1, 7), 1)


def test_delegation_needs_the_issuer_signature() -> None:
    with pytest.raises(NotAdmittedError, match="must be signed by") as e:
        _admit(_world(), _deleg(0, 7), 1)
    assert e.value.rule == "required_signer" and e.value.signer == kid(0)  # type: ignore[attr-defined]


def test_delegation_by_an_unrooted_key() -> None:
    with pytest.raises(NotAdmittedError, match="neither a root nor") as e:
        _admit(_world(), _deleg(9, 7), 9)
    assert type(e.value) is NotAdmittedError and e.value.rule == "rooted"  # type: ignore[attr-defined]


def test_delegation_by_a_key_without_delegate_purpose() -> None:
    with pytest.raises(ScopeError, match="may not delegate: it does not hold") as e:
        _admit(_world(), _deleg(2, 7), 2)
    assert e.value.signer == kid(2) and e.value.rule == "may_delegate"  # type: ignore[attr-defined]


def test_delegation_beyond_depth() -> None:
    w = _world()
    w.delegate(1, 5, ts=6, purposes=("delegate", "release"), max_depth=3)  # effective depth 0
    with pytest.raises(ScopeError, match="has no delegation depth left"):
        _admit(w, _deleg(5, 7), 5)


def test_endorsement_by_root_or_delegating_key_only() -> None:
    w = _world()
    e = Endorsement(kid(0), "libfoo", kid(9), ("release",), 0, None, 0)
    _admit(w, e, 0)
    e2 = Endorsement(kid(2), "libfoo", kid(9), ("release",), 0, None, 0)
    with pytest.raises(ScopeError, match="may not endorse"):
        _admit(w, e2, 2)


def test_endorsement_grants_no_right_to_write() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.endorse(0, 9, org="libfoo", ts=2)
    with pytest.raises(NotAdmittedError):
        _admit(w, _deleg(9, 7), 9)  # 9 has no root record in this log


# --- revocations and rotations -----------------------------------------------------------


def test_revocation_by_self_or_above() -> None:
    w = _world()
    _admit(w, Revocation(kid(2), kid(2), None, "lost", 0), 2)
    _admit(w, Revocation(kid(1), kid(2), None, "x", 0), 1)
    _admit(w, Revocation(kid(0), kid(2), 5, "x", 0), 0)


def test_revocation_by_a_sibling_is_refused() -> None:
    with pytest.raises(NotAdmittedError, match="neither the target nor above") as e:
        _admit(_world(), Revocation(kid(3), kid(2), None, "x", 0), 3)
    assert e.value.rule == "revoke_above"  # type: ignore[attr-defined]


def test_rotation_needs_both_signatures_and_a_valid_old_key() -> None:
    w = _world()
    rot = Rotation(kid(2), POOL[7].public_key, 0)
    _admit(w, rot, 2, 7)
    with pytest.raises(NotAdmittedError, match=f"must be signed by {kid(7)}"):
        _admit(w, rot, 2)
    w.revoke(1, 2, ts=100)
    with pytest.raises(RevokedError) as e:
        _admit(w, rot, 2, 7)
    assert e.value.signer == kid(2) and e.value.rule == "revoked"  # type: ignore[attr-defined]


def test_rotated_away_key_may_not_write() -> None:
    w = _world()
    w.rotate(2, 7, ts=100)
    with pytest.raises(RevokedError, match="handed over"):
        _admit(w, _att("app-1"), 2)
    _admit(w, _att("app-1"), 7)


# --- attestations ------------------------------------------------------------------------


def test_attestation_in_scope() -> None:
    w = _world()
    _admit(w, _att("app-1"), 2)
    _admit(w, _att("anything"), 3)  # build, '*'
    _admit(w, _att("app-1"), 9, 2)  # one acceptable signer is enough


def test_attestation_out_of_glob_names_signer_and_artefact() -> None:
    with pytest.raises(ScopeError, match="not delegated for artefact 'lib-1'") as e:
        _admit(_world(), _att("lib-1"), 2)
    assert e.value.signer == kid(2) and e.value.rule == "attest_scope"  # type: ignore[attr-defined]


def test_attestation_by_a_log_only_key() -> None:
    with pytest.raises(ScopeError, match="neither 'release' nor 'build'"):
        _admit(_world(), _att("app-1"), 4)


def test_attestation_by_an_expired_key() -> None:
    w = _world()
    w.delegate(0, 6, ts=6, not_after=100)
    _admit(w, _att("x"), 6, at=100)
    with pytest.raises(ExpiredError, match=r"expired at 1970-01-01T00:00:00.100Z") as e:
        _admit(w, _att("x"), 6, at=101)
    assert e.value.rule == "expired"  # type: ignore[attr-defined]


def test_attestation_by_a_revoked_key_from_since() -> None:
    w = _world()
    w.revoke(1, 2, ts=50, since=60)
    _admit(w, _att("app-1"), 2, at=59)
    with pytest.raises(RevokedError):
        _admit(w, _att("app-1"), 2, at=60)


def test_attestation_with_no_signer() -> None:
    with pytest.raises(NotAdmittedError, match="no verified signer"):
        _admit(_world(), _att("app-1"))


def test_attestation_by_unknown_key() -> None:
    with pytest.raises(NotAdmittedError, match="neither a root nor"):
        _admit(_world(), _att("app-1"), 9)


def test_admission_terminates_on_cycles() -> None:
    w = _world()
    w.delegate(1, 5, ts=6, purposes=("delegate", "release"), max_depth=1)
    w.delegate(5, 1, ts=7, purposes=("delegate", "release"), max_depth=1)  # 1 <-> 5
    _admit(w, _att("app-1"), 2)
    _admit(w, _att("x"), 5)


# --- the signer-path memo (SignerPaths) --------------------------------------------------

_NAMES = ("app-1", "lib-2", "x")
_edges = st.lists(
    st.tuples(st.integers(0, 6), st.integers(1, 7), st.sampled_from([("release",), ("build",), ("delegate", "release"),
                                                                     ("log",)]),
              st.sampled_from([("*",), ("app-*",), ("lib-*", "x")]), st.integers(0, 2),
              st.sampled_from([None, 40, 80])),
    min_size=1, max_size=12,
)


def _outcome(w: World, record: Record, signers: tuple[int, ...], at: int, memo: SignerPaths | None) -> str:
    try:
        admit(w.graph, record=record, signers=tuple(kid(i) for i in signers), origin="log.a", at=at,
              roots_policy=ANY, memo=memo)
    except NotAdmittedError as e:
        return f"{type(e).__name__}: {e.message} {e.rule}"  # type: ignore[attr-defined]
    return "admitted"


@settings(max_examples=60, deadline=None)
@given(_edges, st.lists(st.tuples(st.integers(1, 7), st.integers(0, 60)), max_size=3))
def test_the_memo_never_changes_an_answer(
    edges: list[tuple[int, int, tuple[str, ...], tuple[str, ...], int, int | None]],
    revocations: list[tuple[int, int]],
) -> None:
    w = World()
    w.root(0, "acme", ts=1)
    for n, (issuer, subject, purposes, globs, depth, until) in enumerate(edges):
        if issuer != subject:
            w.delegate(issuer, subject, ts=n + 2, purposes=purposes, artefacts=globs, max_depth=depth,
                       not_after=until)
    for target, since in revocations:
        w.revoke(target, target, ts=30, since=since)
    memo = SignerPaths()
    for at in (50, 50, 90):  # the memo is reused across records at one time, then a new time
        for signer in range(8):
            for names in ((n,) for n in _NAMES):
                att = Attestation.from_payload(make_statement(subject=Artefact(names[0], digest(names[0]))))
                assert _outcome(w, att, (signer,), at, memo) == _outcome(w, att, (signer,), at, None)


def test_log_gate_forgets_remembered_paths_when_a_key_record_arrives() -> None:
    from ledger.holdings import LogGate

    w = _world()
    gate = LogGate(ANY)
    for rec in w.records:
        gate.add(rec)
    gate.admit(record=_att("app-1"), signers=(kid(2),), origin="log.a", at=AT)  # remembered: 2 may attest
    w.revoke(1, 2, ts=AT - 1)
    gate.add(w.records[-1])
    with pytest.raises(RevokedError):
        gate.admit(record=_att("app-2"), signers=(kid(2),), origin="log.a", at=AT)
