"""The rules a query applies and its per-query state (bounds, memos, findings).

Invariants:
* :class:`Rules` is what evaluation reads; a consumer :class:`~ledger.trust.policy.Policy`
  maps onto it one to one, and :meth:`Rules.open` gives the structural rules admission and
  impact use (every root is an anchor, for every purpose).
* A :class:`Query` lives for one call; it owns every memo (queries made from it by
  :meth:`Query.fresh` share them, within the same call), so no state survives between
  calls and the graph stays the only shared thing.
* Every search is bounded: at most ``limit`` candidate paths, ``max_steps`` key
  expansions; running into a bound is recorded (``truncated``), never silent.
* ``viable_only`` skips links that cannot hold where they are relied upon (integrated
  too late, outside their window, from an equivocating log): such a link can only make a
  rejected candidate, so callers that need accepted paths only (admission, impact) lose
  nothing. ``avoid`` lists keys the search must not pass through. ``on_chain``, if set,
  sees each candidate as it is found and returns True to stop the search (``done``).
* ``memo`` (:class:`~ledger.trust.memo.QueryMemo`, optional) is shared by the queries of
  one call that asks many questions (a trace, an impact) under the same rules and time;
  it never changes an answer, only how often the same work is done. While ``events`` is a
  list, every note and ignored revocation is also appended to it (in order), so that an
  evaluation state kept in the memo can report them again to a query resuming from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.entry import LoggedRecord
from ledger.keys import ALGORITHMS, KeyId
from ledger.records import MAX_DEPTH_LIMIT, Revocation
from ledger.trust.graph import TrustGraph
from ledger.trust.memo import QueryMemo
from ledger.trust.policy import Anchor, Policy
from ledger.trust.verdict import HopKind, IgnoredRevocation, Position

DEFAULT_LIMIT = 64
DEFAULT_MAX_STEPS = 20_000
OPEN_MAX_PATH_LENGTH = 2 * MAX_DEPTH_LIMIT + 4

Event = str | tuple[tuple[bytes, str], IgnoredRevocation]
"""What a query was told: a note, or an ignored revocation under its key."""


@dataclass(frozen=True)
class Rules:
    """Path rules: anchors (None: every root, every purpose) and policy limits."""

    anchors: Mapping[str, Anchor] | None
    max_transitive_hops: int
    require_hsm_root: bool
    witness_quorum: int
    allowed_algorithms: frozenset[str]
    max_path_length: int

    @classmethod
    def from_policy(cls, policy: Policy) -> Rules:
        """The rules of a consumer policy."""
        return cls(
            anchors={a.root: a for a in policy.anchors},
            max_transitive_hops=policy.max_transitive_hops,
            require_hsm_root=policy.require_hsm_root,
            witness_quorum=policy.witness_quorum,
            allowed_algorithms=frozenset(policy.allowed_algorithms),
            max_path_length=policy.max_path_length,
        )

    @classmethod
    def open(cls, *, max_transitive_hops: int) -> Rules:
        """Structural rules: every root is an anchor; no HSM, witness or algorithm rule."""
        return cls(
            anchors=None,
            max_transitive_hops=max_transitive_hops,
            require_hsm_root=False,
            witness_quorum=0,
            allowed_algorithms=frozenset(ALGORITHMS),
            max_path_length=OPEN_MAX_PATH_LENGTH,
        )

    def is_anchor_root(self, graph: TrustGraph, key: KeyId) -> bool:
        """True if ``key`` has a root record and these rules anchor it."""
        if not graph.roots_of(key):
            return False
        return self.anchors is None or key in self.anchors


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a candidate chain, before evaluation.

    ``kind`` is a :data:`~ledger.trust.verdict.HopKind`; ``frm`` the key that signed the
    record (None for a root record); ``to`` the key it lands on, or ``sha256:<hex>``.
    """

    kind: HopKind
    rec: LoggedRecord
    frm: KeyId | None
    to: str


@dataclass
class Query:
    """State of one query: inputs, bounds, memos and findings."""

    graph: TrustGraph
    rules: Rules
    at: int
    limit: int = DEFAULT_LIMIT
    max_steps: int = DEFAULT_MAX_STEPS
    viable_only: bool = False
    avoid: frozenset[str] = frozenset()
    on_chain: Callable[[tuple[Link, ...]], bool] | None = None
    done: bool = False
    steps: int = 0
    chains: list[tuple[Link, ...]] = field(default_factory=list)
    truncated: bool = False
    pruned_long: int = 0
    cycles: int = 0
    notes: list[str] = field(default_factory=list)
    ignored: dict[tuple[bytes, str], IgnoredRevocation] = field(default_factory=dict)
    ancestors: dict[KeyId, frozenset[KeyId] | None] = field(default_factory=dict)
    reaches: dict[KeyId, bool] = field(default_factory=dict)
    memo: QueryMemo | None = None
    events: list[Event] | None = None

    def fresh(self, **settings: Any) -> Query:
        """A new search over the same graph, rules and time, sharing this query's memos
        (they depend on nothing else); ``settings`` override limit, viable_only, avoid."""
        return Query(self.graph, self.rules, self.at, ancestors=self.ancestors, reaches=self.reaches,
                     ignored=self.ignored, memo=self.memo, **settings)

    def attestations_for(self, sha256: str) -> Sequence[LoggedRecord]:
        """The graph's attestations of ``sha256`` (through the memo, if any)."""
        if self.memo is not None:
            return self.memo.attestations_for(sha256)
        return self.graph.attestations_for(sha256)

    @property
    def stopped(self) -> bool:
        """True once a bound is reached or ``on_chain`` asked to stop."""
        return self.truncated or self.done

    def note(self, text: str) -> None:
        """Add a note once."""
        if self.events is not None:
            self.events.append(text)
        if text not in self.notes:
            self.notes.append(text)

    def ignore(self, rec: LoggedRecord, why: str) -> None:
        """Report a revocation that does not count."""
        rv = rec.record
        assert isinstance(rv, Revocation)
        key, value = (rec.record_id, rec.origin), IgnoredRevocation(Position.of(rec), rv.issuer, rv.target, why)
        if self.events is not None:
            self.events.append((key, value))
        self.ignored.setdefault(key, value)

    def replay(self, events: Sequence[Event]) -> None:
        """Take notes and ignored revocations reported to another query, in order."""
        for e in events:
            if isinstance(e, str):
                self.note(e)
            else:
                if self.events is not None:
                    self.events.append(e)
                self.ignored.setdefault(*e)


__all__ = ["DEFAULT_LIMIT", "DEFAULT_MAX_STEPS", "OPEN_MAX_PATH_LENGTH", "Event", "Link", "Query", "Rules"]
