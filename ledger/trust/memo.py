"""A memo shared by the many searches of one call (one trace, one impact).

A trace explains every artefact of a DAG, an impact judges every key and artefact below a
key; node after node they read the same attestations (from the store, for a node's graph)
and evaluate the same chain prefixes (root -> ... -> the signer's issuer) again. A
:class:`QueryMemo` keeps both for the duration of the call.

Invariants:
* A memo belongs to one graph, one set of :class:`~ledger.trust.context.Rules` and one
  verification time ``at``; :meth:`QueryMemo.fits` says whether a query may use it.
  Everything it holds is a pure function of its key given those and the graph's facts,
  so an answer computed with the memo is the one computed without it.
* Validity: the memo remembers :attr:`TrustGraph.version` when it was filled;
  :meth:`QueryMemo.sync` (called by its users before each item, and by every lookup of
  attestations) drops everything once the graph changed -- a record added, a revocation,
  an equivocation, witness coverage. Nothing survives the call that made the memo.
* Judged links are kept in a tree keyed by the links of a chain prefix (records by
  identity; each entry holds its records, so an id is never reused while the memo
  lives), each with the link judged per reliance time, and what judging it reported to
  the query (notes, ignored revocations), which a query taking it from the memo gets
  too (:mod:`ledger.trust.evaluate`).
* Bounded: past :data:`MAX_ENTRIES` attestation lists or evaluation states the memo
  starts again empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ledger.entry import LoggedRecord
from ledger.trust.graph import TrustGraph

if TYPE_CHECKING:
    from ledger.trust.context import Rules
    from ledger.trust.link import LinkState
    from ledger.trust.search import Candidate, Frame

MAX_ENTRIES = 100_000

StateKey = tuple[int, str, str | None, str, int]
"""A link of a chain prefix: its record's id, kind, from and to keys, and for an endorsement
the id of the root record after it (its algorithm is the endorsed key's)."""


class QueryMemo:
    """What the queries of one call over ``graph`` under ``rules`` at ``at`` may share."""

    def __init__(self, graph: TrustGraph, rules: Rules, at: int, *, max_entries: int = MAX_ENTRIES) -> None:
        self.graph, self.rules, self.at = graph, rules, at
        self.max_entries = max_entries
        self.version = graph.version
        self._attestations: dict[str, Sequence[LoggedRecord]] = {}
        self._evals: dict[str | None, dict[StateKey, LinkState]] = {}
        self.frames: dict[tuple[str, int], Frame] = {}
        self.ups: dict[str, tuple[Candidate, ...]] = {}  # links up from a key (no copies to choose)
        self._states = 0
        self.hits = 0

    def fits(self, graph: TrustGraph, rules: Rules, at: int) -> bool:
        """True if a query over ``graph`` under ``rules`` at ``at`` may use this memo."""
        return graph is self.graph and at == self.at and (rules is self.rules or rules == self.rules)

    def sync(self) -> None:
        """Forget everything if the graph changed since the memo was filled."""
        v = self.graph.version
        if v != self.version:
            self.clear()
            self.version = v

    def clear(self) -> None:
        """Forget everything."""
        self._attestations = {}
        self._evals = {}
        self.frames = {}
        self.ups = {}
        self._states = 0

    def attestations_for(self, sha256: str) -> Sequence[LoggedRecord]:
        """:meth:`TrustGraph.attestations_for`, read once per digest."""
        if self.graph.version != self.version:
            self.sync()
        hexd = sha256[7:] if sha256.startswith("sha256:") else sha256
        recs = self._attestations.get(hexd)
        if recs is None:
            if len(self._attestations) >= self.max_entries:
                self._attestations = {}
            recs = self._attestations[hexd] = tuple(self.graph.attestations_for(hexd))
        return recs

    def link_states(self, purpose: str | None) -> dict[StateKey, LinkState]:
        """The judged first links of chains evaluated for ``purpose`` (each holding the
        links judged after it: :class:`~ledger.trust.link.LinkState`)."""
        level = self._evals.get(purpose)
        if level is None:
            level = self._evals[purpose] = {}
        return level

    def add_state(self) -> bool:
        """Count one more kept link state; False (and every one forgotten) past the bound."""
        if self._states >= self.max_entries:
            self._evals = {}
            self.frames = {}
            self.ups = {}
            self._states = 0
            return False
        self._states += 1
        return True


__all__ = ["MAX_ENTRIES", "QueryMemo", "StateKey"]
