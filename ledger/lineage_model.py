"""The result of a lineage walk (:func:`ledger.lineage.trace`): nodes, edges, issues.

Invariants: every object is frozen and JSON-serialisable through ``to_dict()``; a node's
verdict is the trust engine's answer reduced (:meth:`NodeVerdict.of`), never re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ledger.attestation import Artefact
from ledger.keys import KeyId
from ledger.trust.verdict import Explanation, Position, TrustKind

Status = Literal["trusted", "transitive", "untrusted", "missing"]
IssueKind = Literal["missing", "cycle", "conflict", "depth", "truncated"]


@dataclass(frozen=True)
class LineageAttestation:
    """One attestation of a node's digest (one record; every log copy listed in ``positions``)."""

    positions: tuple[Position, ...]
    signers: tuple[KeyId, ...]
    names: tuple[str, ...]
    materials: tuple[Artefact, ...]
    builder: str | None
    predicate_type: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "positions": [p.to_dict() for p in self.positions], "signers": list(self.signers),
            "names": list(self.names), "builder": self.builder, "predicate_type": self.predicate_type,
            "materials": [{"name": m.name, "sha256": m.sha256} for m in self.materials],
        }


@dataclass(frozen=True)
class NodeVerdict:
    """The trust engine's answer for a node, reduced to what a lineage shows.

    Attributes:
        status: ``trusted``, ``transitive``, ``untrusted`` or ``missing``.
        purpose: the purpose the verdict is for (the first of the purposes tried that is
            trusted, else the first tried).
        signer: the signing key of the path's attestation hop.
        org: the organisation that key acts for on that path.
        root: the root key the path starts from.
        weakest: ``criterion: why`` of the weakest link (or the blocking reason).
        reasons: why the closest path is rejected (empty when trusted).
        hops: number of hops of that path.
    """

    status: Status
    purpose: str | None
    signer: str | None = None
    org: str | None = None
    root: str | None = None
    weakest: str | None = None
    reasons: tuple[str, ...] = ()
    hops: int = 0

    @classmethod
    def of(cls, answer: Explanation) -> NodeVerdict:
        """Reduce an explanation (for an attested artefact)."""
        status: Status = "untrusted"
        if answer.trusted:
            status = "trusted" if answer.trust == "delegated" else "transitive"
        path = answer.paths[0] if answer.paths else None
        if path is None:
            return cls(status, answer.purpose, reasons=tuple(answer.notes))
        att = path.hops[-1]
        w = answer.weakest_link
        return cls(
            status, answer.purpose, signer=att.from_key, org=att.org_from, root=path.hops[0].to,
            weakest=None if w is None else f"{w.criterion}: {w.why}",
            reasons=tuple(r.message for r in path.reasons), hops=len(path.hops),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status, "purpose": self.purpose, "signer": self.signer, "org": self.org,
            "root": self.root, "weakest": self.weakest, "reasons": list(self.reasons), "hops": self.hops,
        }


@dataclass(frozen=True)
class LineageNode:
    """An artefact of the DAG: its digest, names, attestations and verdict.

    ``names`` are the subject names its attestations give it (or, with none, the names the
    materials pointing at it use).

    ``expanded`` is false when a bound stopped the walk before its materials.
    """

    digest: str
    names: tuple[str, ...]
    depth: int
    verdict: NodeVerdict
    attestations: tuple[LineageAttestation, ...]
    expanded: bool

    @property
    def status(self) -> Status:
        """Shorthand for ``verdict.status``."""
        return self.verdict.status

    @property
    def trust(self) -> TrustKind | None:
        """``delegated``/``transitive`` when trusted, else None."""
        if self.status == "trusted":
            return "delegated"
        return "transitive" if self.status == "transitive" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "digest": "sha256:" + self.digest, "names": list(self.names), "depth": self.depth,
            "status": self.status, "verdict": self.verdict.to_dict(), "expanded": self.expanded,
            "attestations": [a.to_dict() for a in self.attestations],
        }


@dataclass(frozen=True)
class LineageEdge:
    """``parent`` was built from ``child`` (a material), by the name ``name``; ``cycle`` marks
    an edge back to an ancestor, which the walk did not follow."""

    parent: str
    child: str
    name: str
    cycle: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"from": "sha256:" + self.parent, "to": "sha256:" + self.child, "name": self.name, "cycle": self.cycle}


@dataclass(frozen=True)
class LineageIssue:
    """A problem found on the walk, about the artefact ``digest``."""

    kind: IssueKind
    digest: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "digest": "sha256:" + self.digest, "message": self.message}


@dataclass(frozen=True)
class Lineage:
    """The provenance DAG of ``subject``: nodes in walk order (the subject first), edges, issues."""

    subject: str
    at: int
    max_depth: int
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    issues: tuple[LineageIssue, ...]
    policy: dict[str, Any] | None

    def node(self, digest: str) -> LineageNode:
        """The node of ``digest`` (``sha256:<hex>`` or hex); KeyError if not reached."""
        d = digest.removeprefix("sha256:")
        for n in self.nodes:
            if n.digest == d:
                return n
        raise KeyError(digest)

    def children(self, digest: str) -> tuple[LineageEdge, ...]:
        """Edges from ``digest`` to its materials, in attestation order."""
        return tuple(e for e in self.edges if e.parent == digest)

    def counts(self) -> dict[str, int]:
        """Number of nodes per status, and of issues per kind."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.status] = out.get(n.status, 0) + 1
        for i in self.issues:
            key = f"issue:{i.kind}"
            out[key] = out.get(key, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "subject": "sha256:" + self.subject, "at": self.at, "max_depth": self.max_depth,
            "policy": self.policy, "counts": self.counts(),
            "nodes": [n.to_dict() for n in self.nodes], "edges": [e.to_dict() for e in self.edges],
            "issues": [i.to_dict() for i in self.issues],
        }


__all__ = [
    "IssueKind",
    "Lineage",
    "LineageAttestation",
    "LineageEdge",
    "LineageIssue",
    "LineageNode",
    "NodeVerdict",
    "Status",
]
