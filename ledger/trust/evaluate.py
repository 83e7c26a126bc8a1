"""Evaluate one candidate chain: hops with their scope, and every reason to reject it.

Rules applied (all times are log integration times, Unix ms; windows are closed):
* Reliance time: each link is checked at the time it is relied upon -- the integration
  time of the record below it that its key signed, or the verification time ``at`` for
  the subject key and for an attestation. A link's window must contain its reliance
  time, and the link must have been integrated no later than it (so a record cannot be
  backed by a delegation logged after it). A root record after an endorsement is
  self-signed and relies on nothing; it shares the endorsement's reliance time.
* Scope narrows (:mod:`ledger.trust.scope`): a delegation or endorsement needs an issuer
  that may delegate; purposes intersect; an artefact name must match some glob at every
  level; the purpose asked must survive to the end and be granted by the anchor.
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
from ledger.trust.verdict import Hop, Position, Reason, TrustKind, TrustPath
from ledger.trust.weakest import weakest_of


def evaluate(q: Query, chain: Sequence[Link], *, purpose: str | None) -> TrustPath:
    """Evaluate ``chain`` (root first) for ``purpose`` (None: any purpose)."""
    n = len(chain)
    reliance, signed = _reliance_times(chain, q.at)
    rules, g = q.rules, q.graph
    reasons: list[Reason] = []
    hops: list[Hop] = []
    scope = Scope.of_root()
    org: str | None = None
    above: set[str] = set()
    transitive = 0
    for i, link in enumerate(chain):
        rec, t, r = link.rec, reliance[i], link.rec.record
        org_from = org
        hsm: bool | None = None
        alg: str | None = None
        window: tuple[int, int | None] | None = None
        names: tuple[str, ...] = ()
        bad = _collector(reasons, i)
        if g.is_equivocating(rec.origin):
            bad("equivocating", f"record {rec.origin}#{rec.index} comes from an equivocating log")
        witnesses = g.witnesses(rec.origin, rec.index)
        if len(witnesses) < rules.witness_quorum:
            bad("witness", f"record {rec.origin}#{rec.index} is covered by {len(witnesses)} "
                f"witness(es), policy wants {rules.witness_quorum}")
        if rec.ts > t:
            relier = "the verification time" if signed[i] is None else "the record relying on it"
            bad("not_integrated", f"{link.kind} record {rec.origin}#{rec.index} was integrated at "
                f"{rec.ts}, after {relier} ({t})")
        if isinstance(r, RootRecord):
            hsm, alg = r.hsm, r.key.alg
            if i == 0:
                org = org_from = r.org
                _anchor_checks(q, r, link.to, purpose, bad)
            else:
                e = chain[i - 1].rec.record
                if isinstance(e, Endorsement) and e.org != r.org:
                    bad("org_mismatch", f"endorsement names org {e.org!r} but the root record of "
                        f"{link.to} declares org {r.org!r}")
                org_from, org = org, r.org
            if rules.require_hsm_root and not hsm:
                bad("hsm", f"root {link.to} of org {r.org} is not HSM-held")
        elif isinstance(r, Delegation):
            _check_issuer(scope, link, bad)
            window = (r.not_before, r.not_after)
            scope = scope.delegate(artefacts=r.artefacts, purposes=r.purposes, max_depth=r.max_depth)
            org, alg = r.org, r.subject.alg
            if not scope.purposes:
                bad("purpose", f"no purpose left: {link.frm} may not grant {', '.join(r.purposes)}")
        elif isinstance(r, Endorsement):
            _check_issuer(scope, link, bad)
            window = (r.not_before, r.not_after)
            scope = scope.endorse(r.purposes)
            org = r.org
            nxt = chain[i + 1].rec.record if i + 1 < n else None
            alg = nxt.key.alg if isinstance(nxt, RootRecord) else None
            transitive += 1
            if transitive > rules.max_transitive_hops:
                bad("transitive", f"transitive hop #{transitive} ({link.frm} endorses {link.to}); "
                    f"policy allows {rules.max_transitive_hops}")
        elif isinstance(r, Rotation):
            alg = r.new.alg
        elif isinstance(r, Attestation):
            digest = link.to[7:]
            names = tuple(sorted({s.name for s in r.subjects if s.sha256 == digest}))
            key = g.public_key(KeyId(link.frm or ""))
            alg = None if key is None else key.alg
            if not any(scope.covers(nm) for nm in names):
                level = scope.first_excluding_level(names[0]) if names else None
                globs = list(scope.artefacts[level]) if level is not None else []
                bad("out_of_scope", f"artefact {', '.join(names)} is outside the scope of "
                    f"{link.frm}: no match in level {level} globs {globs}")
        if window is not None:
            _window_checks(window, t, link, bad)
        if alg is not None and alg not in rules.allowed_algorithms:
            bad("algorithm", f"key {link.to if link.kind != 'attestation' else link.frm} uses "
                f"{alg}, policy allows {', '.join(sorted(rules.allowed_algorithms))}")
        if link.frm:
            above.add(link.frm)
        if link.kind != "attestation" and not (link.kind == "root" and i > 0):
            reasons.extend(key_reasons(q, KeyId(link.to), t=t, signed=signed[i], above=above, hop=i))
        above.add(link.to)
        hops.append(_hop(q, link, i, t, scope, org_from, org, hsm, alg, window, witnesses, names))
    if purpose is not None and purpose not in scope.purposes:
        reasons.append(Reason("purpose", f"purpose {purpose!r} is not among the purposes left "
                              f"({', '.join(scope.purposes) or 'none'})", n - 1))
    if n > rules.max_path_length:
        reasons.append(Reason("path_length", f"path has {n} hops, policy allows {rules.max_path_length}"))
    trust: TrustKind = "transitive" if transitive else "delegated"
    hops_t, reasons_t = tuple(hops), tuple(reasons)
    return TrustPath(hops_t, not reasons, trust, reasons_t, weakest_of(hops_t, reasons_t, at=q.at))


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
            continue
        t, below = link.rec.ts, link.rec
    return reliance, signed


class _collector:
    """Appends reasons for hop ``i`` (a callable, to keep checks one line each)."""

    __slots__ = ("hop", "out")

    def __init__(self, out: list[Reason], hop: int) -> None:
        self.out, self.hop = out, hop

    def __call__(self, code: str, message: str) -> None:
        self.out.append(Reason(code, message, self.hop))


def _anchor_checks(q: Query, r: RootRecord, key: str, purpose: str | None, bad: _collector) -> None:
    anchors = q.rules.anchors
    if anchors is None:
        return
    a = anchors.get(key)
    if a is None:
        bad("not_anchor", f"root {key} (org {r.org}) is not an anchor of the policy")
    elif a.org != r.org:
        bad("not_anchor", f"the policy pins {key} for org {a.org!r} but its root record declares org {r.org!r}")
    elif purpose is not None and purpose not in a.purposes:
        bad("anchor_purpose", f"the policy trusts anchor {a.org} for {', '.join(a.purposes)} only, not {purpose!r}")


def _check_issuer(scope: Scope, link: Link, bad: _collector) -> None:
    if not scope.can_delegate():
        code, why = scope.why_not_delegate()
        verb = "endorse" if link.kind == "transitive" else "delegate to"
        bad(code, f"{link.frm} may not {verb} {link.to}: it {why}")


def _window_checks(window: tuple[int, int | None], t: int, link: Link, bad: _collector) -> None:
    nb, na = window
    if t < nb:
        bad("not_yet_valid", f"{link.kind} {link.frm} -> {link.to} is valid from {nb}; relied upon at {t}")
    if na is not None and t > na:
        bad("expired", f"{link.kind} {link.frm} -> {link.to} expired at {na}; relied upon at {t}")


def _hop(
    q: Query, link: Link, i: int, t: int, scope: Scope, org_from: str | None, org_to: str | None,
    hsm: bool | None, alg: str | None, window: tuple[int, int | None] | None,
    witnesses: frozenset[str], names: tuple[str, ...],
) -> Hop:
    nb, na = window if window is not None else (None, None)
    return Hop(
        kind=link.kind, from_key=link.frm, to=link.to, org_from=org_from, org_to=org_to,
        join=org_from is not None and org_to is not None and org_from != org_to,
        position=Position.of(link.rec), reliance_time=t, scope=scope, not_before=nb, not_after=na,
        expired_now=na is not None and na < q.at, hsm=hsm, alg=alg,
        witnesses=tuple(sorted(witnesses)), names=names, record=link.rec,
    )


__all__ = ["evaluate"]
