"""What :func:`ledger.verify.verify_bundle` returns: the verdict for an artefact, each hop with
its record's inclusion proof and log, and how each log came to be trusted.

Invariants: frozen values; :class:`Verdict` carries everything a renderer shows
(``to_dict`` is the JSON form the CLI and the HTTP API print).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.bundle_check import CheckedRecord, Cosignature
from ledger.keys import KeyId
from ledger.trust.verdict import Explanation, Hop, TrustKind, TrustPath, WeakestLink, rfc3339

LogBasis = Literal["pinned", "delegated", "witnessed", "untrusted"]


@dataclass(frozen=True)
class LogVerdict:
    """Whether the verifier trusts one log's key, and the checkpoint it signed.

    Attributes:
        origin: the log's origin.
        vkey: its verifier key, as the bundle carries it.
        key_id: ledger key id of the log key (the subject of a ``log`` delegation).
        tree_size: size of the checkpoint every proof of this log is checked against.
        root: that checkpoint's root hash.
        basis: ``pinned`` (the caller pins this vkey for this origin), ``delegated`` (a
            ``log`` delegation from an anchored root covers the origin), ``witnessed`` (the
            checkpoint is cosigned by the witness key of a log already trusted: nodes witness
            the logs they mirror) or ``untrusted``.
        why: one line explaining ``basis``.
        path: the accepted delegation path of the log key (``delegated`` only).
        cosignatures: verified witness cosignatures on the checkpoint.
        counted_witnesses: names of the cosigners the caller trusts (they count for the quorum).
    """

    origin: str
    vkey: str
    key_id: KeyId
    tree_size: int
    root: bytes
    basis: LogBasis
    why: str
    path: TrustPath | None = None
    cosignatures: tuple[Cosignature, ...] = ()
    counted_witnesses: tuple[str, ...] = ()

    @property
    def trusted(self) -> bool:
        """True unless ``basis`` is ``untrusted``."""
        return self.basis != "untrusted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "origin": self.origin, "vkey": self.vkey, "key_id": self.key_id, "tree_size": self.tree_size,
            "root": self.root.hex(), "trusted": self.trusted, "basis": self.basis, "why": self.why,
            "path": None if self.path is None else self.path.to_dict(),
            "cosignatures": [
                {"name": c.name, "vkey": c.vkey, "timestamp": c.timestamp, "time": rfc3339(c.timestamp * 1000)}
                for c in self.cosignatures
            ],
            "counted_witnesses": list(self.counted_witnesses),
        }


@dataclass(frozen=True)
class Inclusion:
    """A record's proven place: included at ``index`` in ``origin``'s tree of ``tree_size``."""

    origin: str
    index: int
    leaf_hash: bytes
    tree_size: int
    root: bytes
    proof: tuple[bytes, ...]

    @classmethod
    def of(cls, rec: CheckedRecord) -> Inclusion:
        """The inclusion a checked record was proven with."""
        g = rec.logged
        return cls(g.origin, g.index, g.leaf_hash, rec.tree_size, rec.root, rec.proof)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "origin": self.origin, "index": self.index, "leaf_hash": self.leaf_hash.hex(),
            "tree_size": self.tree_size, "root": self.root.hex(), "proof": [p.hex() for p in self.proof],
            "verified": True,
        }


@dataclass(frozen=True)
class Link:
    """One hop of the chosen path with the proof of its record and the log that holds it."""

    hop: Hop
    inclusion: Inclusion | None
    log: LogVerdict | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the hop's fields plus ``inclusion`` and ``log``."""
        return {
            **self.hop.to_dict(),
            "inclusion": None if self.inclusion is None else self.inclusion.to_dict(),
            "log": None if self.log is None else {"origin": self.log.origin, "basis": self.log.basis},
        }


@dataclass(frozen=True)
class Verdict:
    """Can this artefact be trusted, and why: the result :func:`verify_bundle` explains.

    Attributes:
        artefact: ``sha256:<hex>`` asked about.
        trusted: the verdict.
        trust: ``delegated`` or ``transitive`` when trusted.
        at: verification time (Unix ms).
        reasons: why not trusted (empty when trusted).
        explanation: the trust engine's answer over the proven records (None when the
            evidence itself failed).
        logs: each log of the evidence and whether its key is trusted.
        inclusions: the inclusion of every record of a trusted log, by (origin, index).
        notes: what else a reader should know (skipped records, offline limits).
        evidence_time: newest counted cosignature time, else newest entry time (Unix ms):
            how fresh the evidence is known to be.
    """

    artefact: str
    trusted: bool
    trust: TrustKind | None
    at: int
    reasons: tuple[str, ...]
    explanation: Explanation | None = None
    logs: tuple[LogVerdict, ...] = ()
    inclusions: Mapping[tuple[str, int], Inclusion] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    evidence_time: int | None = None

    @property
    def exit_code(self) -> int:
        """0 trusted, 1 not trusted (the CLI contract)."""
        return 0 if self.trusted else 1

    @property
    def path(self) -> TrustPath | None:
        """The path the verdict rests on (when not trusted: the closest candidate)."""
        if self.explanation is None or not self.explanation.paths:
            return None
        return self.explanation.paths[0]

    @property
    def weakest_link(self) -> WeakestLink | None:
        """The weakest link of :attr:`path`."""
        return None if self.explanation is None else self.explanation.weakest_link

    def links(self) -> tuple[Link, ...]:
        """The hops of :attr:`path` from the artefact down to the root, each with its proof."""
        path = self.path
        if path is None:
            return ()
        logs = {g.origin: g for g in self.logs}
        return tuple(
            Link(h, self.inclusions.get((h.position.origin, h.position.index)), logs.get(h.position.origin))
            for h in reversed(path.hops)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``path`` runs artefact first, root last)."""
        return {
            "artefact": self.artefact, "trusted": self.trusted, "trust": self.trust, "at": self.at,
            "time": rfc3339(self.at), "reasons": list(self.reasons),
            "path": [link.to_dict() for link in self.links()],
            "weakest_link": None if self.weakest_link is None else self.weakest_link.to_dict(),
            "logs": [g.to_dict() for g in self.logs],
            "notes": list(self.notes),
            "evidence_time": self.evidence_time,
            "explanation": None if self.explanation is None else self.explanation.to_dict(),
        }


__all__ = ["Inclusion", "Link", "LogBasis", "LogVerdict", "Verdict"]
