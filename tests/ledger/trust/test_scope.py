"""Scope narrows down a chain: globs at every level, purposes, depth, 'delegate'."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import RecordError
from ledger.records import Delegation
from ledger.trust import Explanation, explain
from ledger.trust.scope import Scope, is_wildcard
from tests.ledger.trust.world import POOL, World, digest, kid, policy

AT = 1_000


def _codes(ex: Explanation) -> set[str]:
    return {r.code for p in ex.paths for r in p.reasons}


def _artefact(w: World, name: str, purpose: str = "release") -> Explanation:
    return explain(w.graph, "sha256:" + digest(name), purpose=purpose, at=AT, policy=policy(("acme", 0)))


def _chain(*levels: tuple[str, ...], depth: int = 5) -> World:
    """root 0 -> 1 -> 2 -> ... one delegation per glob level; the last key attests."""
    w = World()
    w.root(0, "acme", ts=1)
    for i, globs in enumerate(levels):
        last = i == len(levels) - 1
        w.delegate(i, i + 1, ts=2 + i, artefacts=globs,
                   purposes=("release",) if last else ("delegate", "release"), max_depth=0 if last else depth)
    return w


@pytest.mark.parametrize(
    ("levels", "name", "ok"),
    [
        ((("libfoo*",), ("libfoo-*",)), "libfoo-1.0", True),
        ((("libfoo*",), ("*",)), "libbar-1.0", False),  # '*' below cannot widen 'libfoo*'
        ((("*",), ("libfoo*",)), "libbar-1.0", False),
        ((("libfoo*", "libbar*"), ("libbar-*",)), "libbar-2", True),
        ((("libfoo*",), ("libfoo*", "libbar*")), "libbar-2", False),
        ((("LibFoo*",),), "libfoo-1", False),  # case-sensitive
        ((("app-?.0",),), "app-1.0", True),
        ((("app-[0-4].*",),), "app-5.0", False),
    ],
)
def test_a_name_must_match_a_glob_at_every_level(levels: tuple[tuple[str, ...], ...], name: str, ok: bool) -> None:
    w = _chain(*levels)
    w.attest(len(levels), name, ts=100)
    ex = _artefact(w, name)
    assert ex.trusted is ok
    if not ok:
        assert _codes(ex) == {"out_of_scope"}
        assert name in ex.paths[0].reasons[0].message
    assert [list(lv) for lv in ex.paths[0].hops[-1].scope.artefacts] == [sorted(lv) for lv in levels]


def test_purposes_intersect_along_the_chain() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("build", "delegate"), max_depth=1)
    w.delegate(1, 2, ts=3, purposes=("build", "release"))
    w.attest(2, "app", ts=4)
    assert _artefact(w, "app", "build").trusted
    ex = _artefact(w, "app", "release")
    assert not ex.trusted and _codes(ex) == {"purpose"}
    assert ex.paths[0].hops[-1].scope.purposes == ("build",)


def test_no_purpose_left_is_reported_at_the_hop() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("build", "delegate"), max_depth=1)
    w.delegate(1, 2, ts=3, purposes=("release",))
    w.attest(2, "app", ts=4)
    ex = _artefact(w, "app")
    hops = {r.hop for r in ex.paths[0].reasons if r.code == "purpose"}
    assert 2 in hops


def test_only_keys_holding_delegate_may_delegate() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("release",), max_depth=3)
    w.delegate(1, 2, ts=3)
    w.attest(2, "app", ts=4)
    ex = _artefact(w, "app")
    assert not ex.trusted and _codes(ex) == {"cannot_delegate"}
    assert ex.weakest_link is not None and ex.weakest_link.hop == 2
    assert ex.weakest_link.criterion == "cannot_delegate"


def test_a_delegate_with_max_depth_zero_cannot_delegate() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=0)
    w.delegate(1, 2, ts=3)
    w.attest(2, "app", ts=4)
    ex = _artefact(w, "app")
    assert not ex.trusted and _codes(ex) == {"over_depth"}


def test_depth_counts_down_as_min_of_grant_and_parent_minus_one() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=1)
    w.delegate(1, 2, ts=3, purposes=("delegate", "release"), max_depth=5)  # effective 0
    w.delegate(2, 3, ts=4)
    w.attest(3, "app", ts=5)
    w.attest(2, "lib", ts=5)
    assert _artefact(w, "lib").trusted
    ex = _artefact(w, "app")
    assert not ex.trusted and _codes(ex) == {"over_depth"}
    depths = [h.scope.depth for h in ex.paths[0].hops]
    assert depths[:3] == [None, 1, 0]


def test_roots_may_always_delegate() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("release",))
    w.attest(1, "app", ts=3)
    assert _artefact(w, "app").trusted


def test_self_delegation_cannot_even_be_built() -> None:
    with pytest.raises(RecordError, match="itself"):
        Delegation(kid(1), POOL[1].public_key, "n", "acme", ("*",), ("release",), 0, 0, None, 0)


def test_scope_helpers() -> None:
    s = Scope.of_root()
    assert s.can_delegate() and s.depth is None and s.purposes == ("build", "delegate", "log", "release")
    child = s.delegate(artefacts=("a*",), purposes=("release",), max_depth=3)
    assert (child.depth, child.root, child.can_delegate()) == (3, False, False)
    assert child.why_not_delegate()[0] == "cannot_delegate"
    leaf = s.delegate(artefacts=("a*",), purposes=("delegate",), max_depth=0)
    assert leaf.why_not_delegate()[0] == "over_depth"
    assert child.covers("abc") and not child.covers("bc")
    assert child.first_excluding_level("bc") == 0 and child.first_excluding_level("abc") is None
    endorsed = child.endorse(("build", "release"))
    assert endorsed.root and endorsed.depth == 2 and endorsed.purposes == ("release",)
    assert s.endorse(("build",)).depth is None  # unbounded below an unbounded root
    assert is_wildcard("*") and is_wildcard("**") and not is_wildcard("a*") and not is_wildcard("")


@settings(max_examples=300, deadline=None)
@given(
    globs=st.lists(st.lists(st.text("ab*?[]!-@.\n", max_size=6), min_size=1, max_size=3), max_size=3),
    name=st.text("ab-@.*?[]\n", max_size=8),
)
def test_covers_is_fnmatchcase_at_every_level(globs: list[list[str]], name: str) -> None:
    """The compiled-glob cache answers exactly what ``fnmatch.fnmatchcase`` does."""
    try:
        want = all(any(fnmatchcase(name, g) for g in level) for level in globs)
    except re.error:  # a glob fnmatch itself cannot compile
        return
    scope = Scope(tuple(tuple(level) for level in globs), (), None, False)
    assert scope.covers(name) == want
    first = next((i for i, level in enumerate(globs) if not any(fnmatchcase(name, g) for g in level)), None)
    assert scope.first_excluding_level(name) == first
