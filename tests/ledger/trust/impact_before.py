"""``impact`` as it was before its fast paths, kept to pin the answer of the fast one.

``ledger.trust.impact`` decides which accepted path it reports for an item by the order of
its searches and by the signer chains it caches during a call; several paths may be
equally right, so the naive :mod:`tests.ledger.trust.reference` cannot pin that choice.
This copy of the earlier algorithm (search per item, every chain extension evaluated
whole) can: the property tests compare both answers field by field.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.records import Delegation, Endorsement, Rotation
from ledger.trust import Impact, ImpactItem, OrgImpact, Policy, TrustGraph, TrustPath
from ledger.trust.context import OPEN_MAX_PATH_LENGTH, Link, Query, Rules
from ledger.trust.evaluate import Prefix, evaluate_extended
from ledger.trust.explain import collect
from ledger.trust.impact import DEFAULT_IMPACT_LIMIT
from ledger.trust.memo import QueryMemo
from ledger.trust.weakest import with_weakest

_ITEM_LIMIT = 16
_MAX_WALK = 10_000


def impact_before(
    graph: TrustGraph,
    key_id: KeyId,
    *,
    at: int,
    since: int | None = None,
    policy: Policy | None = None,
    purpose: str | None = None,
    limit: int = DEFAULT_IMPACT_LIMIT,
) -> Impact:
    """:func:`ledger.trust.impact` as it was before its fast paths (same arguments).

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
    judge = _Judge(graph, key_id, since=since, rules=rules, purpose=purpose, at=at)
    items: list[ImpactItem] = []
    untrusted = 0
    subjects: list[tuple[Literal["key", "artefact"], str]] = [("key", k) for k in keys]
    subjects += [("artefact", d) for d in digests]
    for kind, subject in subjects[:limit]:
        item, unsure = judge.of_key(subject) if kind == "key" else judge.of_artefact(subject)
        truncated = truncated or unsure
        if item is None:
            untrusted += 1
        else:
            items.append(item)
    items.sort(key=lambda i: (not i.loses_trust, i.subject != key_id, i.kind, i.subject))
    return Impact(key_id, since, at, tuple(items), _by_org(items), untrusted, truncated)


class _Judge:
    """Decides, item by item, whether trust is lost; shares work between items.

    Shared: the revocation memos (one :class:`Query` family), which keys can structurally
    reach a root without passing through K (no such key: no alternative to search for),
    and each signer's last accepted chain (its other attestations are tried on it first);
    the attestations read and the chain prefixes evaluated (a :class:`QueryMemo`). All of
    it is forgotten if the graph changes during the call.
    """

    def __init__(self, graph: TrustGraph, key: KeyId, *, since: int | None, rules: Rules,
                 purpose: str | None, at: int) -> None:
        self.graph, self.target, self.since, self.purpose, self.at = graph, key, since, purpose, at
        self.memo = QueryMemo(graph, rules, at)
        self.base = Query(graph, rules, at, memo=self.memo)
        self.free: dict[str, bool] = {}
        self.prefix: dict[str, Prefix] = {}
        self.version = graph.version

    def _sync(self) -> bool:
        """Forget what was learnt if the graph changed since (True if it did)."""
        if self.graph.version == self.version:
            return False
        self.version = self.graph.version
        self.memo.sync()
        self.base = Query(self.graph, self.base.rules, self.at, memo=self.memo)
        self.free, self.prefix = {}, {}
        return True

    def of_key(self, kid: str) -> tuple[ImpactItem | None, bool]:
        """Judge key ``kid``."""
        return self._judge("key", kid, [kid])

    def of_artefact(self, digest: str) -> tuple[ImpactItem | None, bool]:
        """Judge the artefact with sha256 ``digest`` (hex)."""
        recs = self.base.attestations_for(digest)
        return self._judge("artefact", digest, [s for rec in recs for s in rec.signers], recs)

    def _judge(self, kind: Literal["key", "artefact"], name: str, signers: Sequence[str],
               recs: Sequence[LoggedRecord] = ()) -> tuple[ImpactItem | None, bool]:
        """Judge key ``name`` (``signers``: itself) or artefact ``name`` (its attestations
        ``recs`` and their ``signers``)."""
        if self._sync():
            recs = self.base.attestations_for(name) if kind == "artefact" else ()
        unsure = False
        target = self.target
        if name != target and any(s != target and self._reaches_root_without_key(s) for s in signers):
            q = self.base.fresh(limit=_ITEM_LIMIT, viable_only=True, avoid=frozenset({self.target}))
            alt = [p for p in collect(q, kind, name, purpose=self.purpose, stop_when=_any) if p.accepted]
            if alt:
                return _item(kind, name, alt[0], loses=False, at=self.at), False
            unsure = q.truncated
        cached = self._via_prefix(name, recs) if kind == "artefact" and self.since is None else None
        if cached is not None:
            return _item(kind, name, cached, loses=_relies_on(cached, self.target, None), at=self.at), unsure
        q = self.base.fresh(limit=_ITEM_LIMIT, viable_only=True)
        # without since, every path through K relies on it: the first accepted path decides
        stop = _any if self.since is None else None
        now = [p for p in collect(q, kind, name, purpose=self.purpose, stop_when=stop) if p.accepted]
        if not now:
            return None, q.truncated
        if kind == "artefact":
            links = tuple(Link(h.kind, h.record, h.from_key, h.to) for h in now[0].hops[:-1] if h.record)
            if links and links[-1].kind != "transitive":
                self.prefix[now[0].hops[-1].from_key or ""] = Prefix(self.base, links, self.purpose)
        free = [p for p in now if not _relies_on(p, self.target, self.since)]
        if free:
            return _item(kind, name, free[0], loses=False, at=self.at), False
        unsure = unsure or (self.since is not None and q.truncated)
        return _item(kind, name, now[0], loses=True, at=self.at), unsure

    def _via_prefix(self, digest: str, recs: Sequence[LoggedRecord]) -> TrustPath | None:
        """An accepted path for an attestation of ``digest`` (one of ``recs``) on a signer's
        cached chain."""
        for rec in recs:
            for s in rec.signers:
                cached = self.prefix.get(s)
                if cached is not None:
                    path = evaluate_extended(self.base, cached, Link("attestation", rec, s, "sha256:" + digest))
                    if path.accepted:
                        return path
        return None

    def _reaches_root_without_key(self, start: str) -> bool:
        """Structurally (ignoring validity), can ``start`` reach a root avoiding K?"""
        hit = self.free.get(start)
        if hit is not None:
            return hit
        g = self.graph
        seen, todo = {start}, [start]
        hit = False
        while todo and not hit:
            k = KeyId(todo.pop())
            if g.roots_of(k):
                hit = True
                break
            parents = [r.record.issuer for r in g.delegations_to(k) if isinstance(r.record, Delegation)]
            parents += [r.record.old for r in g.rotations_to(k) if isinstance(r.record, Rotation)]
            for p in parents:
                if p != self.target and p not in seen:
                    seen.add(p)
                    todo.append(p)
            if len(seen) > _MAX_WALK:
                hit = True  # too far to tell: let the search decide
        self.free[start] = hit
        return hit


def _any(path: TrustPath) -> bool:
    return True


def _item(kind: Literal["key", "artefact"], name: str, path: TrustPath, *, loses: bool, at: int) -> ImpactItem:
    last = path.hops[-1]
    alternative = None if loses else with_weakest(path, at=at)
    if kind == "artefact":
        return ImpactItem(kind, "sha256:" + name, last.org_from, last.names, loses, alternative)
    return ImpactItem(kind, name, last.org_to, (), loses, alternative)


def _relies_on(path: TrustPath, key: KeyId, since: int | None) -> bool:
    for h in path.hops:
        if h.to == key and h.kind != "attestation" and (since is None or h.reliance_time >= since):
            return True
    return False


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
