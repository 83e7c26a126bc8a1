"""Append-time admission: may these signers append this record to a log, now?

The log calls :func:`admit` before appending, with the graph of the records it holds and
the integration time ``at`` the record would get. The rules:

* A root record must be self-signed and admitted by the log's :class:`RootsPolicy`; a
  key that already is the root of another org is refused (one key, one org).
* Every other record needs the signer(s) its kind requires (delegation: issuer;
  endorsement: endorser; revocation: issuer; rotation: old AND new key; attestation: any
  signer), and that signer must be valid at ``at``: a root, or a key validly delegated
  from a root (delegated paths only -- an endorsement grants no right to write), not
  revoked, rotated away or expired.
* Scope: a delegation's issuer must be able to delegate (a root position or the
  ``delegate`` purpose, and depth left); an endorser likewise; a revocation's issuer must
  be the target or a structural ancestor of it; a rotation's old key must be valid now;
  an attestation needs one signer holding ``release`` or ``build`` for every subject name.

Errors name the signer and the rule (``signer`` and ``rule`` evidence fields):
:class:`~ledger.errors.RevokedError`, :class:`~ledger.errors.ExpiredError`,
:class:`~ledger.errors.ScopeError` or :class:`~ledger.errors.NotAdmittedError`.
Cycles, duplicates and conflicting records terminate: the searches are bounded and
duplicates are the log's business (same record id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger.attestation import Attestation
from ledger.entry import Record
from ledger.errors import ExpiredError, NotAdmittedError, RevokedError, ScopeError
from ledger.keys import KeyId
from ledger.records import (
    Delegation,
    Endorsement,
    Revocation,
    RootRecord,
    Rotation,
    required_signers,
)
from ledger.trust.context import Query, Rules
from ledger.trust.explain import explain_with
from ledger.trust.graph import TrustGraph
from ledger.trust.revocation import is_structural_ancestor, reaches_anchor
from ledger.trust.verdict import Reason, TrustPath, rfc3339

_RULES = Rules.open(max_transitive_hops=0)
_ADMIT_LIMIT = 16
_ERRORS: dict[str, type[NotAdmittedError]] = {
    "revoked": RevokedError, "rotated": RevokedError,
    "expired": ExpiredError, "not_yet_valid": ExpiredError, "not_integrated": ExpiredError,
    "out_of_scope": ScopeError, "over_depth": ScopeError, "cannot_delegate": ScopeError,
    "purpose": ScopeError,
}


@dataclass(frozen=True)
class RootsPolicy:
    """Which root records a log admits: any self-signed root, or only listed keys / orgs.

    A root is admitted when ``allow_any`` is set, or its key id is in ``key_ids``, or its
    org is in ``orgs``. Whatever the policy, a root record must be self-signed.
    """

    allow_any: bool = False
    key_ids: frozenset[str] = frozenset()
    orgs: frozenset[str] = frozenset()

    @classmethod
    def any_self_signed(cls) -> RootsPolicy:
        """Admit any self-signed root."""
        return cls(allow_any=True)

    @classmethod
    def only_keys(cls, key_ids: Iterable[str]) -> RootsPolicy:
        """Admit roots with these key ids only."""
        return cls(key_ids=frozenset(key_ids))

    @classmethod
    def only_orgs(cls, orgs: Iterable[str]) -> RootsPolicy:
        """Admit roots of these orgs only."""
        return cls(orgs=frozenset(orgs))

    def allows(self, root: RootRecord) -> bool:
        """True if this policy admits ``root`` (self-signature is checked separately)."""
        return self.allow_any or root.key.key_id in self.key_ids or root.org in self.orgs


class SignerPaths:
    """A memo of each signer's accepted delegated paths, for admitting many attestations.

    A log admits a batch of attestations at one time ``at`` against one state of its key
    records, and most of them have the same few signers; the path search is the costly
    part of admission (tens of microseconds), the scope check per record is cheap. What is
    remembered holds for one :attr:`TrustGraph.version` and is forgotten when it changes.

    Only acceptance is taken from the memo: when no remembered path lets a signer attest,
    admission runs its full search as if there were no memo, so answers and refusal
    messages are the same with or without it.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self._paths: dict[tuple[KeyId, int], tuple[TrustPath, ...]] = {}
        self._graph: tuple[int, int] = (0, -1)  # (id, version) of the graph the paths are of
        self._max = max_entries

    def accepted(self, graph: TrustGraph, kid: KeyId, at: int) -> tuple[TrustPath, ...]:
        """The accepted delegated paths of ``kid`` at ``at`` (the first ``_ADMIT_LIMIT``)."""
        if self._graph != (id(graph), graph.version):
            self._paths, self._graph = {}, (id(graph), graph.version)
        paths = self._paths.get((kid, at))
        if paths is None:
            ex = explain_with(graph, kid, rules=_RULES, purpose=None, at=at, kind="key", limit=_ADMIT_LIMIT,
                              viable_only=True)
            paths = tuple(ex.accepted)
            if len(self._paths) >= self._max:
                self._paths = {}
            self._paths[(kid, at)] = paths
        return paths


def admit(
    graph: TrustGraph,
    *,
    record: Record,
    signers: Sequence[KeyId],
    origin: str,
    at: int,
    roots_policy: RootsPolicy,
    memo: SignerPaths | None = None,
) -> None:
    """Raise unless ``signers`` may append ``record`` to log ``origin`` at time ``at``.

    ``memo`` (optional) remembers signers' paths between calls; see :class:`SignerPaths`.

    Raises:
        NotAdmittedError: no acceptable signer, a required signature is missing, a
            root is not admitted, or a revocation's issuer has no right over its target.
        RevokedError, ExpiredError: the signer (or a key above it) is revoked, rotated
            away, or outside its window at ``at``.
        ScopeError: the signer's delegation does not cover this record.
    """
    if isinstance(record, RootRecord):
        _admit_root(graph, record, signers, origin, roots_policy)
        return
    if isinstance(record, Attestation):
        _admit_attestation(graph, record, signers, origin, at, memo)
        return
    for kid in required_signers(record):
        if kid not in signers:
            raise NotAdmittedError(
                f"{record.kind} record must be signed by {kid}", signer=kid, rule="required_signer", origin=origin
            )
    if isinstance(record, Delegation | Endorsement):
        issuer = record.issuer if isinstance(record, Delegation) else record.endorser
        paths = _valid_paths(graph, issuer, at, origin, want=_may_delegate)
        if not any(_may_delegate(p) for p in paths):
            scope = paths[0].hops[-1].scope
            lacks = not scope.root and "delegate" not in scope.purposes
            why = "does not hold the 'delegate' purpose" if lacks else "has no delegation depth left"
            verb = "delegate" if isinstance(record, Delegation) else "endorse"
            raise ScopeError(f"{issuer} may not {verb}: it {why}", signer=issuer, rule="may_delegate", origin=origin)
    elif isinstance(record, Revocation):
        _valid_paths(graph, record.issuer, at, origin)
        if record.issuer != record.target:
            q = Query(graph, _RULES, at)
            if not (is_structural_ancestor(q, record.issuer, record.target) and reaches_anchor(q, record.issuer)):
                raise NotAdmittedError(
                    f"{record.issuer} may not revoke {record.target}: it is neither the target nor above it",
                    signer=record.issuer, rule="revoke_above", origin=origin,
                )
    elif isinstance(record, Rotation):
        _valid_paths(graph, record.old, at, origin)


def _admit_root(
    graph: TrustGraph, record: RootRecord, signers: Sequence[KeyId], origin: str, roots_policy: RootsPolicy
) -> None:
    kid = record.key.key_id
    if kid not in signers:
        raise NotAdmittedError(f"root record of {kid} is not self-signed", signer=kid, rule="self_signed",
                               origin=origin)
    if not roots_policy.allows(record):
        raise NotAdmittedError(
            f"root {kid} of org {record.org!r} is not admitted by the roots policy of log {origin}",
            signer=kid, rule="roots_policy", origin=origin,
        )
    for rec in graph.roots_of(kid):
        other = rec.record
        if isinstance(other, RootRecord) and other.org != record.org:
            raise NotAdmittedError(
                f"key {kid} is already the root of org {other.org!r}; refusing it as a root of {record.org!r}",
                signer=kid, rule="one_org_per_root", origin=origin,
            )


def _admit_attestation(
    graph: TrustGraph, record: Attestation, signers: Sequence[KeyId], origin: str, at: int,
    memo: SignerPaths | None,
) -> None:
    if not signers:
        raise NotAdmittedError("attestation has no verified signer", rule="required_signer", origin=origin)
    first: NotAdmittedError | None = None
    subjects = record.subjects
    names = [subjects[0].name] if len(subjects) == 1 else sorted({s.name for s in subjects})

    def may_attest(p: TrustPath) -> bool:
        scope = p.hops[-1].scope
        return ("release" in scope.purposes or "build" in scope.purposes) and all(scope.covers(n) for n in names)

    # A remembered accepted path that lets a signer attest is one the search below would
    # also find (same order, it only stops earlier); anything else takes the full search.
    # (Loops rather than may_attest: this runs once per attestation a log appends.)
    if memo is not None:
        for kid in signers:
            for p in memo.accepted(graph, kid, at):
                scope = p.hops[-1].scope
                if "release" not in scope.purposes and "build" not in scope.purposes:
                    continue
                for n in names:
                    if not scope.covers(n):
                        break
                else:
                    return

    for kid in signers:
        try:
            paths = _valid_paths(graph, kid, at, origin, want=may_attest)
        except NotAdmittedError as e:
            first = first or e
            continue
        if any(may_attest(p) for p in paths):
            return
        scope = paths[0].hops[-1].scope
        if not {"release", "build"} & set(scope.purposes):
            why = f"holds neither 'release' nor 'build' (purposes: {', '.join(scope.purposes)})"
        else:
            missing = next(n for n in names if not scope.covers(n))
            why = f"is not delegated for artefact {missing!r} (globs {[list(lv) for lv in scope.artefacts]})"
        first = first or ScopeError(f"signer {kid} may not attest: it {why}", signer=kid, rule="attest_scope",
                                    origin=origin)
    assert first is not None
    raise first


def _may_delegate(path: TrustPath) -> bool:
    return path.hops[-1].scope.can_delegate()


def _any(path: TrustPath) -> bool:
    return True


def _valid_paths(
    graph: TrustGraph, kid: KeyId, at: int, origin: str, *, want: Callable[[TrustPath], bool] = _any
) -> list[TrustPath]:
    """Accepted delegated paths making ``kid`` valid at ``at`` (the search stops at the
    first one ``want`` holds for); if there is none, raise the best reason."""
    ex = explain_with(graph, kid, rules=_RULES, purpose=None, at=at, kind="key", limit=_ADMIT_LIMIT,
                      viable_only=True, stop_when=want)
    accepted = list(ex.accepted)
    if accepted:
        return accepted
    if not ex.paths:  # nothing viable: look at every candidate, to name what is wrong
        ex = explain_with(graph, kid, rules=_RULES, purpose=None, at=at, kind="key", limit=_ADMIT_LIMIT)
    if not ex.paths:
        raise NotAdmittedError(
            f"signer {kid} is neither a root nor a key delegated from one in log {origin}",
            signer=kid, rule="rooted", origin=origin,
        )
    reason = _blocking(ex.paths[0].reasons)
    cls = _ERRORS.get(reason.code, NotAdmittedError)
    raise cls(f"signer {kid} is not valid at {rfc3339(at)}: {reason.message}", signer=kid, rule=reason.code,
              origin=origin, reasons=[r.to_dict() for r in ex.paths[0].reasons])


def _blocking(reasons: tuple[Reason, ...]) -> Reason:
    """The reason to report: revocation first, then expiry, then the first one."""
    for codes in (("revoked", "rotated"), ("expired", "not_yet_valid", "not_integrated")):
        for r in reasons:
            if r.code in codes:
                return r
    return reasons[0]


__all__ = ["RootsPolicy", "SignerPaths", "admit"]
