"""Scope along a chain: artefact-name globs, purposes and remaining delegation depth.

Invariants (scope narrows down a chain and never widens):
* Globs are kept as one tuple per delegation level (as the record lists them); a name is
  in scope iff it matches (``fnmatch.fnmatchcase``: case-sensitive, ``*`` ``?`` ``[...]``)
  some glob of EVERY level. A root has no level, so every name is in a root's scope.
* Purposes intersect at every hop (kept sorted).
* Depth counts down: a root's is unbounded (None); a delegate's is
  ``min(max_depth, issuer_depth - 1)``; an endorsed root's is ``endorser_depth - 1``
  (unbounded below an unbounded endorser); a rotation keeps the depth it hands over.
* Only a scope with depth left (None or > 0) that is a root position, or holds
  ``"delegate"``, may delegate or endorse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from ledger.records import PURPOSES

_ALL_PURPOSES = tuple(sorted(PURPOSES))


@dataclass(frozen=True, slots=True)
class Scope:
    """What a key in a given position on a path may do (the scope left after a hop).

    Attributes:
        artefacts: one glob tuple per delegation level, root first.
        purposes: purposes left, sorted.
        depth: further delegation levels allowed; None while unbounded (a root).
        root: the key holds a root position (a root, an endorsed root, or the key a root
            rotated to): it may delegate whatever its purposes, depth permitting.
    """

    artefacts: tuple[tuple[str, ...], ...]
    purposes: tuple[str, ...]
    depth: int | None
    root: bool

    @classmethod
    def of_root(cls) -> Scope:
        """The scope of an organisation's root key: everything."""
        return _ROOT

    def can_delegate(self) -> bool:
        """True if a key in this scope may issue delegations or endorsements."""
        return (self.depth is None or self.depth > 0) and (self.root or "delegate" in self.purposes)

    def why_not_delegate(self) -> tuple[str, str]:
        """(reason code, message) for a scope that cannot delegate."""
        if not self.root and "delegate" not in self.purposes:
            return "cannot_delegate", "does not hold the 'delegate' purpose"
        return "over_depth", "has no delegation depth left"

    def delegate(self, *, artefacts: tuple[str, ...], purposes: tuple[str, ...], max_depth: int) -> Scope:
        """The scope of a key this scope delegates to (the issuer must :meth:`can_delegate`)."""
        depth = max_depth if self.depth is None else min(max_depth, self.depth - 1)
        return Scope((*self.artefacts, artefacts), _meet(self.purposes, purposes), depth, False)

    def endorse(self, purposes: tuple[str, ...]) -> Scope:
        """The scope of a root this scope endorses (transitive trust)."""
        depth = None if self.depth is None else self.depth - 1
        return Scope(self.artefacts, _meet(self.purposes, purposes), depth, True)

    def covers(self, name: str) -> bool:
        """True iff ``name`` matches some glob of every level."""
        return self.first_excluding_level(name) is None

    def first_excluding_level(self, name: str) -> int | None:
        """Index of the first level no glob of which matches ``name`` (None if covered)."""
        for i, level in enumerate(self.artefacts):
            for g in level:
                if g == "*" or _matcher(g)(name) is not None:
                    break
            else:
                return i
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "artefacts": [list(level) for level in self.artefacts], "purposes": list(self.purposes),
            "depth": self.depth, "root": self.root,
        }


_ROOT = Scope((), _ALL_PURPOSES, None, True)


_MATCHERS: dict[str, Callable[[str], re.Match[str] | None]] = {}
_MAX_MATCHERS = 4096


def _matcher(glob: str) -> Callable[[str], re.Match[str] | None]:
    """``fnmatchcase(name, glob)`` is ``_matcher(glob)(name) is not None`` (the same
    translation to a regular expression, compiled once per glob)."""
    m = _MATCHERS.get(glob)
    if m is None:
        if len(_MATCHERS) >= _MAX_MATCHERS:
            _MATCHERS.clear()
        m = _MATCHERS[glob] = re.compile(translate(glob)).match
    return m


_MEETS: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}


def _meet(have: tuple[str, ...], grant: tuple[str, ...]) -> tuple[str, ...]:
    """The purposes of ``have`` that ``grant`` also holds, in ``have``'s order (a handful
    of pairs recur: each is computed once)."""
    key = (have, grant)
    out = _MEETS.get(key)
    if out is None:
        if len(_MEETS) >= _MAX_MATCHERS:
            _MEETS.clear()
        out = _MEETS[key] = tuple([p for p in have if p in grant])
    return out


def is_wildcard(glob: str) -> bool:
    """True if ``glob`` matches every name (``*``, ``**``, ...)."""
    return bool(glob) and set(glob) == {"*"}


__all__ = ["Scope", "is_wildcard"]
