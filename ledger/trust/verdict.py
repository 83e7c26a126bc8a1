"""Result objects of the trust engine: hops, paths, reasons, the weakest link, verdicts.

Invariants:
* Every object here is frozen and JSON-serialisable through ``to_dict()`` (bytes as hex,
  times as Unix ms plus RFC 3339 text), so the CLI and the HTTP layer render an answer
  without re-deriving anything.
* A path lists its hops from the anchor root (first) to the subject (last); the scope on
  each hop is what remains AFTER that hop.
* ``TrustPath.accepted`` is true iff ``reasons`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.trust.scope import Scope

HopKind = Literal["root", "delegated", "transitive", "attestation", "rotation"]
TrustKind = Literal["delegated", "transitive"]
SubjectKind = Literal["key", "org", "artefact"]


def rfc3339(ms: int) -> str:
    """Unix milliseconds as RFC 3339 UTC text."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_T = TypeVar("_T")


def fast_instance(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen (non-slots) dataclass ``cls`` with ``values`` for every
    field: what its ``__init__`` makes (it has no ``__post_init__``), several times faster."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


@dataclass(frozen=True)
class Position:
    """Where a record sits: log origin, index, integration time, leaf hash, record id."""

    origin: str
    index: int
    ts: int
    leaf_hash: bytes
    record_id: bytes

    @classmethod
    def of(cls, rec: LoggedRecord) -> Position:
        """The position of a logged record."""
        return fast_instance(cls, {"origin": rec.origin, "index": rec.index, "ts": rec.ts, "leaf_hash": rec.leaf_hash,
                           "record_id": rec.record_id})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "origin": self.origin, "index": self.index, "ts": self.ts, "time": rfc3339(self.ts),
            "leaf_hash": self.leaf_hash.hex(), "record_id": self.record_id.hex(),
        }


@dataclass(frozen=True)
class Hop:
    """One link of a path.

    Attributes:
        kind: ``root`` (a root record), ``delegated`` (an explicit delegation),
            ``transitive`` (an endorsement: trust without delegation), ``rotation``
            (old key hands over to new) or ``attestation`` (signer -> artefact).
        from_key: the key that signed the link (None for a root record).
        to: the key the link lands on, or ``sha256:<hex>`` for an attestation.
        org_from: organisation of ``from_key`` on this path (for a root: its org).
        org_to: organisation ``to`` acts for.
        join: the hop crosses from one organisation's chain into another's.
        position: the record's log position.
        reliance_time: when this link was relied upon: the integration time of the record
            below it (or the verification time for the subject key / an attestation).
        scope: what remains after this hop.
        not_before: start of the record's validity window (None: no window).
        not_after: end of the window (None: no expiry).
        expired_now: ``not_after`` is before the verification time (the link was valid
            when relied upon, but would not be for a new record).
        hsm: for a root hop, whether the root record declares the key HSM-held.
        alg: algorithm of the key the hop lands on (the signer's for an attestation).
        witnesses: witnesses whose cosigned checkpoints cover the record.
        names: for an attestation, the subject names carrying the digest.
        record: the logged record itself (not serialised; for proofs and display).
    """

    kind: HopKind
    from_key: KeyId | None
    to: str
    org_from: str | None
    org_to: str | None
    join: bool
    position: Position
    reliance_time: int
    scope: Scope
    not_before: int | None
    not_after: int | None
    expired_now: bool
    hsm: bool | None
    alg: str | None
    witnesses: tuple[str, ...]
    names: tuple[str, ...] = ()
    record: LoggedRecord | None = field(default=None, repr=False, compare=False)

    @classmethod
    def make(
        cls, kind: HopKind, from_key: KeyId | None, to: str, org_from: str | None, org_to: str | None, join: bool,
        position: Position, reliance_time: int, scope: Scope, not_before: int | None, not_after: int | None,
        expired_now: bool, hsm: bool | None, alg: str | None, witnesses: tuple[str, ...], names: tuple[str, ...],
        record: LoggedRecord | None,
    ) -> Hop:
        """``Hop(...)`` with every field given, built without a frozen ``__setattr__`` per
        field (the evaluation makes one per link it judges)."""
        return fast_instance(cls, {
            "kind": kind, "from_key": from_key, "to": to, "org_from": org_from, "org_to": org_to, "join": join,
            "position": position, "reliance_time": reliance_time, "scope": scope, "not_before": not_before,
            "not_after": not_after, "expired_now": expired_now, "hsm": hsm, "alg": alg, "witnesses": witnesses,
            "names": names, "record": record,
        })

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "kind": self.kind, "from": self.from_key, "to": self.to, "org_from": self.org_from,
            "org_to": self.org_to, "join": self.join, "position": self.position.to_dict(),
            "reliance_time": self.reliance_time, "scope": self.scope.to_dict(),
            "not_before": self.not_before, "not_after": self.not_after,
            "expired_now": self.expired_now, "hsm": self.hsm, "alg": self.alg,
            "witnesses": list(self.witnesses),
        }
        if self.kind == "attestation":
            out["names"] = list(self.names)
        return out


@dataclass(frozen=True)
class Reason:
    """Why a candidate path is rejected.

    ``code`` is one of: ``not_anchor``, ``anchor_purpose``, ``hsm``, ``algorithm``,
    ``witness``, ``equivocating``, ``transitive``, ``path_length``, ``revoked``,
    ``rotated``, ``expired``, ``not_yet_valid``, ``not_integrated``, ``cannot_delegate``,
    ``over_depth``, ``out_of_scope``, ``purpose``, ``org_mismatch``. ``hop`` indexes the
    path's hops (None: the path as a whole); ``evidence`` is the position of the record
    that causes it, when another record does (a revocation, a rotation).
    """

    code: str
    message: str
    hop: int | None = None
    evidence: Position | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "code": self.code, "message": self.message, "hop": self.hop,
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
        }


@dataclass(frozen=True)
class WeakestLink:
    """The weakest link of a path (see :mod:`ledger.trust.weakest` for the ranking).

    ``path`` indexes ``Explanation.paths`` (-1 while the path is not placed in one).
    For a rejected path ``criterion`` is the code of the reason that blocks it.
    """

    hop: int
    criterion: str
    why: str
    path: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"path": self.path, "hop": self.hop, "criterion": self.criterion, "why": self.why}


@dataclass(frozen=True)
class TrustPath:
    """One candidate path from a root to the subject, with its evaluation."""

    hops: tuple[Hop, ...]
    accepted: bool
    trust: TrustKind
    reasons: tuple[Reason, ...]
    weakest: WeakestLink | None

    @classmethod
    def make(cls, hops: tuple[Hop, ...], accepted: bool, trust: TrustKind, reasons: tuple[Reason, ...],
             weakest: WeakestLink | None) -> TrustPath:
        """``TrustPath(...)`` built without a frozen ``__setattr__`` per field (one per
        candidate evaluated)."""
        return fast_instance(cls, {"hops": hops, "accepted": accepted, "trust": trust, "reasons": reasons,
                           "weakest": weakest})

    @property
    def root(self) -> KeyId:
        """The key id of the path's first root."""
        return KeyId(self.hops[0].to)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "accepted": self.accepted, "trust": self.trust,
            "hops": [h.to_dict() for h in self.hops],
            "reasons": [r.to_dict() for r in self.reasons],
            "weakest": None if self.weakest is None else self.weakest.to_dict(),
        }


@dataclass(frozen=True)
class IgnoredRevocation:
    """A revocation that did not count: its issuer is neither the target nor above it."""

    position: Position
    issuer: KeyId
    target: KeyId
    why: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"position": self.position.to_dict(), "issuer": self.issuer, "target": self.target, "why": self.why}


@dataclass(frozen=True)
class Explanation:
    """The answer to "can I trust this, and why?".

    Attributes:
        subject: the key id, org or ``sha256:<hex>`` digest asked about.
        kind: how the subject was read (``key``, ``org`` or ``artefact``).
        purpose: the purpose asked about (None: any).
        at: the verification time (Unix ms).
        trusted: at least one path is accepted.
        trust: ``delegated`` if an accepted path has no transitive hop, ``transitive`` if
            only paths with endorsements are accepted, None if not trusted.
        weakest_link: of the first path (the strongest accepted one; if none is
            accepted, the blocking link of the closest candidate); None without paths.
        paths: accepted paths (strongest first), then rejected candidates (closest first).
        ignored_revocations: revocations that would apply but whose issuer had no right.
        notes: what else a reader should know (truncation, cut cycles, unknown subject).
        truncated: enumeration stopped at a bound, so more candidates may exist.
        policy: the policy applied, as a dict (None for built-in rules).
    """

    subject: str
    kind: SubjectKind
    purpose: str | None
    at: int
    trusted: bool
    trust: TrustKind | None
    weakest_link: WeakestLink | None
    paths: tuple[TrustPath, ...]
    ignored_revocations: tuple[IgnoredRevocation, ...] = ()
    notes: tuple[str, ...] = ()
    truncated: bool = False
    policy: dict[str, Any] | None = None

    @property
    def accepted(self) -> tuple[TrustPath, ...]:
        """The accepted paths."""
        return tuple(p for p in self.paths if p.accepted)

    @property
    def rejected(self) -> tuple[TrustPath, ...]:
        """The rejected candidates."""
        return tuple(p for p in self.paths if not p.accepted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "subject": self.subject, "kind": self.kind, "purpose": self.purpose, "at": self.at,
            "time": rfc3339(self.at), "trusted": self.trusted, "trust": self.trust,
            "weakest_link": None if self.weakest_link is None else self.weakest_link.to_dict(),
            "paths": [p.to_dict() for p in self.paths],
            "ignored_revocations": [r.to_dict() for r in self.ignored_revocations],
            "notes": list(self.notes), "truncated": self.truncated, "policy": self.policy,
        }


__all__ = [
    "Explanation",
    "Hop",
    "HopKind",
    "IgnoredRevocation",
    "Position",
    "Reason",
    "SubjectKind",
    "TrustKind",
    "TrustPath",
    "WeakestLink",
    "fast_instance",
    "rfc3339",
]
