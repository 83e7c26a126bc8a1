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

def with_weakest(path: TrustPath, *, at: int, index: int = -1) -> TrustPath:
    """``path`` with its weakest link named, pointing at position ``index`` of a list."""
    w = weakest_of(path.hops, path.reasons, at=at)
    if w is not None and index != -1:
        w = WeakestLink(w.hop, w.criterion, w.why, index)
    return TrustPath(path.hops, path.accepted, path.trust, path.reasons, w)


def weakest_of(hops: Sequence[Hop], reasons: Sequence[Reason], *, at: int) -> WeakestLink | None:
    """The weakest link of a path with these hops and rejection reasons (None: no hops)."""
    if not hops:
        return None
    if reasons:
        r = reasons[0]
        return WeakestLink(len(hops) - 1 if r.hop is None else r.hop, r.code, r.message)
    first = _first_of_each(hops)
    for name in CRITERIA:
        i = first.get(name)
        if i is not None:
            return WeakestLink(i, name, _WHY[name](hops, i, at))
    raise AssertionError("the exposure rule always applies")  # pragma: no cover


def _first_of_each(hops: Sequence[Hop]) -> dict[str, int]:
    """One pass over the hops: for each criterion that applies, the hop it names."""
    found: dict[str, int] = {"exposure": len(hops) - 1}
    links: list[int] = []
    expiry: tuple[int, int] | None = None
    low = high = len(hops[0].witnesses)
    low_i = 0
    for i, h in enumerate(hops):
        k = h.kind
        if k == "root" and h.hsm is False:
            found.setdefault("software_root", i)
        elif k == "transitive":
            found.setdefault("transitive", i)
        elif k in ("delegated", "rotation"):
            links.append(i)
            if k == "delegated" and any(is_wildcard(g) for g in h.scope.artefacts[-1]):
                found.setdefault("widest_scope", i)
        if h.join:
            found.setdefault("join", i)
        if h.not_after is not None and (expiry is None or h.not_after < expiry[0]):
            expiry = (h.not_after, i)
        n = len(h.witnesses)
        if n < low:
            low, low_i = n, i
        high = max(high, n)
        if h.alg == "p256":
            found.setdefault("weakest_algorithm", i)
    if len(links) >= LONG_CHAIN:
        found["long_chain"] = links[-1]
    if expiry is not None:
        found["soonest_expiry"] = expiry[1]
    if low < high:
        found["fewest_witnesses"] = low_i
    return found


def _why_witnesses(hops: Sequence[Hop], i: int, at: int) -> str:
    h = hops[i]
    where = f"record {h.position.origin}#{h.position.index}"
    if not h.witnesses:
        return f"{where} is not covered by any witnessed checkpoint (others on the path are)"
    return f"{where} has the fewest witnesses on the path ({len(h.witnesses)})"


def _why_expiry(hops: Sequence[Hop], i: int, at: int) -> str:
    na = hops[i].not_after
    assert na is not None
    if na < at:
        return f"expired at {rfc3339(na)} (it was valid when relied upon)"
    return f"expires first, at {rfc3339(na)}"


_WHY: dict[str, Callable[[Sequence[Hop], int, int], str]] = {
    "software_root": lambda hops, i, at: (
        f"root key {hops[i].to} of org {hops[i].org_to} is a software key where an HSM key is expected"),
    "transitive": lambda hops, i, at: (
        f"{hops[i].from_key} ({hops[i].org_from}) endorses the root of {hops[i].org_to} without "
        f"delegating to it: trust here is transitive"),
    "join": lambda hops, i, at: f"the chain crosses from org {hops[i].org_from} into org {hops[i].org_to} here",
    "long_chain": lambda hops, i, at: (
        f"{sum(h.kind in ('delegated', 'rotation') for h in hops)} delegation/rotation links below the "
        f"root; this is the deepest"),
    "soonest_expiry": _why_expiry,
    "widest_scope": lambda hops, i, at: f"delegation to {hops[i].to} grants every artefact name ('*')",
    "fewest_witnesses": _why_witnesses,
    "weakest_algorithm": lambda hops, i, at: (
        "ECDSA P-256 key: a repeated signing nonce would expose it (Ed25519 is deterministic)"),
    "exposure": lambda hops, i, at: "no weakness stands out; the link closest to the subject is the most exposed",
}


def strength(path: TrustPath) -> int:
    """Rank of the path's weakest criterion: higher is stronger (-1 if rejected)."""
    if not path.accepted or path.weakest is None:
        return -1
    return CRITERIA.index(path.weakest.criterion)


__all__ = ["CRITERIA", "LONG_CHAIN", "strength", "weakest_of", "with_weakest"]
