"""``explain``: every path from an anchor to a key, an org or an artefact, and a verdict.

Subjects:
* a key id ``sha256:<64 hex>`` -- is this key trusted for ``purpose`` now (at ``at``)?
* an org name -- is one of the org's root keys trusted (directly as an anchor, through a
  delegation into it, or through an endorsement)? The org's keys are its root records'.
* an artefact digest ``sha256:<64 hex>`` (or bare hex) -- is an attestation of it,
  signed by a trusted key, in scope for its name and ``purpose``?

Key ids and artefact digests look alike. With ``kind=None`` the subject is read as a key
if any record introduces, revokes or endorses that key id, else as an artefact if any
attestation has that digest, else as an (unknown) key; bare hex is always an artefact.
Pass ``kind="artefact"`` (``turtles verify`` does) or ``kind="key"`` to force a reading.

Invariants: the verdict is derived once, here; callers render :class:`Explanation`.
Accepted paths come first, delegated before transitive, then strongest first
(:mod:`ledger.trust.weakest`), then shortest; rejected candidates follow, fewest reasons
first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ledger.errors import InputError
from ledger.keys import KeyId
from ledger.records import PURPOSES
from ledger.trust.context import DEFAULT_LIMIT, Link, Query, Rules
from ledger.trust.evaluate import evaluate
from ledger.trust.graph import TrustGraph
from ledger.trust.memo import QueryMemo
from ledger.trust.policy import Policy
from ledger.trust.search import chains_to_artefact, chains_to_key
from ledger.trust.verdict import Explanation, SubjectKind, TrustKind, TrustPath, WeakestLink
from ledger.trust.weakest import strength, with_weakest

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ORG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def explain(
    graph: TrustGraph,
    subject: str,
    *,
    purpose: str,
    at: int,
    policy: Policy,
    kind: SubjectKind | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Explanation:
    """Explain whether ``subject`` is trusted for ``purpose`` at ``at`` under ``policy``.

    Args:
        graph: the trust graph of every log held.
        subject: key id, org name, or artefact digest (see the module docstring).
        purpose: ``release``, ``build``, ``log`` or ``delegate``.
        at: verification time, Unix ms (fixed by the caller at the start of a check).
        policy: the consumer's policy.
        kind: force how ``subject`` is read.
        limit: the most candidate paths enumerated.

    Raises:
        InputError: the purpose is unknown; or the subject is neither a key id, a digest
            nor an org name, or does not have the form ``kind`` asks for.
    """
    if purpose not in PURPOSES:
        raise InputError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    rules = Rules.from_policy(policy)
    return explain_with(graph, subject, rules=rules, purpose=purpose, at=at, kind=kind, limit=limit,
                        policy=policy.to_dict())


def explain_with(
    graph: TrustGraph,
    subject: str,
    *,
    rules: Rules,
    purpose: str | None,
    at: int,
    kind: SubjectKind | None = None,
    limit: int = DEFAULT_LIMIT,
    policy: dict[str, Any] | None = None,
    viable_only: bool = False,
    avoid: frozenset[str] = frozenset(),
    stop_when: Callable[[TrustPath], bool] | None = None,
    memo: QueryMemo | None = None,
) -> Explanation:
    """:func:`explain` under explicit :class:`Rules` (``purpose`` None: any purpose).

    ``viable_only`` and ``avoid`` restrict the search (see :class:`Query`), and
    ``stop_when`` ends it at the first accepted path it holds for: for callers that need
    one good path (admission, impact), not a complete explanation. ``memo`` shares reads
    and evaluated chain prefixes with the other questions of one call (a trace); it must
    be for ``graph``, ``rules`` and ``at`` and never changes the answer.

    Raises:
        ValueError: ``memo`` was made for another graph, other rules or another time.
    """
    if memo is not None:
        if not memo.fits(graph, rules, at):
            raise ValueError("explain_with: the memo was made for another graph, other rules or another time")
        memo.sync()
    kind, name = resolve_subject(graph, subject, kind)
    q = Query(graph, rules, at, limit=limit, viable_only=viable_only, avoid=avoid, memo=memo)
    paths = rank(collect(q, kind, name, purpose=purpose, stop_when=stop_when), at=at)
    if kind == "key" and not graph.knows_key(name):
        q.note(f"no record in any log held introduces key {name}")
    elif kind == "org" and not graph.org_roots(name):
        q.note(f"no root record in any log held declares org {name!r}")
    elif kind == "artefact" and not q.attestations_for(name):
        q.note(f"no attestation in any log held has subject digest sha256:{name}")
    if q.cycles:
        q.note(f"{q.cycles} cycle(s) in the delegation graph were cut")
    if q.pruned_long:
        q.note(f"{q.pruned_long} chain(s) longer than {rules.max_path_length} hops were not followed")
    if not paths:
        q.note("no chain from any root reaches the subject")
    trusted = bool(paths) and paths[0].accepted
    trust: TrustKind | None = None
    if trusted:
        trust = "delegated" if any(p.accepted and p.trust == "delegated" for p in paths) else "transitive"
    return Explanation(
        subject=subject if kind != "artefact" else "sha256:" + name,
        kind=kind, purpose=purpose, at=at, trusted=trusted, trust=trust,
        weakest_link=paths[0].weakest if paths else None, paths=tuple(paths),
        ignored_revocations=tuple(q.ignored.values()), notes=tuple(q.notes),
        truncated=q.truncated, policy=policy,
    )


def collect(
    q: Query, kind: SubjectKind, name: str, *, purpose: str | None,
    stop_when: Callable[[TrustPath], bool] | None = None,
) -> list[TrustPath]:
    """Search for ``name`` (normalised by :func:`resolve_subject`) under ``q`` and evaluate
    the candidates, unranked; stop at the first accepted path ``stop_when`` holds for."""
    evaluated: list[TrustPath] = []
    if stop_when is not None:
        want = stop_when

        def on_chain(chain: tuple[Link, ...]) -> bool:
            path = evaluate(q, chain, purpose=purpose)
            evaluated.append(path)
            return path.accepted and want(path)

        q.on_chain = on_chain
    if kind == "key":
        chains_to_key(q, KeyId(name))
    elif kind == "org":
        for root in q.graph.org_roots(name):
            chains_to_key(q, root)
    else:
        chains_to_artefact(q, name)
    return evaluated if stop_when is not None else [evaluate(q, chain, purpose=purpose) for chain in q.chains]


def rank(paths: list[TrustPath], *, at: int) -> list[TrustPath]:
    """Name each path's weakest link, order the paths (see the module docstring), and
    point each weakest link at its path's position."""
    named = sorted((with_weakest(p, at=at) for p in paths), key=_order)
    out = []
    for i, p in enumerate(named):
        w = p.weakest
        if w is not None:
            p = TrustPath(p.hops, p.accepted, p.trust, p.reasons, WeakestLink(w.hop, w.criterion, w.why, i))
        out.append(p)
    return out


def _order(p: TrustPath) -> tuple[int, ...]:
    if p.accepted:
        return (0, p.trust == "transitive", -strength(p), len(p.hops))
    return (1, len(p.reasons), len(p.hops))


def resolve_subject(graph: TrustGraph, subject: str, kind: SubjectKind | None) -> tuple[SubjectKind, str]:
    """How ``subject`` is read: (kind, normalised name: key id, org, or digest hex).

    Raises:
        InputError: the subject cannot be read as ``kind`` (or as anything).
    """
    prefixed = subject.startswith("sha256:") and bool(_HEX64.fullmatch(subject[7:]))
    if kind is None:
        if prefixed:
            if graph.knows_key(subject) or not graph.attestations_for(subject):
                return "key", subject
            return "artefact", subject[7:]
        if _HEX64.fullmatch(subject):
            return "artefact", subject
        if _ORG_RE.fullmatch(subject):
            return "org", subject
        raise InputError(f"subject {subject[:80]!r} is neither a key id, an org name nor a sha256 digest")
    if kind == "key" and prefixed:
        return "key", subject
    if kind == "artefact" and (prefixed or _HEX64.fullmatch(subject)):
        return "artefact", subject[7:] if prefixed else subject
    if kind == "org" and _ORG_RE.fullmatch(subject):
        return "org", subject
    raise InputError(f"subject {subject[:80]!r} is not a valid {kind}")


__all__ = ["collect", "explain", "explain_with", "rank", "resolve_subject"]
