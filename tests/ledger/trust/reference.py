"""A naive reference model of the trust rules, for property tests.

It re-derives everything from the flat list of logged records by scanning (no indexes,
no memos, no Scope class), enumerates every simple chain, and judges each chain by the
rules as the module docstrings of ``ledger.trust`` state them. Slow and obvious on purpose.
A record logged more than once is one link: its earliest copy (the engine's choice when
no origin equivocates and no witness quorum applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.records import Delegation, Endorsement, Revocation, RootRecord, Rotation
from ledger.trust import Policy

ALL = frozenset({"release", "build", "log", "delegate"})
UNBOUNDED = 10**6


@dataclass(frozen=True)
class Step:
    """One link of a chain (root first): kind, record, signing key, key landed on."""

    kind: str
    rec: LoggedRecord
    frm: str | None
    to: str


Chain = tuple[Step, ...]


def signature(chain: Sequence[Step]) -> tuple[tuple[str, str, int], ...]:
    """A comparable identity of a chain."""
    return tuple((s.kind, s.rec.origin, s.rec.index) for s in chain)


class Reference:
    """The naive model over ``records`` under a policy (or every root, if None)."""

    def __init__(self, records: Sequence[LoggedRecord], policy: Policy | None, at: int) -> None:
        first: dict[bytes, LoggedRecord] = {}
        for r in records:  # a record logged twice is one link: its earliest copy
            first.setdefault(r.record_id, r)
        self.recs = list(first.values())
        self.policy = policy
        self.at = at
        self.max_len = policy.max_path_length if policy else 36

    # --- enumeration -------------------------------------------------------------------

    def chains_to_key(self, key: str) -> list[Chain]:
        out: list[Chain] = []
        self._up(key, [], {key}, out)
        return out

    def chains_to_artefact(self, digest: str) -> list[Chain]:
        out: list[Chain] = []
        for r in self.recs:
            if isinstance(r.record, Attestation) and any(s.sha256 == digest for s in r.record.subjects):
                for signer in r.signers:
                    self._up(signer, [Step("attestation", r, signer, "sha256:" + digest)], {signer}, out)
        return out

    def _roots(self, key: str) -> list[LoggedRecord]:
        return [r for r in self.recs if isinstance(r.record, RootRecord) and r.record.key.key_id == key]

    def _up(self, key: str, below: list[Step], seen: set[str], out: list[Chain]) -> None:
        roots = self._roots(key)
        for r in roots:
            if len(below) + 1 <= self.max_len:
                out.append((Step("root", r, None, key), *reversed(below)))
        for r in self.recs:
            rec = r.record
            if isinstance(rec, Delegation) and rec.subject.key_id == key:
                self._go(rec.issuer, [*below, Step("delegated", r, rec.issuer, key)], seen, out, 2)
            elif isinstance(rec, Rotation) and rec.new.key_id == key:
                self._go(rec.old, [*below, Step("rotation", r, rec.old, key)], seen, out, 2)
            elif isinstance(rec, Endorsement) and rec.root == key and roots:
                mid = next((x for x in roots if x.record.org == rec.org), roots[0])  # type: ignore[union-attr]
                steps = [*below, Step("root", mid, None, key), Step("transitive", r, rec.endorser, key)]
                self._go(rec.endorser, steps, seen, out, 3)

    def _go(self, parent: str, steps: list[Step], seen: set[str], out: list[Chain], need: int) -> None:
        added = 1 if need == 2 else 2
        if parent in seen or len(steps) - added + need > self.max_len:
            return
        self._up(parent, steps, seen | {parent}, out)

    # --- judgement ---------------------------------------------------------------------

    def faults(self, chain: Chain, purpose: str | None) -> list[str]:
        """Every rule the chain breaks (empty: the chain is valid)."""
        bad: list[str] = []
        n = len(chain)
        pol = self.policy
        # reliance time of each step: the ts of the step below it; an endorsement (the step
        # above an endorsed root) and the last step are judged at the verification time
        rel: list[int] = []
        signed: list[LoggedRecord | None] = []
        for i in range(n):
            nxt = chain[i + 1] if i + 1 < n else None
            if nxt is None or nxt.kind == "root":
                rel.append(self.at)
                signed.append(None)
            else:
                rel.append(nxt.rec.ts)
                signed.append(nxt.rec)
        levels: list[frozenset[str]] = []
        purposes = set(ALL)
        depth = UNBOUNDED
        root_pos = True
        transitive = 0
        above: list[str] = []
        for i, s in enumerate(chain):
            t, rec = rel[i], s.rec.record
            if s.rec.ts > t:
                bad.append("not_integrated")
            if isinstance(rec, RootRecord):
                if pol is not None and not rec.hsm and pol.require_hsm_root:
                    bad.append("hsm")
                if i == 0 and pol is not None:
                    a = pol.anchor_for(s.to)
                    if a is None or a.org != rec.org:
                        bad.append("not_anchor")
                    elif purpose is not None and purpose not in a.purposes:
                        bad.append("anchor_purpose")
                if i > 0 and rec.org != chain[i - 1].rec.record.org:  # type: ignore[union-attr]
                    bad.append("org_mismatch")
                if pol is not None and rec.key.alg not in pol.allowed_algorithms:
                    bad.append("algorithm")
            elif isinstance(rec, Delegation | Endorsement):
                if depth <= 0 or not (root_pos or "delegate" in purposes):
                    bad.append("cannot_delegate")
                if not rec.not_before <= t or (rec.not_after is not None and t > rec.not_after):
                    bad.append("window")
                purposes &= set(rec.purposes)
                if isinstance(rec, Delegation):
                    levels.append(frozenset(rec.artefacts))
                    depth = min(rec.max_depth, depth - 1)
                    root_pos = False
                    if not purposes:
                        bad.append("purpose")
                    if pol is not None and rec.subject.alg not in pol.allowed_algorithms:
                        bad.append("algorithm")
                else:
                    depth -= 1
                    root_pos = True
                    transitive += 1
            elif isinstance(rec, Rotation):
                if pol is not None and rec.new.alg not in pol.allowed_algorithms:
                    bad.append("algorithm")
            elif isinstance(rec, Attestation):
                names = [a.name for a in rec.subjects if "sha256:" + a.sha256 == s.to]
                if not any(all(any(fnmatchcase(nm, g) for g in lv) for lv in levels) for nm in names):
                    bad.append("out_of_scope")
            if s.frm is not None:
                above.append(s.frm)
            if s.kind != "attestation" and not (s.kind == "root" and i > 0):
                bad += self._key_faults(s.to, t, signed[i], above)
            above.append(s.to)
        if purpose is not None and purpose not in purposes:
            bad.append("purpose")
        if pol is not None and transitive > pol.max_transitive_hops:
            bad.append("transitive")
        if n > self.max_len:
            bad.append("path_length")
        return bad

    def _key_faults(self, key: str, t: int, signed: LoggedRecord | None, above: list[str]) -> list[str]:
        bad = []
        for r in self.recs:
            rec = r.record
            applies = isinstance(rec, Revocation) and rec.target == key and (rec.since is None or rec.since <= t)
            if applies and isinstance(rec, Revocation) and (
                rec.issuer == key or rec.issuer in above
                or (rec.issuer in self._above(key, endorsements=False) and self._anchored(rec.issuer))
            ):
                bad.append("revoked")
            ends = isinstance(rec, Rotation) and rec.old == key and r.ts <= t
            if ends and (signed is None or signed.record_id != r.record_id):
                bad.append("rotated")
        return bad

    def _above(self, key: str, *, endorsements: bool) -> set[str]:
        found: set[str] = set()
        frontier = {key}
        while frontier:
            nxt: set[str] = set()
            for r in self.recs:
                rec = r.record
                if isinstance(rec, Delegation) and rec.subject.key_id in frontier:
                    nxt.add(rec.issuer)
                elif isinstance(rec, Rotation) and rec.new.key_id in frontier:
                    nxt.add(rec.old)
                elif endorsements and isinstance(rec, Endorsement) and rec.root in frontier:
                    nxt.add(rec.endorser)
            frontier = nxt - found
            found |= nxt
        return found

    def _anchored(self, key: str) -> bool:
        for k in {key} | self._above(key, endorsements=True):
            if self._roots(k) and (self.policy is None or self.policy.anchor_for(k) is not None):
                return True
        return False


__all__ = ["Chain", "Reference", "Step", "signature"]
