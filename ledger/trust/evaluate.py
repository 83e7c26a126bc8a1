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
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.records import Delegation, Endorsement, RootRecord, Rotation
from ledger.trust.context import Link, Query
from ledger.trust.revocation import key_reasons
from ledger.trust.scope import Scope
from ledger.trust.verdict import Hop, Position, Reason, TrustKind, TrustPath, rfc3339


def evaluate(q: Query, chain: Sequence[Link], *, purpose: str | None, reuse: TrustPath | None = None) -> TrustPath:
    """Evaluate ``chain`` (root first) for ``purpose`` (None: any purpose).

    ``reuse`` may be a path this query already evaluated for the same purpose: the hops it
    shares with ``chain`` whose reliance times cannot differ (every hop above the last
    shared record) are taken from it instead of being evaluated again.
    """
    reliance, signed = _reliance_times(chain, q.at)
    walk = _Walk(q, chain, purpose, reliance, signed)
    start = _shared(chain, reuse)
    if reuse is not None and start:
        walk.resume(reuse, start)
    for i in range(start, len(chain)):
        walk.step(i)
    return walk.finish()


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


class _Walk:
    """The state of one evaluation, root to leaf (see the module docstring)."""

    __slots__ = ("above", "chain", "g", "hops", "i", "org", "purpose", "q", "reasons", "reliance",
                 "rules", "scope", "signed", "transitive")

    def __init__(self, q: Query, chain: Sequence[Link], purpose: str | None, reliance: list[int],
                 signed: list[LoggedRecord | None]) -> None:
        self.q, self.g, self.rules, self.chain, self.purpose = q, q.graph, q.rules, chain, purpose
        self.reliance, self.signed = reliance, signed
        self.reasons: list[Reason] = []
        self.hops: list[Hop] = []
        self.scope = Scope.of_root()
        self.org: str | None = None
        self.above: set[str] = set()
        self.transitive = 0
        self.i = 0

    def bad(self, code: str, message: str) -> None:
        """A reason against the current hop."""
        self.reasons.append(Reason(code, message, self.i))

    def resume(self, reuse: TrustPath, start: int) -> None:
        """Take hops ``[0, start)`` and their reasons from ``reuse``."""
        done = reuse.hops[:start]
        self.hops = list(done)
        self.reasons = [r for r in reuse.reasons if r.hop is not None and r.hop < start]
        self.scope, self.org = done[-1].scope, done[-1].org_to
        self.transitive = sum(h.kind == "transitive" for h in done)
        for h in done:
            if h.from_key:
                self.above.add(h.from_key)
            self.above.add(h.to)

    def step(self, i: int) -> None:
        """Evaluate link ``i``."""
        self.i = i
        link, t, rules, g = self.chain[i], self.reliance[i], self.rules, self.g
        rec, r = link.rec, link.rec.record
        org_from = self.org
        hsm: bool | None = None
        alg: str | None = None
        window: tuple[int, int | None] | None = None
        names: tuple[str, ...] = ()
        if g.is_equivocating(rec.origin):
            self.bad("equivocating", f"record {rec.origin}#{rec.index} comes from an equivocating log")
        witnesses = g.witnesses(rec.origin, rec.index)
        if len(witnesses) < rules.witness_quorum:
            self.bad("witness", f"record {rec.origin}#{rec.index} is covered by {len(witnesses)} "
                     f"witness(es), policy wants {rules.witness_quorum}")
        if rec.ts > t:
            relier = "the verification time" if self.signed[i] is None else "the record relying on it"
            self.bad("not_integrated", f"{link.kind} record {rec.origin}#{rec.index} was integrated at "
                     f"{rec.ts}, after {relier} ({t})")
        if isinstance(r, RootRecord):
            hsm, alg = r.hsm, r.key.alg
            if i == 0:
                self.org = org_from = r.org
                self._anchor_checks(r, link.to)
            else:
                e = self.chain[i - 1].rec.record
                if isinstance(e, Endorsement) and e.org != r.org:
                    self.bad("org_mismatch", f"endorsement names org {e.org!r} but the root record of "
                             f"{link.to} declares org {r.org!r}")
                self.org = r.org
            if rules.require_hsm_root and not hsm:
                self.bad("hsm", f"root {link.to} of org {r.org} is not HSM-held")
        elif isinstance(r, Delegation):
            self._check_issuer(link)
            window = (r.not_before, r.not_after)
            self.scope = self.scope.delegate(artefacts=r.artefacts, purposes=r.purposes, max_depth=r.max_depth)
            # nil org: the subject acts for the issuer's organisation (no join)
            self.org, alg = r.org or org_from, r.subject.alg
            if not self.scope.purposes:
                self.bad("purpose", f"no purpose left: {link.frm} may not grant {', '.join(r.purposes)}")
        elif isinstance(r, Endorsement):
            self._check_issuer(link)
            window = (r.not_before, r.not_after)
            self.scope = self.scope.endorse(r.purposes)
            self.org = r.org
            nxt = self.chain[i + 1].rec.record if i + 1 < len(self.chain) else None
            alg = nxt.key.alg if isinstance(nxt, RootRecord) else None
            self.transitive += 1
            if self.transitive > rules.max_transitive_hops:
                self.bad("transitive", f"transitive hop #{self.transitive} ({link.frm} endorses {link.to}); "
                         f"policy allows {rules.max_transitive_hops}")
        elif isinstance(r, Rotation):
            alg = r.new.alg
        elif isinstance(r, Attestation):
            names, alg = self._attestation(link, r)
        if window is not None:
            self._window_checks(window, t, link)
        if alg is not None and alg not in rules.allowed_algorithms:
            self.bad("algorithm", f"key {link.to if link.kind != 'attestation' else link.frm} uses "
                     f"{alg}, policy allows {', '.join(sorted(rules.allowed_algorithms))}")
        if link.frm:
            self.above.add(link.frm)
        if link.kind != "attestation" and not (link.kind == "root" and i > 0):
            self.reasons.extend(key_reasons(self.q, KeyId(link.to), t=t, signed=self.signed[i],
                                            above=self.above, hop=i))
        self.above.add(link.to)
        nb, na = window if window is not None else (None, None)
        self.hops.append(Hop(
            kind=link.kind, from_key=link.frm, to=link.to, org_from=org_from, org_to=self.org,
            join=org_from is not None and self.org is not None and org_from != self.org,
            position=Position.of(rec), reliance_time=t, scope=self.scope, not_before=nb, not_after=na,
            expired_now=na is not None and na < self.q.at, hsm=hsm, alg=alg,
            witnesses=tuple(sorted(witnesses)) if witnesses else (), names=names, record=rec,
        ))

    def finish(self) -> TrustPath:
        """The evaluated path, with path-level reasons (the weakest link is named when paths
        are ranked: :func:`ledger.trust.weakest.with_weakest`)."""
        n, purpose, scope = len(self.chain), self.purpose, self.scope
        if purpose is not None and purpose not in scope.purposes:
            self.reasons.append(Reason("purpose", f"purpose {purpose!r} is not among the purposes left "
                                       f"({', '.join(scope.purposes) or 'none'})", n - 1))
        if n > self.rules.max_path_length:
            self.reasons.append(Reason("path_length", f"path has {n} hops, policy allows "
                                       f"{self.rules.max_path_length}"))
        trust: TrustKind = "transitive" if self.transitive else "delegated"
        hops, reasons = tuple(self.hops), tuple(self.reasons)
        return TrustPath(hops, not reasons, trust, reasons, None)

    def _attestation(self, link: Link, r: Attestation) -> tuple[tuple[str, ...], str | None]:
        digest = link.to[7:]
        names = tuple(sorted({s.name for s in r.subjects if s.sha256 == digest}))
        key = self.g.public_key(KeyId(link.frm or ""))
        scope = self.scope
        if not any(scope.covers(nm) for nm in names):
            level = scope.first_excluding_level(names[0]) if names else None
            globs = list(scope.artefacts[level]) if level is not None else []
            self.bad("out_of_scope", f"artefact {', '.join(names)} is outside the scope of "
                     f"{link.frm}: no match in level {level} globs {globs}")
        return names, None if key is None else key.alg

    def _anchor_checks(self, r: RootRecord, key: str) -> None:
        anchors, purpose = self.rules.anchors, self.purpose
        if anchors is None:
            return
        a = anchors.get(key)
        if a is None:
            self.bad("not_anchor", f"root {key} (org {r.org}) is not an anchor of the policy")
        elif a.org != r.org:
            self.bad("not_anchor", f"the policy pins {key} for org {a.org!r} but its root record declares "
                     f"org {r.org!r}")
        elif purpose is not None and purpose not in a.purposes:
            self.bad("anchor_purpose", f"the policy trusts anchor {a.org} for {', '.join(a.purposes)} only, "
                     f"not {purpose!r}")

    def _check_issuer(self, link: Link) -> None:
        if not self.scope.can_delegate():
            code, why = self.scope.why_not_delegate()
            verb = "endorse" if link.kind == "transitive" else "delegate to"
            self.bad(code, f"{link.frm} may not {verb} {link.to}: it {why}")

    def _window_checks(self, window: tuple[int, int | None], t: int, link: Link) -> None:
        nb, na = window
        if t < nb:
            self.bad("not_yet_valid", f"{link.kind} {link.frm} -> {link.to} is valid from {rfc3339(nb)}; relied upon at {rfc3339(t)}")
        if na is not None and t > na:
            self.bad("expired", f"{link.kind} {link.frm} -> {link.to} expired at {rfc3339(na)}; relied upon at {rfc3339(t)}")


def _reliance_times(chain: Sequence[Link], at: int) -> tuple[list[int], list[LoggedRecord | None]]:
    """Per link: when it is relied upon, and the record its key signed at that time."""
    n = len(chain)
    reliance = [at] * n
    signed: list[LoggedRecord | None] = [None] * n
    t, below = at, None
    for i in range(n - 1, -1, -1):
        reliance[i], signed[i] = t, below
        link = chain[i]
        if link.kind == "root" and i > 0:
            # An endorsed root: the endorsement vouches for the root key itself, not for one
            # act of it, so it is judged at the verification time and covers the endorsed
            # org's records whenever they were logged (its own window and revocation apply).
            t, below = at, None
            continue
        t, below = link.rec.ts, link.rec
    return reliance, signed


__all__ = ["evaluate"]
