"""Which revocations and rotations end a key's validity, and when.

Rules (times are log integration times, Unix ms):
* A revocation of K with ``since`` T invalidates K for every record K signed that was
  integrated at or after T (and for K's own use as a subject at or after T); records
  integrated before T stay valid. Without ``since`` it invalidates K entirely.
* A revocation counts only if its issuer has the right to revoke K: the issuer is K
  itself; or it is above K on the path being evaluated; or it is a structural ancestor
  of K (a chain of delegations/rotations leads from it down to K) and it is itself
  reachable from an anchor root (any root under the open rules). Ancestry ignores
  windows and revocations on purpose: a revoked or expired ancestor may still revoke
  below it -- at worst a denial of service, never a widening of trust. Otherwise the
  revocation is ignored and reported (:class:`~ledger.trust.verdict.IgnoredRevocation`).
* Revocations count whatever their origin, even an equivocating one (fail safe: they are
  signed statements by the issuer).
* A rotation of K (signed by K and the new key) ends K for every record integrated at or
  after the rotation's time, except the rotation record itself.
* Fail safe: if an ancestry walk exceeds its bound, the revocation counts.
"""

from __future__ import annotations

from collections.abc import Set

from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.records import Delegation, Endorsement, Revocation, Rotation
from ledger.trust.context import Query
from ledger.trust.verdict import Position, Reason, rfc3339

_MAX_WALK = 10_000


def key_reasons(
    q: Query, key: KeyId, *, t: int, signed: LoggedRecord | None, above: Set[str], hop: int
) -> list[Reason]:
    """Why ``key`` is not valid when relied upon at ``t`` (empty: it is).

    Args:
        q: the query.
        key: the key checked.
        t: the reliance time (integration time of the record it signed, or ``q.at``).
        signed: the record it signed at ``t`` (exempt from its own rotation), if any.
        above: keys above it on the path being evaluated.
        hop: index of the hop landing on ``key`` (for the reasons).
    """
    out: list[Reason] = []
    for rec in q.graph.revocations_of(key):
        rv = rec.record
        assert isinstance(rv, Revocation)
        if rv.since is not None and rv.since > t:
            continue
        if rv.issuer == key or rv.issuer in above or _ancestor_may_revoke(q, rv.issuer, key):
            when = "entirely" if rv.since is None else f"since {rfc3339(rv.since)}"
            out.append(Reason(
                "revoked",
                f"key {key} is revoked {when} by {rv.issuer} ({rv.reason}); relied upon at {rfc3339(t)}",
                hop,
                Position.of(rec),
            ))
        else:
            q.ignore(rec, f"issuer {rv.issuer} is neither {key} itself nor a key above it")
    for rec in q.graph.rotations_from(key):
        if rec.ts <= t and (signed is None or rec.record_id != signed.record_id):
            rot = rec.record
            assert isinstance(rot, Rotation)
            out.append(Reason(
                "rotated",
                f"key {key} handed over to {rot.new.key_id} at {rfc3339(rec.ts)}; relied upon at {rfc3339(t)}",
                hop,
                Position.of(rec),
            ))
    return out


def is_structural_ancestor(q: Query, issuer: KeyId, target: KeyId) -> bool:
    """True if delegations/rotations lead from ``issuer`` down to ``target`` (or the walk
    exceeded its bound: fail safe)."""
    anc = q.ancestors.get(target, frozenset())
    if target not in q.ancestors:
        anc = q.ancestors[target] = _walk_up(q, target, via_endorsements=False)
    return anc is None or issuer in anc


def reaches_anchor(q: Query, key: KeyId) -> bool:
    """True if ``key`` is an anchor root or sits below one (through any link kind)."""
    hit = q.reaches.get(key)
    if hit is None:
        up = _walk_up(q, key, via_endorsements=True, include_self=True)
        hit = up is None or any(q.rules.is_anchor_root(q.graph, k) for k in up)
        q.reaches[key] = hit
    return hit


def _ancestor_may_revoke(q: Query, issuer: KeyId, target: KeyId) -> bool:
    return is_structural_ancestor(q, issuer, target) and reaches_anchor(q, issuer)


def _walk_up(
    q: Query, start: KeyId, *, via_endorsements: bool, include_self: bool = False
) -> frozenset[KeyId] | None:
    """Every key above ``start`` (plain reachability; None if the bound was hit)."""
    g = q.graph
    seen: set[KeyId] = {start} if include_self else set()
    todo = [start]
    while todo:
        k = todo.pop()
        parents: list[KeyId] = []
        for rec in g.delegations_to(k):
            d = rec.record
            assert isinstance(d, Delegation)
            parents.append(d.issuer)
        for rec in g.rotations_to(k):
            r = rec.record
            assert isinstance(r, Rotation)
            parents.append(r.old)
        if via_endorsements:
            for rec in g.endorsements_of(k):
                e = rec.record
                assert isinstance(e, Endorsement)
                parents.append(e.endorser)
        for p in parents:
            if p not in seen:
                seen.add(p)
                todo.append(p)
        if len(seen) > _MAX_WALK:
            q.note(f"ancestry of {start} exceeds {_MAX_WALK} keys; revocations of it count (fail safe)")
            return None
    return frozenset(seen)


__all__ = ["is_structural_ancestor", "key_reasons", "reaches_anchor"]
