"""Revocation impact: before revoking a key, what would lose trust and what would not.

``impact(graph, K, at=..., since=...)`` walks DOWN from K (delegations it issued,
rotations it signed, roots it endorsed, recursively) to find every key whose trust may
hang from K, and the artefacts those keys attested. Each is then explained as usual and
its accepted paths are split: a path relies on K when K is on it and is relied upon at or
after ``since`` (always, without ``since``) -- exactly the paths a revocation of K with that
``since`` would reject. An item loses trust when all its accepted paths rely on K; it keeps
trust when one does not, and that path is reported as its alternative.

Invariants: only K's subtree is visited (bounded by ``limit`` items, reported as
``truncated``); items not trusted today are counted, not listed; K itself is listed
first. Per item, a search that never passes through K looks for an alternative first
(accepted paths only, stopping at the first); failing that, a search through K says
whether the item is trusted now (and, with ``since``, finds paths that rely on K only
before ``since``). A search bound that leaves an answer unsure sets ``truncated``. Without a policy the structural rules apply (every root an anchor, endorsements
allowed, no HSM, witness or algorithm rule).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from ledger.attestation import Attestation
from ledger.keys import KeyId
from ledger.records import Delegation, Endorsement, Rotation
from ledger.trust.context import OPEN_MAX_PATH_LENGTH, Rules
from ledger.trust.explain import explain_with
from ledger.trust.graph import TrustGraph
from ledger.trust.policy import Policy
from ledger.trust.verdict import Explanation, TrustPath

DEFAULT_IMPACT_LIMIT = 10_000
_ITEM_LIMIT = 16


@dataclass(frozen=True)
class ImpactItem:
    """A key or artefact whose trust hangs (at least partly) from the revoked key.

    Attributes:
        kind: ``key`` or ``artefact``.
        subject: key id, or ``sha256:<hex>``.
        org: the org the key acts for (an artefact: its signer's org).
        names: artefact names carrying the digest.
        loses_trust: every accepted path relies on the revoked key.
        alternative: the strongest accepted path that does not (None if it loses trust).
    """

    kind: Literal["key", "artefact"]
    subject: str
    org: str | None
    names: tuple[str, ...]
    loses_trust: bool
    alternative: TrustPath | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind, "subject": self.subject, "org": self.org, "names": list(self.names),
            "loses_trust": self.loses_trust,
            "alternative": None if self.alternative is None else self.alternative.to_dict(),
        }


@dataclass(frozen=True)
class OrgImpact:
    """Per organisation: how many of its keys and artefacts lose or keep trust."""

    org: str
    keys_lost: int
    keys_kept: int
    artefacts_lost: int
    artefacts_kept: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "org": self.org, "keys_lost": self.keys_lost, "keys_kept": self.keys_kept,
            "artefacts_lost": self.artefacts_lost, "artefacts_kept": self.artefacts_kept,
        }


@dataclass(frozen=True)
class Impact:
    """What revoking ``key`` (from ``since``, or entirely) would do, as seen at ``at``."""

    key: KeyId
    since: int | None
    at: int
    items: tuple[ImpactItem, ...]
    orgs: tuple[OrgImpact, ...]
    already_untrusted: int
    truncated: bool

    @property
    def lost(self) -> tuple[ImpactItem, ...]:
        """Items that would lose trust."""
        return tuple(i for i in self.items if i.loses_trust)

    @property
    def kept(self) -> tuple[ImpactItem, ...]:
        """Items that keep an alternative path."""
        return tuple(i for i in self.items if not i.loses_trust)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key, "since": self.since, "at": self.at,
            "items": [i.to_dict() for i in self.items], "orgs": [o.to_dict() for o in self.orgs],
            "already_untrusted": self.already_untrusted, "truncated": self.truncated,
        }


def impact(
    graph: TrustGraph,
    key_id: KeyId,
    *,
    at: int,
    since: int | None = None,
    policy: Policy | None = None,
    purpose: str | None = None,
    limit: int = DEFAULT_IMPACT_LIMIT,
) -> Impact:
    """What would lose trust if ``key_id`` were revoked (see the module docstring).

    Args:
        graph: the trust graph.
        key_id: the key that would be revoked.
        at: the time the question is asked (Unix ms).
        since: the revocation's ``since`` (None: revoked entirely).
        policy: judge trust under this policy instead of the structural rules.
        purpose: the purpose trust is judged for (None: any).
        limit: the most keys plus artefacts examined.
    """
    rules = Rules.from_policy(policy) if policy is not None else Rules.open(
        max_transitive_hops=OPEN_MAX_PATH_LENGTH)
    keys, truncated = _keys_below(graph, key_id, limit)
    digests: dict[str, None] = {}
    for k in keys:
        for rec in graph.attestations_by(k):
            att = rec.record
            assert isinstance(att, Attestation)
            for s in att.subjects:
                digests.setdefault(s.sha256)
        if len(keys) + len(digests) > limit:
            truncated = True
            break
    items: list[ImpactItem] = []
    untrusted = 0
    subjects: list[tuple[Literal["key", "artefact"], str]] = [("key", k) for k in keys]
    subjects += [("artefact", "sha256:" + d) for d in digests]
    for kind, subject in subjects[:limit]:
        item, unsure = _judge(graph, kind, subject, key_id, since=since, rules=rules, purpose=purpose, at=at)
        truncated = truncated or unsure
        if item is None:
            untrusted += 1
        else:
            items.append(item)
    items.sort(key=lambda i: (not i.loses_trust, i.subject != key_id, i.kind, i.subject))
    return Impact(key_id, since, at, tuple(items), _by_org(items), untrusted, truncated)


def _judge(
    graph: TrustGraph, kind: Literal["key", "artefact"], subject: str, key_id: KeyId, *,
    since: int | None, rules: Rules, purpose: str | None, at: int,
) -> tuple[ImpactItem | None, bool]:
    """(the item, or None if it is not trusted now; whether a search bound left it unsure)."""

    def search(*, avoid: frozenset[str] = frozenset(), stop_after: int = 1) -> Explanation:
        return explain_with(graph, subject, rules=rules, purpose=purpose, at=at, kind=kind,
                            limit=_ITEM_LIMIT, viable_only=True, avoid=avoid, stop_after=stop_after)

    unsure = False
    if subject != key_id:
        alt = search(avoid=frozenset({key_id}))
        if alt.accepted:
            return _item(kind, subject, alt.accepted[0], loses=False), False
        unsure = alt.truncated
    now = search(stop_after=1 if since is None else 0)  # without since every path through K relies on it
    if not now.accepted:
        return None, now.truncated
    free = [p for p in now.accepted if not _relies_on(p, key_id, since)]
    if free:
        return _item(kind, subject, free[0], loses=False), False
    return _item(kind, subject, now.accepted[0], loses=True), unsure or (since is not None and now.truncated)


def _item(kind: Literal["key", "artefact"], subject: str, path: TrustPath, *, loses: bool) -> ImpactItem:
    last = path.hops[-1]
    if kind == "artefact":
        return ImpactItem(kind, subject, last.org_from, last.names, loses, None if loses else path)
    return ImpactItem(kind, subject, last.org_to, (), loses, None if loses else path)


def _relies_on(path: TrustPath, key: KeyId, since: int | None) -> bool:
    return any(
        h.to == key and h.kind != "attestation" and (since is None or h.reliance_time >= since)
        for h in path.hops
    )


def _keys_below(graph: TrustGraph, key: KeyId, limit: int) -> tuple[list[KeyId], bool]:
    """``key`` and every key reachable downward from it, breadth first (bounded)."""
    seen = {key}
    order = [key]
    todo = deque([key])
    while todo:
        k = todo.popleft()
        children: list[KeyId] = []
        for rec in graph.delegations_from(k):
            d = rec.record
            assert isinstance(d, Delegation)
            children.append(d.subject.key_id)
        for rec in graph.rotations_from(k):
            r = rec.record
            assert isinstance(r, Rotation)
            children.append(r.new.key_id)
        for rec in graph.endorsements_by(k):
            e = rec.record
            assert isinstance(e, Endorsement)
            children.append(e.root)
        for c in children:
            if c not in seen:
                if len(order) >= limit:
                    return order, True
                seen.add(c)
                order.append(c)
                todo.append(c)
    return order, False


def _by_org(items: list[ImpactItem]) -> tuple[OrgImpact, ...]:
    acc: dict[str, list[int]] = {}
    for i in items:
        if i.org is None:
            continue
        row = acc.setdefault(i.org, [0, 0, 0, 0])
        row[(0 if i.kind == "key" else 2) + (0 if i.loses_trust else 1)] += 1
    return tuple(OrgImpact(org, *row) for org, row in sorted(acc.items()))


__all__ = ["DEFAULT_IMPACT_LIMIT", "Impact", "ImpactItem", "OrgImpact", "impact"]
