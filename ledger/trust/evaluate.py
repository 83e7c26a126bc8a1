"""Evaluate one candidate chain: hops with their scope, and every reason to reject it.

Rules applied (all times are log integration times, Unix ms; windows are closed):
* Reliance time: each link is checked at the time it is relied upon -- the integration
  time of the record below it that its key signed, or the verification time ``at`` for
  the subject key and for an attestation. A link's window must contain its reliance
  time, and the link must have been integrated no later than it (so a record cannot be
  backed by a delegation logged after it). An endorsement, and the endorsed root record
  below it, are relied upon at the verification time ``at``: an endorsement vouches for
  another org's root as such, so it covers that org's records logged before it too.
* Scope narrows (:mod:`ledger.trust.scope`): a delegation or endorsement needs an issuer
  that may delegate; purposes intersect; an artefact name must match some glob at every
  level; the purpose asked must survive to the end and be granted by the anchor.
* Orgs: a root's org is its root record's; a delegation with ``org`` moves the subject into
  that org (a join if it differs), one without keeps the issuer's; an endorsement moves
  into the endorsed org. ``join`` marks every hop whose org differs from the one above.
* Keys: every key on the path must not be revoked or rotated away at its reliance time
  (:mod:`ledger.trust.revocation`); its algorithm must be allowed.
* Policy: the first root must be an anchor of the same org; every root must be
  HSM-held when required; at most ``max_transitive_hops`` endorsements; every record
  must be covered by the witness quorum and must not come from an equivocating origin;
  at most ``max_path_length`` hops.
Every failing rule adds a :class:`~ledger.trust.verdict.Reason`; none stops evaluation,
so a rejected candidate lists all its faults.

How (the result does not depend on it): a link is judged in two parts. What does not
depend on when it is relied upon -- scope, org, issuer rights, algorithm, witnesses,
anchor -- follows from the links above it alone (:class:`~ledger.trust.link.LinkState`);
the reliance time adds the integration, window and revocation checks and the hop itself.
Under a query memo (:class:`~ledger.trust.memo.QueryMemo`) the first part is kept per
chain prefix and the second per prefix and reliance time, so the chains of one call that
share a prefix (every artefact of one signer, every key below one issuer) judge it once;
the reasons keep the order of the rules above either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.entry import LoggedRecord
from ledger.trust.context import Event, Link, Query, Rules
from ledger.trust.link import Judged, LinkState, clean_attestation
from ledger.trust.memo import QueryMemo, StateKey
from ledger.trust.scope import Scope
from ledger.trust.verdict import Hop, Reason, TrustKind, TrustPath


def evaluate(q: Query, chain: Sequence[Link], *, purpose: str | None, reuse: TrustPath | None = None) -> TrustPath:
    """Evaluate ``chain`` (root first) for ``purpose`` (None: any purpose).

    ``reuse`` may be a path this query already evaluated for the same purpose: the hops it
    shares with ``chain`` whose reliance times cannot differ (every hop above the last
    shared record) are taken from it instead of being evaluated again. With a memo on the
    query, the judged prefixes of ``chain`` are taken from (and added to) the memo instead.
    """
    if q.memo is not None:
        return _evaluate_memo(q, q.memo, chain, purpose)
    n = len(chain)
    hops: list[Hop] = []
    reasons: list[Reason] = []
    scope, org, above, transitive = Scope.of_root(), None, frozenset[str](), 0
    start = _shared(chain, reuse)
    if reuse is not None and start:
        done = reuse.hops[:start]
        hops.extend(done)
        reasons.extend(r for r in reuse.reasons if r.hop is not None and r.hop < start)
        scope, org, transitive = done[-1].scope, done[-1].org_to, sum(h.kind == "transitive" for h in done)
        above = frozenset(k for h in done for k in (h.from_key, h.to) if k)
    for i in range(start, n):
        st = LinkState(q, chain, i, purpose, scope, org, above, transitive)
        t, signed = _reliance(q, chain, i)
        hop, why, _, _ = st.judge(q, t, signed)
        hops.append(hop)
        reasons.extend(why)
        scope, org, above, transitive = st.scope, st.org, st.above, st.transitive
    return _finish(q.rules, n, purpose, scope, transitive, hops, reasons)


def _evaluate_memo(q: Query, memo: QueryMemo, chain: Sequence[Link], purpose: str | None) -> TrustPath:
    """:func:`evaluate` through the memo (see the module docstring)."""
    hops: list[Hop] = []
    reasons: list[Reason] = []
    level = memo.link_states(purpose)
    st: LinkState | None = None
    for i in range(len(chain)):
        st = _state(q, memo, level, chain, i, st, purpose)
        judged = _judged(q, st, chain, i)
        hops.append(judged[0])
        reasons.extend(judged[1])
        level = st.children
    assert st is not None
    return _finish(q.rules, len(chain), purpose, st.scope, st.transitive, hops, reasons)


def _state(q: Query, memo: QueryMemo, level: dict[StateKey, LinkState], chain: Sequence[Link], i: int,
           above: LinkState | None, purpose: str | None) -> LinkState:
    """The state of link ``i`` after ``above`` (the memo's, or a new one it keeps)."""
    link = chain[i]
    nxt = chain[i + 1] if i + 1 < len(chain) else None
    key = (id(link.rec), link.kind, link.frm, link.to,
           id(nxt.rec) if nxt is not None and link.kind == "transitive" else 0)
    found = level.get(key)
    if found is None:
        if above is None:
            found = LinkState(q, chain, i, purpose, Scope.of_root(), None, frozenset(), 0)
        else:
            found = LinkState(q, chain, i, purpose, above.scope, above.org, above.above, above.transitive)
        # an attestation is the last link of the chains of that one attestation: not kept
        if link.kind != "attestation" and memo.add_state():
            found.pins = (link.rec, None if nxt is None else nxt.rec)
            level[key] = found
    return found


def _judged(q: Query, st: LinkState, chain: Sequence[Link], i: int) -> Judged:
    """Link ``i`` judged when the chain relies on it (the memo's, or a new one it keeps)."""
    nxt = chain[i + 1] if i + 1 < len(chain) else None
    if nxt is None or nxt.kind == "root":  # see _reliance
        t, signed = q.at, None
    else:
        t, signed = nxt.rec.ts, nxt.rec
    judged = st.judged.get((t, id(signed)))
    if judged is None:
        judged = _judge(q, st, t, signed)
        # relied upon by an attestation: that attestation's chains only
        if st.link.kind != "attestation" and (nxt is None or nxt.kind != "attestation"):
            st.judged[(t, id(signed))] = judged
    elif judged[2]:
        q.replay(judged[2])
    return judged


def _judge(q: Query, st: LinkState, t: int, signed: LoggedRecord | None) -> Judged:
    """``st.judge``, keeping what the key checks report to the query (see :data:`Judged`)."""
    if not st.check_key:
        return st.judge(q, t, signed)
    saved, q.events = q.events, []
    try:
        return st.judge(q, t, signed)
    finally:
        q.events = saved


class Prefix:
    """A chain prefix judged under a memo, for judging many chains that extend it by one
    link (the attestations of one signer: :func:`evaluate_extended`).

    Every link but the last is judged once (the link after it fixes when it is relied
    upon); the last is judged per extension.

    Raises:
        ValueError: no memo on the query, or the prefix is empty or ends with an
            endorsement (whose state depends on the link after it).
    """

    __slots__ = ("events", "hops", "last", "links", "purpose", "reasons")

    def __init__(self, q: Query, links: Sequence[Link], purpose: str | None) -> None:
        if q.memo is None or not links or links[-1].kind == "transitive":
            raise ValueError("a prefix needs a memo and a last link that is not an endorsement")
        self.links, self.purpose = tuple(links), purpose
        hops: list[Hop] = []
        reasons: list[Reason] = []
        events: list[Event] = []
        level = q.memo.link_states(purpose)
        st: LinkState | None = None
        for i in range(len(self.links)):
            st = _state(q, q.memo, level, self.links, i, st, purpose)
            if i + 1 < len(self.links):
                judged = _judged(q, st, self.links, i)
                hops.append(judged[0])
                reasons.extend(judged[1])
                events.extend(judged[2])
            level = st.children
        assert st is not None
        self.last = st
        self.hops, self.reasons, self.events = tuple(hops), tuple(reasons), tuple(events)


def evaluate_extended(q: Query, prefix: Prefix, link: Link) -> TrustPath:
    """``evaluate(q, (*prefix.links, link), purpose=prefix.purpose)``: the same path, with
    the prefix's judged links taken from ``prefix`` (``q`` must have its memo)."""
    if prefix.events:
        q.replay(prefix.events)
    chain = (*prefix.links, link)
    n = len(chain)
    last = prefix.last
    hops = [*prefix.hops]
    reasons = [*prefix.reasons]
    t, signed = (q.at, None) if link.kind == "root" else (link.rec.ts, link.rec)  # see _reliance
    judged = _judge(q, last, t, signed)
    hops.append(judged[0])
    reasons.extend(judged[1])
    st = LinkState(q, chain, n - 1, prefix.purpose, last.scope, last.org, last.above, last.transitive)
    judged = _judge(q, st, q.at, None)
    hops.append(judged[0])
    reasons.extend(judged[1])
    return _finish(q.rules, n, prefix.purpose, st.scope, st.transitive, hops, reasons)


def clean_extension(q: Query, prefix: Prefix, link: Link) -> tuple[str, ...] | None:
    """For an attestation ``link``: its names (the ``names`` of the last hop) if
    ``evaluate_extended(q, prefix, link)`` would be accepted, else None -- without making
    the path (what an item that loses trust on a signer's chain needs of it).

    Raises:
        ValueError: ``link`` is not an attestation.
    """
    if link.kind != "attestation":
        raise ValueError("clean_extension: the link must be an attestation")
    if prefix.reasons:
        return None
    if prefix.events:
        q.replay(prefix.events)
    last = prefix.last
    purpose = prefix.purpose
    if len(prefix.links) >= q.rules.max_path_length or (purpose is not None and purpose not in last.scope.purposes):
        return None
    saved, q.events = q.events, None  # as in evaluate_extended: what the key checks report is not passed on
    try:
        if last.reasons_at(q, link.rec.ts, link.rec):
            return None
    finally:
        q.events = saved
    return clean_attestation(q, link, last.scope)


def _finish(rules: Rules, n: int, purpose: str | None, scope: Scope, transitive: int, hops: list[Hop],
            reasons: list[Reason]) -> TrustPath:
    """The evaluated path, with path-level reasons (the weakest link is named when paths
    are ranked: :func:`ledger.trust.weakest.with_weakest`)."""
    if purpose is not None and purpose not in scope.purposes:
        reasons.append(Reason("purpose", f"purpose {purpose!r} is not among the purposes left "
                              f"({', '.join(scope.purposes) or 'none'})", n - 1))
    if n > rules.max_path_length:
        reasons.append(Reason("path_length", f"path has {n} hops, policy allows {rules.max_path_length}"))
    trust: TrustKind = "transitive" if transitive else "delegated"
    return TrustPath.make(tuple(hops), not reasons, trust, tuple(reasons), None)


def _shared(chain: Sequence[Link], reuse: TrustPath | None) -> int:
    """How many leading hops of ``reuse`` are valid for ``chain`` (see :func:`evaluate`)."""
    if reuse is None:
        return 0
    m = 0
    for link, hop in zip(chain, reuse.hops, strict=False):
        if hop.record is not link.rec or hop.kind != link.kind or hop.from_key != link.frm:
            break
        m += 1
    # hop j relies on the next link that is not a root after an endorsement: it must be shared
    start = m - 1
    while start > 0 and chain[start].kind == "root":
        start -= 1
    return max(start, 0)


def _reliance(q: Query, chain: Sequence[Link], i: int) -> tuple[int, LoggedRecord | None]:
    """When link ``i`` is relied upon, and the record its key signed at that time: the
    link below it, unless ``i`` is the last link or the one below is an endorsed root (an
    endorsement vouches for the root key itself, not for one act of it, so it is judged at
    the verification time and covers the endorsed org's records whenever they were
    logged; its own window and revocation apply)."""
    if i + 1 >= len(chain):
        return q.at, None
    below = chain[i + 1]
    if below.kind == "root":
        return q.at, None
    return below.rec.ts, below.rec


__all__ = ["Prefix", "clean_extension", "evaluate", "evaluate_extended"]
