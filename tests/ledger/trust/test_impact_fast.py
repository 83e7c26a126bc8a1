"""impact(): the fast paths give the answer the earlier algorithm gave, field by field.

The earlier algorithm is kept in :mod:`tests.ledger.trust.impact_before`; the graphs are the
random ones of :mod:`tests.ledger.trust.test_properties` (delegations with windows and
orgs, endorsements, revocations with and without ``since``, rotations, one artefact name
attested by many signers). Each example also grows the graph after a first answer (a
revocation of a key below the target, then a rotation) and compares again, so nothing
computed for one graph is reused for another.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.trust import Policy, impact
from tests.ledger.trust.impact_before import impact_before
from tests.ledger.trust.test_properties import AT, KEYS, ORGS, SETTINGS, Case, cases
from tests.ledger.trust.world import World, kid, policy

# a hierarchy (root 0 -> teams 2, 3 -> signers 4-8, some also below root 1) whose
# signers attest many artefacts, some attested by several signers: the impact of a key
# above them judges most artefacts on the signer chain cached for its first one
_NAMES = tuple(f"app-{i}" for i in range(12)) + tuple(f"lib-{i}" for i in range(4))
_SIGNERS = (4, 5, 6, 7, 8)
_signer = st.tuples(
    st.sampled_from([2, 2, 3, 3, 1]), st.sampled_from(["*", "*", "app*", "lib*"]),
    st.sampled_from([("release",), ("build", "release"), ("build",)]),
    st.sampled_from([(0, None), (0, None), (0, None), (0, 50), (20, None)]),
    st.lists(st.tuples(st.integers(31, 90), st.sampled_from(_NAMES)), min_size=1, max_size=6),
    st.sampled_from([None, None, *ORGS]),
)
_extra = st.one_of(
    st.tuples(st.just("join"), st.sampled_from([1, 2, 3]), st.sampled_from(_SIGNERS), st.sampled_from(ORGS)),
    st.tuples(st.just("revoke"), st.integers(40, 90), st.sampled_from([0, 1, 2, 3, 4, 5]),
              st.sampled_from([2, 3, *_SIGNERS]), st.sampled_from([None, 45, 60])),
    st.tuples(st.just("rotate"), st.integers(40, 90), st.sampled_from(_SIGNERS), st.sampled_from(_SIGNERS)),
)


def _tree(team_depths: tuple[int, int], signers: list[tuple[Any, ...]], extra: list[tuple[Any, ...]]) -> World:
    w = World()
    w.root(0, "acme", ts=0)
    w.root(1, "libfoo", ts=0)
    for team, depth in zip((2, 3), team_depths, strict=True):
        w.delegate(0, team, ts=1, purposes=("build", "delegate", "release"), max_depth=depth)
    for n, (s, (parent, glob, purposes, (nb, na), _, org)) in enumerate(zip(_SIGNERS, signers, strict=False)):
        w.delegate(parent, s, ts=2 + n, artefacts=(glob,), purposes=purposes, not_before=nb, not_after=na, org=org)
    for op in extra:
        if op[0] == "join":
            w.delegate(op[1], op[2], ts=20, purposes=("release",), org=op[3])
    timed: list[tuple[int, int, Any]] = [(ts, s, name) for s, sig in zip(_SIGNERS, signers, strict=False)
                                         for ts, name in sig[4]]
    timed += [(op[1], -1, op) for op in extra if op[0] != "join"]
    for ts, s, what in sorted(timed, key=lambda x: x[0]):
        if s >= 0:
            w.attest(s, what, ts=ts)
        elif what[0] == "revoke":
            w.revoke(what[2], what[3], ts=ts, since=what[4])
        elif what[2] != what[3]:
            w.rotate(what[2], what[3], ts=ts)
    return w


trees = st.builds(
    lambda depths, signers, extra, hops: Case(_tree(depths, signers, extra),
                                              policy(("acme", 0), ("libfoo", 1), max_transitive_hops=hops)),
    st.tuples(st.integers(0, 2), st.integers(1, 2)), st.lists(_signer, min_size=3, max_size=5),
    st.lists(_extra, max_size=6), st.integers(0, 1),
)


def _same(case: Case, target: int, since: int | None, policy: Policy | None, limit: int) -> None:
    g = case.world.graph
    fast = impact(g, kid(target), at=AT, since=since, policy=policy, limit=limit)
    before = impact_before(g, kid(target), at=AT, since=since, policy=policy, limit=limit)
    assert fast.to_dict() == before.to_dict()
    assert [i.alternative for i in fast.items] == [i.alternative for i in before.items]


@SETTINGS
@given(cases, st.sampled_from(KEYS), st.sampled_from([None, 20, 50]), st.booleans(), st.sampled_from([10_000, 4]),
       st.sampled_from(KEYS[2:]), st.sampled_from(KEYS))
def test_impact_matches_the_earlier_algorithm(
    case: Case, target: int, since: int | None, with_policy: bool, limit: int, revoked: int, rotated: int
) -> None:
    policy = case.policy if with_policy else None
    _same(case, target, since, policy, limit)
    case.world.revoke(revoked, revoked, ts=95, since=None if revoked % 2 else 40)
    _same(case, target, since, policy, limit)
    if rotated != revoked:
        case.world.rotate(revoked, rotated, ts=96)
        _same(case, target, since, policy, limit)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.sampled_from([0, 2, 3]), st.sampled_from([None, 45]), st.booleans(), st.sampled_from([10_000, 7]))
def test_impact_matches_the_earlier_algorithm_on_hierarchies(
    case: Case, target: int, since: int | None, with_policy: bool, limit: int
) -> None:
    _same(case, target, since, case.policy if with_policy else None, limit)
