"""The weakest link of a path, by a documented ranking.

A rejected path's weakest link is the hop of its first reason (the link that blocks it;
revoked and expired candidates are never ranked). For an accepted path the criteria
below are tried in order and the first that applies names the link:

1. ``software_root`` -- a root key that is not HSM-held, where an HSM key is expected.
2. ``transitive`` -- an endorsement: trust that was never delegated.
3. ``join`` -- a hop that crosses from one organisation's chain into another's.
4. ``long_chain`` -- the deepest link of a chain with :data:`LONG_CHAIN` or more
   delegation/rotation hops below its root.
5. ``soonest_expiry`` -- the link whose window ends first (already past ``at``, or not).
6. ``widest_scope`` -- a delegation granting every artefact name (a ``*`` glob).
7. ``fewest_witnesses`` -- the record covered by the fewest witnesses, when coverage
   differs along the path (a path witnessed evenly, or not at all, has no such link;
   the witness quorum is a policy rule, checked before ranking).
8. ``weakest_algorithm`` -- an ECDSA P-256 key (a repeated nonce exposes the private
   key; Ed25519 signatures are deterministic).
9. ``exposure`` -- nothing stands out: the link closest to the subject is named, being
   the one most exposed (most often used, least guarded).

The same order ranks accepted paths: a path whose weakest link comes later in the list
is stronger (:func:`strength`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.trust.scope import is_wildcard
from ledger.trust.verdict import Hop, Reason, TrustPath, WeakestLink, rfc3339

LONG_CHAIN = 4
CRITERIA = (
    "software_root", "transitive", "join", "long_chain", "soonest_expiry", "widest_scope",
    "fewest_witnesses", "weakest_algorithm", "exposure",
)

_Finding = tuple[int, str] | None


def weakest_of(hops: Sequence[Hop], reasons: Sequence[Reason], *, at: int) -> WeakestLink | None:
    """The weakest link of a path with these hops and rejection reasons (None: no hops)."""
    if not hops:
        return None
    if reasons:
        r = reasons[0]
        return WeakestLink(len(hops) - 1 if r.hop is None else r.hop, r.code, r.message)
    for name, rule in zip(CRITERIA, _RULES, strict=True):
        found = rule(hops, at)
        if found is not None:
            return WeakestLink(found[0], name, found[1])
    raise AssertionError("the exposure rule always applies")  # pragma: no cover


def strength(path: TrustPath) -> int:
    """Rank of the path's weakest criterion: higher is stronger (-1 if rejected)."""
    if not path.accepted or path.weakest is None:
        return -1
    return CRITERIA.index(path.weakest.criterion)


def _software_root(hops: Sequence[Hop], at: int) -> _Finding:
    for i, h in enumerate(hops):
        if h.kind == "root" and h.hsm is False:
            return i, f"root key {h.to} of org {h.org_to} is a software key where an HSM key is expected"
    return None


def _transitive(hops: Sequence[Hop], at: int) -> _Finding:
    for i, h in enumerate(hops):
        if h.kind == "transitive":
            return i, (f"{h.from_key} ({h.org_from}) endorses the root of {h.org_to} without delegating "
                       f"to it: trust here is transitive")
    return None


def _join(hops: Sequence[Hop], at: int) -> _Finding:
    for i, h in enumerate(hops):
        if h.join:
            return i, f"the chain crosses from org {h.org_from} into org {h.org_to} here"
    return None


def _long_chain(hops: Sequence[Hop], at: int) -> _Finding:
    links = [i for i, h in enumerate(hops) if h.kind in ("delegated", "rotation")]
    if len(links) >= LONG_CHAIN:
        return links[-1], f"{len(links)} delegation/rotation links below the root; this is the deepest"
    return None


def _soonest_expiry(hops: Sequence[Hop], at: int) -> _Finding:
    dated = [(h.not_after, i) for i, h in enumerate(hops) if h.not_after is not None]
    if not dated:
        return None
    na, i = min(dated)
    if na < at:
        return i, f"expired at {rfc3339(na)} (it was valid when relied upon)"
    return i, f"expires first, at {rfc3339(na)}"


def _widest_scope(hops: Sequence[Hop], at: int) -> _Finding:
    for i, h in enumerate(hops):
        if h.kind == "delegated" and h.scope.artefacts and any(is_wildcard(g) for g in h.scope.artefacts[-1]):
            return i, f"delegation to {h.to} grants every artefact name ('*')"
    return None


def _fewest_witnesses(hops: Sequence[Hop], at: int) -> _Finding:
    counts = [len(h.witnesses) for h in hops]
    low = min(counts)
    if low == max(counts):
        return None
    i = counts.index(low)
    h = hops[i]
    where = f"record {h.position.origin}#{h.position.index}"
    if low == 0:
        return i, f"{where} is not covered by any witnessed checkpoint (others on the path are)"
    return i, f"{where} has the fewest witnesses on the path ({low})"


def _weakest_algorithm(hops: Sequence[Hop], at: int) -> _Finding:
    for i, h in enumerate(hops):
        if h.alg == "p256":
            return i, "ECDSA P-256 key: a repeated signing nonce would expose it (Ed25519 is deterministic)"
    return None


def _exposure(hops: Sequence[Hop], at: int) -> _Finding:
    return len(hops) - 1, "no weakness stands out; the link closest to the subject is the most exposed"


_RULES: tuple[Callable[[Sequence[Hop], int], _Finding], ...] = (
    _software_root, _transitive, _join, _long_chain, _soonest_expiry, _widest_scope,
    _fewest_witnesses, _weakest_algorithm, _exposure,
)


__all__ = ["CRITERIA", "LONG_CHAIN", "strength", "weakest_of"]
