"""Consumer trust policy: pinned anchors and the rules a path must satisfy (TOML).

The file format is the one in DESIGN.md::

    [[anchor]]
    org = "acme"
    root = "sha256:..."          # root key id
    purposes = ["release"]
    [trust]
    max_transitive_hops = 0      # 0: delegated trust only
    require_hsm_root = true
    witness_quorum = 0
    allowed_algorithms = ["ed25519", "p256"]
    max_path_length = 8

Invariants:
* Parsing is strict: an unknown table or key, a wrong type (a TOML boolean is never taken
  for an integer) or an out-of-range value raises :class:`~ledger.errors.PolicyError`
  whose ``key`` names the setting (``"anchor[1].root"``, ``"trust.witness_quorum"``) and
  whose ``problem`` says what is wrong.
* A policy pins at least one anchor, and one root key id at most once.
* A :class:`Policy` is immutable; the defaults are those of DESIGN.md.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ledger.errors import KeyFormatError, PolicyError
from ledger.keys import ALGORITHMS, KeyId, parse_key_id
from ledger.records import PURPOSES

MAX_PATH_LENGTH_LIMIT = 64
MAX_POLICY_BYTES = 1 << 20
_ORG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_ANCHOR_KEYS = frozenset({"org", "root", "purposes"})
_TRUST_KEYS = frozenset(
    {"max_transitive_hops", "require_hsm_root", "witness_quorum", "allowed_algorithms", "max_path_length"}
)


@dataclass(frozen=True)
class Anchor:
    """A pinned root: the consumer trusts ``org``'s root key ``root`` for ``purposes``."""

    org: str
    root: KeyId
    purposes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"org": self.org, "root": self.root, "purposes": list(self.purposes)}


@dataclass(frozen=True)
class Policy:
    """What a path from an anchor must satisfy to be trusted.

    Attributes:
        anchors: the pinned roots (at least one).
        max_transitive_hops: how many endorsement (transitive) hops a path may contain.
        require_hsm_root: every root on the path must be declared HSM-held.
        witness_quorum: every record on the path must be covered by a checkpoint cosigned
            by at least this many distinct witnesses.
        allowed_algorithms: key algorithms accepted for every key on the path.
        max_path_length: the most hops a path may have (root and attestation hops count).
    """

    anchors: tuple[Anchor, ...]
    max_transitive_hops: int = 0
    require_hsm_root: bool = True
    witness_quorum: int = 0
    allowed_algorithms: tuple[str, ...] = ALGORITHMS
    max_path_length: int = 8

    def __post_init__(self) -> None:
        if not self.anchors:
            _fail("anchor", "a policy needs at least one [[anchor]]")
        seen: set[str] = set()
        for i, a in enumerate(self.anchors):
            if a.root in seen:
                _fail(f"anchor[{i}].root", f"{a.root} is pinned twice")
            seen.add(a.root)
        _check_int("trust.max_transitive_hops", self.max_transitive_hops, lo=0, hi=MAX_PATH_LENGTH_LIMIT)
        _check_int("trust.witness_quorum", self.witness_quorum, lo=0, hi=1024)
        _check_int("trust.max_path_length", self.max_path_length, lo=1, hi=MAX_PATH_LENGTH_LIMIT)
        if not isinstance(self.require_hsm_root, bool):
            _fail("trust.require_hsm_root", "want true or false")
        _check_choices("trust.allowed_algorithms", list(self.allowed_algorithms), ALGORITHMS)

    def anchor_for(self, root: str) -> Anchor | None:
        """The anchor pinning key id ``root``, if any."""
        for a in self.anchors:
            if a.root == root:
                return a
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the same shape as the TOML file)."""
        return {
            "anchor": [a.to_dict() for a in self.anchors],
            "trust": {
                "max_transitive_hops": self.max_transitive_hops,
                "require_hsm_root": self.require_hsm_root,
                "witness_quorum": self.witness_quorum,
                "allowed_algorithms": list(self.allowed_algorithms),
                "max_path_length": self.max_path_length,
            },
        }


def parse_policy(text: str) -> Policy:
    """Parse policy TOML text.

    Raises:
        PolicyError: not TOML, or an unknown, missing or ill-typed setting (``key`` names it).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"policy is not valid TOML: {e}", key="", problem="syntax") from e
    unknown = sorted(set(doc) - {"anchor", "trust"})
    if unknown:
        _fail(unknown[0], "unknown setting (want [[anchor]] and [trust])")
    raw_anchors = doc.get("anchor")
    if raw_anchors is None:
        _fail("anchor", "a policy needs at least one [[anchor]]")
    if not isinstance(raw_anchors, list) or not raw_anchors:
        _fail("anchor", "want one or more [[anchor]] tables")
    anchors = tuple(_anchor(f"anchor[{i}]", a) for i, a in enumerate(raw_anchors))
    trust = doc.get("trust", {})
    if not isinstance(trust, dict):
        _fail("trust", "want a [trust] table")
    unknown = sorted(set(trust) - _TRUST_KEYS)
    if unknown:
        _fail(f"trust.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(_TRUST_KEYS))})")
    kw: dict[str, Any] = {}
    for name in ("max_transitive_hops", "witness_quorum", "max_path_length"):
        if name in trust:
            kw[name] = _int(f"trust.{name}", trust[name])
    if "require_hsm_root" in trust:
        if not isinstance(trust["require_hsm_root"], bool):
            _fail("trust.require_hsm_root", "want true or false")
        kw["require_hsm_root"] = trust["require_hsm_root"]
    if "allowed_algorithms" in trust:
        kw["allowed_algorithms"] = _choices("trust.allowed_algorithms", trust["allowed_algorithms"], ALGORITHMS)
    return Policy(anchors=anchors, **kw)


def load_policy(text_or_path: str | os.PathLike[str]) -> Policy:
    """Load a policy from TOML text or from a file.

    A :class:`os.PathLike` is always a path. A ``str`` is TOML text when it contains a
    newline, ``=`` or ``[`` (every non-empty policy does); otherwise it is a file path.

    Raises:
        PolicyError: the file cannot be read or the policy is invalid.
    """
    if isinstance(text_or_path, str) and any(c in text_or_path for c in "\n=["):
        return parse_policy(text_or_path)
    path = Path(text_or_path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(f"cannot read policy file {path}: {e.strerror}", key=str(path), problem="unreadable") from e
    if len(data) > MAX_POLICY_BYTES:
        _fail(str(path), f"policy file larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"{path}: policy is not UTF-8", key=str(path), problem="encoding") from e
    return parse_policy(text)


# --- field readers: each names the setting it rejects ------------------------------------


def _fail(key: str, problem: str) -> NoReturn:
    raise PolicyError(f"{key}: {problem}", key=key, problem=problem)


def _int(key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        _fail(key, f"want an integer, got {type(v).__name__}")
    return int(v)


def _check_int(key: str, v: Any, *, lo: int, hi: int) -> None:
    _int(key, v)
    if not lo <= v <= hi:
        _fail(key, f"{v} is out of range {lo}..{hi}")


def _choices(key: str, v: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(v, list):
        _fail(key, "want a list of strings")
    _check_choices(key, v, allowed)
    return tuple(sorted(v))


def _check_choices(key: str, v: list[Any], allowed: tuple[str, ...]) -> None:
    if not v:
        _fail(key, "must not be empty")
    for i, item in enumerate(v):
        if not isinstance(item, str):
            _fail(f"{key}[{i}]", "want a string")
        if item not in allowed:
            _fail(f"{key}[{i}]", f"{item!r} is not one of {', '.join(allowed)}")
    if len(set(v)) != len(v):
        _fail(key, "has duplicate items")


def _anchor(key: str, v: Any) -> Anchor:
    if not isinstance(v, dict):
        _fail(key, "want a table with org, root, purposes")
    unknown = sorted(set(v) - _ANCHOR_KEYS)
    if unknown:
        _fail(f"{key}.{unknown[0]}", "unknown setting (want org, root, purposes)")
    for name in ("org", "root", "purposes"):
        if name not in v:
            _fail(f"{key}.{name}", "missing")
    org = v["org"]
    if not isinstance(org, str) or not _ORG_RE.fullmatch(org):
        _fail(f"{key}.org", f"{org!r} is not an org name (lowercase letters, digits, . _ -)")
    root = v["root"]
    if not isinstance(root, str):
        _fail(f"{key}.root", "want a key id string")
    try:
        kid = parse_key_id(root)
    except KeyFormatError as e:
        raise PolicyError(f"{key}.root: {e.message}", key=f"{key}.root", problem=e.message) from e
    return Anchor(org=org, root=kid, purposes=_choices(f"{key}.purposes", v["purposes"], PURPOSES))


__all__ = ["Anchor", "Policy", "load_policy", "parse_policy"]
