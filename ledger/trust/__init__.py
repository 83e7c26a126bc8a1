"""The trust engine: delegated versus transitive trust across chains, the weakest link,
revocation impact, and append-time admission.

* :class:`TrustGraph` -- every key record and attestation of every log held, indexed and
  fed incrementally (:meth:`TrustGraph.add`).
* :class:`Policy` / :func:`load_policy` -- the consumer's pinned anchors and rules (TOML).
* :func:`explain` -- every path from an anchor to a key, org or artefact, each hop
  classified (root, delegated, transitive, rotation, attestation), joins marked, every
  rejected candidate with its reasons, and the weakest link named.
  :func:`explain_with` does the same under explicit :class:`Rules` (e.g.
  ``Rules.open(...)``: every root an anchor, as lineage and admission use).
* :func:`impact` -- what would lose trust if a key were revoked, and what keeps an
  alternative path.
* :func:`admit` / :class:`RootsPolicy` -- the check a log runs before appending.

Invariants: pure (no I/O besides reading a policy file, no clock: times are passed in);
every answer is a frozen, JSON-serialisable object; every search is bounded.
"""

from ledger.trust.admission import RootsPolicy, admit
from ledger.trust.context import Rules
from ledger.trust.explain import explain, explain_with
from ledger.trust.graph import TrustGraph
from ledger.trust.impact import Impact, ImpactItem, OrgImpact, impact
from ledger.trust.policy import Anchor, Policy, load_policy, parse_policy
from ledger.trust.scope import Scope
from ledger.trust.verdict import (
    Explanation,
    Hop,
    HopKind,
    IgnoredRevocation,
    Position,
    Reason,
    SubjectKind,
    TrustKind,
    TrustPath,
    WeakestLink,
)
from ledger.trust.weakest import CRITERIA

__all__ = [
    "CRITERIA",
    "Anchor",
    "Explanation",
    "Hop",
    "HopKind",
    "IgnoredRevocation",
    "Impact",
    "ImpactItem",
    "OrgImpact",
    "Policy",
    "Position",
    "Reason",
    "RootsPolicy",
    "Rules",
    "Scope",
    "SubjectKind",
    "TrustGraph",
    "TrustKind",
    "TrustPath",
    "WeakestLink",
    "admit",
    "explain",
    "explain_with",
    "impact",
    "load_policy",
    "parse_policy",
]
