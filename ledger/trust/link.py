"""Judging one link of a candidate chain: :class:`LinkState`.

A link is judged in two parts (the rules are listed in :mod:`ledger.trust.evaluate`).
What does not depend on when it is relied upon -- scope, org, issuer rights, algorithm,
witnesses, anchor -- follows from the links above it alone and is fixed when the state is
made; :meth:`LinkState.judge` adds what the reliance time decides (the integration,
window and revocation checks) and makes the hop.

Invariants: a state never changes once made (a memo may share it between the chains of
one call that extend the same prefix); the reasons keep the order of the rules.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.keys import KeyId, PublicKey
from ledger.records import Delegation, Endorsement, RootRecord, Rotation
from ledger.trust.context import Event, Link, Query, Rules
from ledger.trust.memo import StateKey
from ledger.trust.revocation import key_reasons
from ledger.trust.scope import Scope
from ledger.trust.verdict import Hop, Position, Reason, rfc3339

Judged = tuple[Hop, tuple[Reason, ...], tuple[Event, ...], LoggedRecord | None]
"""A link judged at one reliance time: its hop, its reasons (all of them, in rule order),
what key checks reported to the query, and the record it was relied upon by (kept alive)."""



class LinkState:
    """Link ``i`` of a chain judged as far as its reliance time does not matter, and the
    scope, org, keys above and transitive hops after it (see the module docstring).

    Under a memo it is also a node of the prefix tree: ``children`` are the states of the
    links that follow this prefix, ``judged`` the link judged per reliance time.
    """

    __slots__ = ("above", "alg", "by_kind", "by_policy", "check_key", "children", "first", "fixed", "hsm", "i",
                 "join", "judged", "key_above", "link", "names", "org", "org_from", "pins", "position",
                 "scope", "transitive", "window", "witnesses")

    def __init__(self, q: Query, chain: Sequence[Link], i: int, purpose: str | None, scope: Scope,
                 org: str | None, above: frozenset[str], transitive: int) -> None:
        link = chain[i]
        rec = link.rec
        r, g, rules, origin, kind = rec.record, q.graph, q.rules, rec.origin, link.kind
        self.link, self.i = link, i
        self.children: dict[StateKey, LinkState] = {}
        self.judged: dict[tuple[int, int], Judged] = {}
        self.pins: tuple[LoggedRecord, LoggedRecord | None] | None = None
        first: list[Reason] = []  # before the integration check
        by_kind: list[Reason] = []  # before the window checks
        org_from = org
        hsm: bool | None = None
        alg: str | None = None
        window: tuple[int, int | None] | None = None
        names: tuple[str, ...] = ()
        if g.is_equivocating(origin):
            first.append(Reason("equivocating", f"record {origin}#{rec.index} comes from an equivocating log", i))
        witnesses = g.witnesses(origin, rec.index)
        if len(witnesses) < rules.witness_quorum:
            first.append(Reason("witness", f"record {origin}#{rec.index} is covered by {len(witnesses)} "
                                f"witness(es), policy wants {rules.witness_quorum}", i))
        if isinstance(r, Delegation):
            if not scope.can_delegate():
                _check_issuer(by_kind, scope, link, i)
            window = (r.not_before, r.not_after)
            scope = scope.delegate(artefacts=r.artefacts, purposes=r.purposes, max_depth=r.max_depth)
            # nil org: the subject acts for the issuer's organisation (no join)
            org, alg = r.org or org_from, r.subject.alg
            if not scope.purposes:
                by_kind.append(Reason("purpose", f"no purpose left: {link.frm} may not grant {', '.join(r.purposes)}", i))
        elif isinstance(r, RootRecord):
            hsm, alg = r.hsm, r.key.alg
            if i == 0:
                org = org_from = r.org
                _anchor_checks(by_kind, rules, purpose, r, link.to)
            else:
                e = chain[i - 1].rec.record
                if isinstance(e, Endorsement) and e.org != r.org:
                    by_kind.append(Reason("org_mismatch", f"endorsement names org {e.org!r} but the root record of "
                                          f"{link.to} declares org {r.org!r}", i))
                org = r.org
            if rules.require_hsm_root and not hsm:
                by_kind.append(Reason("hsm", f"root {link.to} of org {r.org} is not HSM-held", i))
        elif isinstance(r, Endorsement):
            _check_issuer(by_kind, scope, link, i)
            window = (r.not_before, r.not_after)
            scope = scope.endorse(r.purposes)
            org = r.org
            nxt = chain[i + 1].rec.record if i + 1 < len(chain) else None
            alg = nxt.key.alg if isinstance(nxt, RootRecord) else None
            transitive += 1
            if transitive > rules.max_transitive_hops:
                by_kind.append(Reason("transitive", f"transitive hop #{transitive} ({link.frm} endorses {link.to}); "
                                      f"policy allows {rules.max_transitive_hops}", i))
        elif isinstance(r, Rotation):
            alg = r.new.alg
        elif isinstance(r, Attestation):
            names, alg = _attestation(by_kind, g.public_key(KeyId(link.frm or "")), scope, link, r, i)
        self.first = tuple(first) if first else ()
        self.by_kind = tuple(by_kind) if by_kind else ()
        self.by_policy: tuple[Reason, ...] = ()
        if alg is not None and alg not in rules.allowed_algorithms:
            self.by_policy = (Reason("algorithm", f"key {link.to if kind != 'attestation' else link.frm} uses "
                                     f"{alg}, policy allows {', '.join(sorted(rules.allowed_algorithms))}", i),)
        # the reasons when no time-bound one applies
        self.fixed = (*self.first, *self.by_kind, *self.by_policy) if first or by_kind or self.by_policy else ()
        frm, to = link.frm, link.to
        key_above = above | {frm} if frm and frm not in above else above
        self.key_above = key_above
        # an attestation is always a chain's last link: nothing is judged below it
        self.above = key_above if kind == "attestation" or to in key_above else key_above | {to}
        self.check_key = kind != "attestation" and not (kind == "root" and i > 0) and bool(
            g.revocations_of(KeyId(to)) or g.rotations_from(KeyId(to)))
        self.scope, self.org, self.transitive, self.org_from = scope, org, transitive, org_from
        self.join = org_from is not None and org is not None and org_from != org
        self.position = Position.of(rec)
        self.hsm, self.alg, self.window, self.names = hsm, alg, window, names
        self.witnesses = tuple(sorted(witnesses)) if witnesses else ()

    def judge(self, q: Query, t: int, signed: LoggedRecord | None) -> Judged:
        """The link relied upon at ``t`` by ``signed`` (None: the verification time)."""
        link = self.link
        reasons = self.reasons_at(q, t, signed)
        window = self.window
        nb, na = (None, None) if window is None else window
        hop = Hop.make(link.kind, link.frm, link.to, self.org_from, self.org, self.join, self.position, t, self.scope,
                       nb, na, na is not None and na < q.at, self.hsm, self.alg, self.witnesses, self.names, link.rec)
        return hop, reasons, tuple(q.events) if q.events else (), signed

    def reasons_at(self, q: Query, t: int, signed: LoggedRecord | None) -> tuple[Reason, ...]:
        """The reasons of :meth:`judge` (empty: the link holds at ``t``), without the hop."""
        link, rec, i = self.link, self.link.rec, self.i
        late: tuple[Reason, ...] = ()
        if rec.ts > t:
            relier = "the verification time" if signed is None else "the record relying on it"
            late = (Reason("not_integrated", f"{link.kind} record {rec.origin}#{rec.index} was integrated at "
                           f"{rec.ts}, after {relier} ({t})", i),)
        outside: list[Reason] = []
        if self.window is not None:
            nb, na = self.window
            if t < nb:
                outside.append(Reason("not_yet_valid", f"{link.kind} {link.frm} -> {link.to} is valid from "
                                      f"{rfc3339(nb)}; relied upon at {rfc3339(t)}", i))
            if na is not None and t > na:
                outside.append(Reason("expired", f"{link.kind} {link.frm} -> {link.to} expired at {rfc3339(na)}; "
                                      f"relied upon at {rfc3339(t)}", i))
        keyed: list[Reason] = []
        if self.check_key:
            keyed = key_reasons(q, KeyId(link.to), t=t, signed=signed, above=self.key_above, hop=i)
        if late or outside or keyed:
            return (*self.first, *late, *self.by_kind, *outside, *self.by_policy, *keyed)
        return self.fixed


def clean_attestation(q: Query, link: Link, scope: Scope) -> tuple[str, ...] | None:
    """The names of attestation ``link`` if, after links that leave ``scope``, its state
    would hold no reason and judging it at ``q.at`` would add none (what
    ``LinkState(...).judge(q, q.at, None)`` finds, without making either); else None."""
    rec, g, rules = link.rec, q.graph, q.rules
    if rec.ts > q.at or g.is_equivocating(rec.origin):
        return None
    if rules.witness_quorum and len(g.witnesses(rec.origin, rec.index)) < rules.witness_quorum:
        return None
    r = rec.record
    assert isinstance(r, Attestation)
    names = _names(r, link.to)
    if not any(scope.covers(nm) for nm in names):
        return None
    key = g.public_key(KeyId(link.frm or ""))
    if key is not None and key.alg not in rules.allowed_algorithms:
        return None
    return names


def _names(r: Attestation, subject: str) -> tuple[str, ...]:
    """The names under which attestation ``r`` carries ``subject`` (``sha256:<hex>``)."""
    digest = subject[7:]
    subjects = r.subjects
    if len(subjects) == 1:  # the common case, without the set
        return (subjects[0].name,) if subjects[0].sha256 == digest else ()
    return tuple(sorted({s.name for s in subjects if s.sha256 == digest}))


def _attestation(out: list[Reason], key: PublicKey | None, scope: Scope, link: Link, r: Attestation,
                 i: int) -> tuple[tuple[str, ...], str | None]:
    names = _names(r, link.to)
    if not any(scope.covers(nm) for nm in names):
        level = scope.first_excluding_level(names[0]) if names else None
        globs = list(scope.artefacts[level]) if level is not None else []
        out.append(Reason("out_of_scope", f"artefact {', '.join(names)} is outside the scope of "
                          f"{link.frm}: no match in level {level} globs {globs}", i))
    return names, None if key is None else key.alg


def _anchor_checks(out: list[Reason], rules: Rules, purpose: str | None, r: RootRecord, key: str) -> None:
    anchors = rules.anchors
    if anchors is None:
        return
    a = anchors.get(key)
    if a is None:
        out.append(Reason("not_anchor", f"root {key} (org {r.org}) is not an anchor of the policy", 0))
    elif a.org != r.org:
        out.append(Reason("not_anchor", f"the policy pins {key} for org {a.org!r} but its root record declares "
                          f"org {r.org!r}", 0))
    elif purpose is not None and purpose not in a.purposes:
        out.append(Reason("anchor_purpose", f"the policy trusts anchor {a.org} for {', '.join(a.purposes)} only, "
                          f"not {purpose!r}", 0))


def _check_issuer(out: list[Reason], scope: Scope, link: Link, i: int) -> None:
    if not scope.can_delegate():
        code, why = scope.why_not_delegate()
        verb = "endorse" if link.kind == "transitive" else "delegate to"
        out.append(Reason(code, f"{link.frm} may not {verb} {link.to}: it {why}", i))


__all__ = ["Judged", "LinkState", "clean_attestation"]
