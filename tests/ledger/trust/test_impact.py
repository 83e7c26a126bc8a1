"""impact(): what would lose trust if a key were revoked, and the alternatives kept."""

from __future__ import annotations

import json

from ledger.trust import Impact, impact
from tests.ledger.trust.world import World, digest, kid, policy

AT = 10_000


def _chain() -> World:
    """acme root 0 -> 1 -> 2 -> 3; 3 attests app; 2 attests lib."""
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=10, purposes=("delegate", "release"), max_depth=3)
    w.delegate(1, 2, ts=20, purposes=("delegate", "release"), max_depth=2)
    w.delegate(2, 3, ts=30)
    w.attest(3, "app", ts=40)
    w.attest(2, "lib", ts=40)
    return w


def _lost(im: Impact) -> set[str]:
    return {i.subject for i in im.lost}


def test_everything_below_loses_trust() -> None:
    w = _chain()
    im = impact(w.graph, kid(1), at=AT)
    assert _lost(im) == {kid(1), kid(2), kid(3), "sha256:" + digest("app"), "sha256:" + digest("lib")}
    assert im.items[0].subject == kid(1)
    assert not im.kept and not im.truncated
    assert [(o.org, o.keys_lost, o.artefacts_lost) for o in im.orgs] == [("acme", 3, 2)]
    art = next(i for i in im.items if i.kind == "artefact" and i.names == ("app",))
    assert art.org == "acme"


def test_an_alternative_path_is_reported() -> None:
    w = _chain()
    w.delegate(0, 4, ts=11, purposes=("delegate", "release"), max_depth=3)
    w.delegate(4, 3, ts=31)
    im = impact(w.graph, kid(1), at=AT)
    assert _lost(im) == {kid(1), kid(2), "sha256:" + digest("lib")}
    kept = {i.subject: i for i in im.kept}
    assert set(kept) == {kid(3), "sha256:" + digest("app")}
    alt = kept[kid(3)].alternative
    assert alt is not None and [h.to for h in alt.hops] == [kid(0), kid(4), kid(3)]
    assert kid(1) not in {h.to for h in alt.hops}


def test_since_keeps_what_was_relied_upon_before() -> None:
    w = _chain()
    im = impact(w.graph, kid(1), at=AT, since=25)  # 1 signed 2's delegation at 20
    assert _lost(im) == {kid(1)}
    assert {i.subject for i in im.kept} == {kid(2), kid(3), "sha256:" + digest("app"), "sha256:" + digest("lib")}
    im = impact(w.graph, kid(1), at=AT, since=20)  # boundary: at since counts
    assert kid(2) in _lost(im)


def test_already_untrusted_items_are_counted_not_listed() -> None:
    w = _chain()
    w.delegate(2, 5, ts=30, not_after=35)
    im = impact(w.graph, kid(2), at=AT)
    assert kid(5) not in {i.subject for i in im.items}
    assert im.already_untrusted == 1


def test_endorsed_org_loses_trust_under_a_policy() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.root(5, "libfoo", ts=1)
    w.delegate(5, 6, ts=2, org="libfoo")
    w.attest(6, "libfoo-1.0", ts=3)
    w.endorse(0, 5, org="libfoo", ts=2)
    pol = policy(("acme", 0), max_transitive_hops=1)
    im = impact(w.graph, kid(0), at=AT, policy=pol)
    assert {kid(5), kid(6), "sha256:" + digest("libfoo-1.0")} <= _lost(im)
    assert {o.org for o in im.orgs} == {"acme", "libfoo"}
    # Without a policy every root is an anchor: libfoo stands on its own root.
    open_im = impact(w.graph, kid(0), at=AT)
    assert {i.subject for i in open_im.kept} == {kid(5), kid(6), "sha256:" + digest("libfoo-1.0")}


def test_bounded_and_json() -> None:
    w = _chain()
    im = impact(w.graph, kid(0), at=AT, limit=2)
    assert im.truncated and len(im.items) <= 2
    doc = json.loads(json.dumps(impact(w.graph, kid(2), at=AT).to_dict()))
    assert doc["key"] == kid(2) and doc["items"][0]["loses_trust"] is True
    assert doc["orgs"][0]["org"] == "acme"


def test_impact_terminates_on_cycles() -> None:
    w = _chain()
    w.delegate(3, 1, ts=50, purposes=("delegate", "release"), max_depth=1)  # 1 -> 2 -> 3 -> 1
    im = impact(w.graph, kid(2), at=AT)
    assert kid(3) in _lost(im)


def _one_signer(*, artefacts: tuple[str, ...] = ("*",), not_after: int | None = None, org: str | None = None) -> World:
    """acme root 0 -> 2 -> 4; 4 attests app-1, lib-2, app-3 and app-4 (in that order)."""
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 2, ts=2, purposes=("delegate", "release"), max_depth=1)
    w.delegate(2, 4, ts=3, artefacts=artefacts, not_after=not_after, org=org)
    for ts, name in ((40, "app-1"), (41, "lib-2"), (45, "app-3"), (60, "app-4")):
        w.attest(4, name, ts=ts)
    return w


def _artefacts(im: Impact) -> dict[str, tuple[tuple[str, ...], str | None]]:
    return {i.names[0]: (i.names, i.org) for i in im.items if i.kind == "artefact" and i.loses_trust}


def test_each_artefact_of_one_signer_is_judged_at_its_own_time() -> None:
    # the signer's delegation ends at 50: app-4, attested at 60, was never trusted
    im = impact(_one_signer(not_after=50).graph, kid(2), at=AT)
    assert set(_artefacts(im)) == {"app-1", "lib-2", "app-3"}
    assert im.already_untrusted == 2  # key 4 now, and app-4


def test_each_artefact_of_one_signer_is_judged_in_its_own_scope() -> None:
    im = impact(_one_signer(artefacts=("app*",)).graph, kid(2), at=AT)
    assert set(_artefacts(im)) == {"app-1", "app-3", "app-4"}
    assert im.already_untrusted == 1  # lib-2


def test_each_artefact_of_one_signer_carries_its_names_and_the_signers_org() -> None:
    w = _one_signer(org="libfoo")  # a join: 4 acts for libfoo
    w.attest(4, "app-3", ts=70)  # a second attestation of app-3
    im = impact(w.graph, kid(2), at=AT)
    assert _artefacts(im) == {n: ((n,), "libfoo") for n in ("app-1", "lib-2", "app-3", "app-4")}
    assert [(o.org, o.artefacts_lost) for o in im.orgs] == [("acme", 0), ("libfoo", 4)]
