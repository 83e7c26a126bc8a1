"""Artefact lineage: the provenance DAG of an artefact across every chain held.

From an artefact digest the walk follows its attestations to their materials (SLSA
``resolvedDependencies``), then those materials' attestations, and so on, in whichever
log each attestation lives: a material attested in another organisation's log is
followed there. Every artefact reached is a node carrying its attestations, their
signers and the trust engine's verdict (:func:`ledger.trust.explain`) for it.

Invariants:
* Termination: each digest is expanded at most once (breadth first, so a node's ``depth``
  is its shortest distance from the subject); ``max_depth`` and ``max_nodes`` bound the
  walk. Hitting a bound is reported as an issue, never silent.
* Problems are reported, never looped on or hidden: ``missing`` (a material no log
  attests), ``cycle`` (a material that is its own ancestor: the edge is marked and not
  followed), ``conflict`` (two different statements about one digest that disagree on
  the set of materials or of signers), ``depth`` and ``truncated`` (a bound cut the walk).
* One statement (one record id) is one attestation, whatever number of logs hold it and
  of keys signed it: copies and co-signatures corroborate, they never conflict.
* A node's verdict is the trust engine's, rendered, never re-derived: ``trusted`` (an
  accepted delegated path), ``transitive`` (accepted only through endorsements),
  ``untrusted`` (attested, no accepted path) or ``missing`` (no attestation).
* Pure: reads the graph only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.errors import InputError
from ledger.lineage_model import (
    IssueKind,
    Lineage,
    LineageAttestation,
    LineageEdge,
    LineageIssue,
    LineageNode,
    NodeVerdict,
    Status,
)
from ledger.trust.context import Rules
from ledger.trust.explain import explain_with
from ledger.trust.graph import TrustGraph
from ledger.trust.memo import QueryMemo
from ledger.trust.policy import Policy
from ledger.trust.verdict import Position

DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_NODES = 10_000
DEFAULT_PURPOSES = ("release", "build")


def trace(
    graph: TrustGraph,
    digest: str,
    *,
    policy: Policy | None,
    at: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    purposes: Sequence[str] = DEFAULT_PURPOSES,
) -> Lineage:
    """The provenance DAG of ``digest`` (``sha256:<hex>`` or hex) over ``graph``.

    Args:
        graph: the trust graph of every log held.
        digest: the artefact to start from.
        policy: the consumer's policy; None judges structurally (every root is an anchor,
            transitive hops allowed, no HSM/witness rules), for display without a policy.
        at: verification time, Unix ms.
        max_depth: materials of nodes at this depth are not followed.
        max_nodes: the most artefacts the walk visits.
        purposes: a node is trusted if it is trusted for one of these (in order).

    Raises:
        InputError: ``digest`` is not a sha256 digest, or a bound is not positive.
    """
    root = digest.removeprefix("sha256:")
    if len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise InputError(f"not a sha256 digest: {digest[:80]!r}")
    if max_depth < 0 or max_nodes < 1 or not purposes:
        raise InputError("trace: max_depth must be >= 0, max_nodes >= 1, purposes non-empty")
    rules = Rules.from_policy(policy) if policy is not None else Rules.open(max_transitive_hops=64)
    walk = _Walk(graph, rules, at, tuple(purposes))
    depth: dict[str, int] = {root: 0}
    names: dict[str, list[str]] = {root: []}
    queue: deque[str] = deque([root])
    nodes: dict[str, LineageNode] = {}
    edges: list[LineageEdge] = []
    issues: list[LineageIssue] = []
    while queue:
        d = queue.popleft()
        atts = walk.attestations(d)
        expand = depth[d] < max_depth
        node_names = tuple(sorted({n for a in atts for n in a.names} or set(names[d])))
        nodes[d] = LineageNode(d, node_names, depth[d], walk.verdict(d, bool(atts)), atts, expand or not atts)
        issues.extend(_node_issues(d, node_names, atts, depth[d] == 0))
        if not expand:
            if any(a.materials for a in atts):
                issues.append(LineageIssue("depth", d, f"materials of {_label(d, node_names)} not followed: depth limit {max_depth}"))
            continue
        seen_here: set[str] = set()
        for m in (m for a in atts for m in a.materials):
            if m.sha256 in seen_here:
                continue
            seen_here.add(m.sha256)
            if m.sha256 in depth:
                edges.append(LineageEdge(d, m.sha256, m.name))
                if m.name and m.sha256 not in nodes:
                    names[m.sha256].append(m.name)
                continue
            if len(depth) >= max_nodes:
                issues.append(LineageIssue(
                    "truncated", d, f"materials of {_label(d, node_names)} not all followed: limit of {max_nodes} artefacts"
                ))
                nodes[d] = replace(nodes[d], expanded=False)
                break
            edges.append(LineageEdge(d, m.sha256, m.name))
            depth[m.sha256] = depth[d] + 1
            names[m.sha256] = [m.name] if m.name else []
            queue.append(m.sha256)
    edges, cycles = _mark_cycles(root, edges)
    issues.extend(LineageIssue("cycle", e.child, f"{_label(e.parent, nodes[e.parent].names)} lists its own ancestor "
                               f"sha256:{e.child[:12]}… as a material; not followed") for e in cycles)
    return Lineage(
        root, at, max_depth, tuple(nodes.values()), tuple(edges), tuple(_dedupe(issues)),
        None if policy is None else policy.to_dict(),
    )


class _Walk:
    """Per-trace state: the graph, the rules, and a memo (:class:`QueryMemo`) shared by the
    node's reads and verdicts: each digest's attestations are read once, and the chain
    prefixes above a signer are evaluated once for all the artefacts it signed."""

    def __init__(self, graph: TrustGraph, rules: Rules, at: int, purposes: tuple[str, ...]) -> None:
        self.graph, self.rules, self.at, self.purposes = graph, rules, at, purposes
        self.memo = QueryMemo(graph, rules, at)

    def attestations(self, digest: str) -> tuple[LineageAttestation, ...]:
        by_id: dict[bytes, list[LoggedRecord]] = {}
        for rec in self.memo.attestations_for(digest):
            by_id.setdefault(rec.record_id, []).append(rec)
        out = []
        for copies in by_id.values():
            copies.sort(key=lambda r: (r.ts, r.origin, r.index))
            att = copies[0].record
            assert isinstance(att, Attestation)
            signers = tuple(sorted({k for c in copies for k in c.signers}))
            out.append(LineageAttestation(
                tuple(Position.of(c) for c in copies), signers,
                tuple(sorted({s.name for s in att.subjects if s.sha256 == digest})),
                att.materials, att.builder, att.predicate_type,
            ))
        out.sort(key=lambda a: (a.positions[0].ts, a.positions[0].origin, a.positions[0].index))
        return tuple(out)

    def verdict(self, digest: str, attested: bool) -> NodeVerdict:
        if not attested:
            return NodeVerdict("missing", None, reasons=("no log held attests this artefact",))
        first: NodeVerdict | None = None
        for purpose in self.purposes:
            answer = explain_with(self.graph, digest, rules=self.rules, purpose=purpose, at=self.at, kind="artefact",
                                  memo=self.memo)
            v = NodeVerdict.of(answer)
            if answer.trusted:
                return v
            first = first or v
        assert first is not None
        return first


def _node_issues(
    d: str, names: tuple[str, ...], atts: tuple[LineageAttestation, ...], is_subject: bool
) -> list[LineageIssue]:
    label = _label(d, names)
    if not atts:
        what = "the artefact itself" if is_subject else "a material"
        return [LineageIssue("missing", d, f"{label}: {what} with no attestation in any log held")]
    variants = {(frozenset(m.sha256 for m in a.materials), a.signers) for a in atts}
    if len(variants) <= 1:
        return []
    mats = {v[0] for v in variants}
    signers = {v[1] for v in variants}
    what = " and ".join(w for w, n in (("materials", len(mats)), ("signers", len(signers))) if n > 1)
    where = ", ".join(f"{a.positions[0].origin}#{a.positions[0].index}" for a in atts)
    return [LineageIssue("conflict", d, f"{label}: {len(atts)} attestations disagree on {what} ({where})")]


def _mark_cycles(root: str, edges: list[LineageEdge]) -> tuple[list[LineageEdge], list[LineageEdge]]:
    """Mark edges that point back to an ancestor (iterative DFS, white/grey/black)."""
    out: dict[str, list[int]] = {}
    for i, e in enumerate(edges):
        out.setdefault(e.parent, []).append(i)
    state: dict[str, int] = {root: 1}
    stack: list[tuple[str, int]] = [(root, 0)]
    back: set[int] = set()
    while stack:
        node, k = stack[-1]
        children = out.get(node, [])
        if k >= len(children):
            state[node] = 2
            stack.pop()
            continue
        stack[-1] = (node, k + 1)
        i = children[k]
        child = edges[i].child
        s = state.get(child, 0)
        if s == 1:
            back.add(i)
        elif s == 0:
            state[child] = 1
            stack.append((child, 0))
    marked = [LineageEdge(e.parent, e.child, e.name, True) if i in back else e for i, e in enumerate(edges)]
    return marked, [marked[i] for i in sorted(back)]


def _dedupe(issues: list[LineageIssue]) -> list[LineageIssue]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for i in issues:
        key = (i.kind, i.digest, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def _label(d: str, names: Sequence[str]) -> str:
    return f"{names[0]} (sha256:{d[:12]}…)" if names else f"sha256:{d[:12]}…"


__all__ = [
    "DEFAULT_MAX_DEPTH",
    "IssueKind",
    "Lineage",
    "LineageAttestation",
    "LineageEdge",
    "LineageIssue",
    "LineageNode",
    "NodeVerdict",
    "Status",
    "trace",
]
