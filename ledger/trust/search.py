"""Candidate enumeration: every chain from a root up to the subject, bounded.

The search walks UP from the subject (an artefact's attestations, a key, an org's roots)
through the records that point at each key -- delegations to it, rotations to it,
endorsements of it -- until it meets root records. It touches only the index entries of
the keys on the chains it returns (and of dead ends next to them), never the whole graph.

Invariants:
* Termination: a key already on the current chain is not entered again (a cycle such as
  A -> B -> A is cut and counted), a chain never grows beyond the rules' path length,
  and the query's candidate and step bounds stop the walk (``Query.truncated``).
* One copy per record: when a record is held by several logs, the copy used is, in
  order, from a non-equivocating origin, integrated no later than the record relying on
  it, covered by the witness quorum, then the earliest integrated.
* Links that look valid where they are relied upon are explored first, so accepted
  paths are found before the bounds are spent on dead candidates. Validity itself is
  decided by :mod:`ledger.trust.evaluate`; here every structural chain is a candidate.
* In ``viable_only`` mode under rules where every root is an anchor (admission, impact),
  the walk does not go on above a usable root: a longer path through it (an endorsement
  of it, a delegation to it) has the same links below it, more keys above them and a
  narrower scope, so it is accepted only if the path anchored at that root is.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.records import Delegation, Endorsement, Rotation
from ledger.trust.context import Link, Query


def chains_to_key(q: Query, key: KeyId) -> None:
    """Collect candidate chains ending at ``key``, relied upon at ``q.at``."""
    _up(q, key, q.at, [], {key, *q.avoid})


def chains_to_artefact(q: Query, digest: str) -> None:
    """Collect candidate chains ending at an attestation of ``digest`` (hex)."""
    recs = sorted(_choose(q, q.attestations_for(digest), q.at), key=lambda r: (not _usable(q, r, q.at), r.ts))
    for rec in recs:
        if q.viable_only and not _usable(q, rec, q.at):
            continue
        for signer in rec.signers:
            if q.stopped:
                return
            if signer not in q.avoid:
                _up(q, signer, rec.ts, [Link("attestation", rec, signer, "sha256:" + digest)], {signer, *q.avoid})


def _up(q: Query, key: KeyId, t: int, below: list[Link], on_path: set[str]) -> None:
    """Extend the chain ``below`` (leaf first) upward from ``key``, relied upon at ``t``."""
    if q.stopped:
        return
    q.steps += 1
    if q.steps > q.max_steps:
        q.truncated = True
        q.note(f"search stopped after {q.max_steps} steps; more candidate paths may exist")
        return
    memo = q.memo
    # a key relied upon by an attestation: that attestation's searches only
    frame: Frame | None = None
    if memo is not None and below and below[-1].kind != "attestation":
        frame = memo.frames.get((key, t))
        if frame is None and memo.add_state():
            frame = memo.frames[(key, t)] = Frame(q, key, t)
    if frame is None:
        frame = Frame(q, key, t)
    viable_only = q.viable_only
    anchored = False
    for link, usable in frame.roots:
        if not viable_only or usable:
            _emit(q, below, link)
            anchored = True
    if anchored and viable_only and q.rules.anchors is None:
        return  # every root is an anchor: any path going on above this one is dominated by it
    note, ups = frame.above(q)
    if note is not None:
        q.note(note)
    if not ups:
        return
    room = q.rules.max_path_length - len(below)
    if room < 2:
        q.pruned_long += 1
        return
    for unusable, link, parent, root in ups:
        if unusable and viable_only:
            break
        if parent in on_path:
            q.cycles += 1
            continue
        pushed = 1
        if root is not None:
            if room < 3:
                q.pruned_long += 1
                continue
            below.append(root)
            pushed = 2
        below.append(link)
        on_path.add(parent)
        _up(q, parent, link.rec.ts, below, on_path)
        on_path.discard(parent)
        del below[-pushed:]
        if q.stopped:
            return


Up = tuple[bool, Link, KeyId, Link | None]
"""A link up from a key: whether it looks unusable, the link, its parent key, and for an
endorsement the endorsed root's link."""


class Frame:
    """What :func:`_up` needs of ``key`` relied upon at ``t``; it depends on the graph, the
    rules and ``t`` only, so a memo may keep it for the query's call. ``roots``: the root
    links, each with whether it looks usable then; :meth:`above`: a note and the links up
    from the key, usable-looking first then earliest (made when first needed)."""

    __slots__ = ("_above", "_chosen", "key", "roots", "t")

    def __init__(self, q: Query, key: KeyId, t: int) -> None:
        self.key, self.t = key, t
        self._chosen = _choose(q, q.graph.roots_of(key), t)
        self.roots = tuple((Link("root", rec, None, key), _usable(q, rec, t)) for rec in self._chosen)
        self._above: tuple[str | None, tuple[Up, ...]] | None = None

    def above(self, q: Query) -> tuple[str | None, tuple[Up, ...]]:
        """The note and the links up (see the class docstring)."""
        if self._above is None:
            self._above = _above(q, self.key, self.t, self._chosen)
        return self._above


def _above(q: Query, key: KeyId, t: int, roots: Sequence[LoggedRecord]) -> tuple[str | None, tuple[Up, ...]]:
    g = q.graph
    note: str | None = None
    endorsed = g.endorsements_of(key)
    if endorsed and not roots:
        note = f"endorsements of {key} are ignored: no root record declares it a root"
    memo = q.memo
    cands = None if memo is None else memo.ups.get(key)
    if cands is None:
        cands = _candidates(q, key, t, roots, endorsed if roots else ())
        if memo is not None and not _copies(g.delegations_to(key), g.rotations_to(key), endorsed, g.roots_of(key)) \
                and memo.add_state():
            memo.ups[key] = cands  # no record held twice: no copy to choose by t
    ups = [(not _usable(q, c[0].rec, t), c[0].rec.ts, *c) for c in cands]
    ups.sort(key=lambda u: (u[0], u[1]))
    return note, tuple((u[0], u[2], u[3], u[4]) for u in ups)


Candidate = tuple[Link, KeyId, Link | None]
"""A link up from a key, whatever the time: the link, its parent key, and for an
endorsement the endorsed root's link."""


def _candidates(q: Query, key: KeyId, t: int, roots: Sequence[LoggedRecord],
                endorsed: Sequence[LoggedRecord]) -> tuple[Candidate, ...]:
    """The links up from ``key`` (one copy of each record chosen for ``t``), each with its
    parent key and, for an endorsement, the endorsed root's link: delegations, rotations,
    then endorsements, in index order."""
    g = q.graph
    out: list[Candidate] = []
    for rec in _choose(q, g.delegations_to(key), t):
        d = rec.record
        assert isinstance(d, Delegation)
        out.append((Link("delegated", rec, d.issuer, key), d.issuer, None))
    for rec in _choose(q, g.rotations_to(key), t):
        r = rec.record
        assert isinstance(r, Rotation)
        out.append((Link("rotation", rec, r.old, key), r.old, None))
    for rec in _choose(q, endorsed, t):
        e = rec.record
        assert isinstance(e, Endorsement)
        link = Link("transitive", rec, e.endorser, key)
        out.append((link, e.endorser, _root_for(roots, link)))
    return tuple(out)


def _copies(*lists: Sequence[LoggedRecord]) -> bool:
    """True if a record is held more than once in one of ``lists``."""
    return any(len(recs) > 1 and len({r.record_id for r in recs}) < len(recs) for recs in lists)


def _emit(q: Query, below: list[Link], top: Link) -> None:
    if q.stopped:
        return
    if len(q.chains) >= q.limit:
        q.truncated = True
        q.note(f"stopped after {q.limit} candidate paths; more may exist")
        return
    chain = (top, *reversed(below))
    q.chains.append(chain)
    if q.on_chain is not None and q.on_chain(chain):
        q.done = True


def _root_for(roots: Sequence[LoggedRecord], link: Link) -> Link:
    """The root record of the endorsed key to put after an endorsement (same org first)."""
    e = link.rec.record
    assert isinstance(e, Endorsement)
    best = next((r for r in roots if getattr(r.record, "org", None) == e.org), roots[0])
    return Link("root", best, None, link.to)


def _usable(q: Query, rec: LoggedRecord, t: int) -> bool:
    """Cheap look at whether a link can hold at ``t`` (ordering only, not a verdict)."""
    if rec.ts > t or q.graph.is_equivocating(rec.origin):
        return False
    r = rec.record
    if isinstance(r, Delegation | Endorsement):
        return r.not_before <= t and (r.not_after is None or t <= r.not_after)
    return True


def _choose(q: Query, recs: Sequence[LoggedRecord], t: int) -> Sequence[LoggedRecord]:
    """One copy per record id (see the module invariants)."""
    if len(recs) <= 1:
        return recs
    best: dict[bytes, LoggedRecord] = {}
    for r in recs:
        cur = best.get(r.record_id)
        if cur is None or _preference(q, r, t) < _preference(q, cur, t):
            best[r.record_id] = r
    return list(best.values())


def _preference(q: Query, rec: LoggedRecord, t: int) -> tuple[bool, bool, bool, int, str, int]:
    g = q.graph
    return (
        g.is_equivocating(rec.origin),
        rec.ts > t,
        len(g.witnesses(rec.origin, rec.index)) < q.rules.witness_quorum,
        rec.ts,
        rec.origin,
        rec.index,
    )


__all__ = ["chains_to_artefact", "chains_to_key"]
