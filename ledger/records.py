"""The ledger's own record kinds, as frozen typed classes over canonical msgpack payloads.

Invariants:
* Each kind has one payload type ``application/vnd.turtles.<kind>.v1+msgpack`` and one
  canonical byte form: ``Kind.from_payload(k.to_payload()) == k`` and the bytes round-trip.
* Validation happens in each record's ``__post_init__``, so a record built in code obeys
  the same rules as one parsed from a payload; every error is a
  :class:`~ledger.errors.RecordError` naming the field and the reason. Parsing
  (``from_value``) refuses unknown and missing fields (an optional field is present as nil).
* Times are integers of Unix **milliseconds** (UTC). ``None`` for ``not_after`` means "no expiry",
  for ``since`` means "revoked entirely". Validity windows are closed intervals:
  ``not_before <= t <= not_after``.
* A record's ``created`` is what its signer claims; trust decisions use the time the log
  integrated the entry (the entry's ``ts``), never ``created``.

Attestations (in-toto Statement v1 JSON) live in :mod:`ledger.attestation`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from ledger.encoding import decode, encode
from ledger.errors import KeyFormatError, RecordError
from ledger.keys import KeyId, PublicKey, parse_key_id

PURPOSES = ("release", "build", "log", "delegate")
Purpose = Literal["release", "build", "log", "delegate"]
MAX_GLOBS = 64
MAX_TEXT = 1024
MAX_DEPTH_LIMIT = 16
_ORG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_PREFIX = "application/vnd.turtles."

R = TypeVar("R", bound="_Record")


# --- field checks: each names the field it rejects -------------------------------------
#
# Every record validates itself in ``__post_init__``, whether it was parsed from a payload or
# built in code, so a record that exists always encodes to a payload every node accepts.

_INT64_MAX = (1 << 63) - 1


def _check_str(name: str, v: Any, *, max_len: int = MAX_TEXT) -> None:
    if not isinstance(v, str):
        raise RecordError(name, "want a string")
    if not v:
        raise RecordError(name, "must not be empty")
    if len(v) > max_len:
        raise RecordError(name, f"longer than {max_len} characters")


def _check_org(name: str, v: Any) -> None:
    _check_str(name, v, max_len=63)
    if not _ORG_RE.fullmatch(v):
        raise RecordError(name, f"{v!r} is not an org name (lowercase letters, digits, . _ -)")


def _check_int(name: str, v: Any, *, optional: bool = False, lo: int = 0, hi: int = _INT64_MAX) -> None:
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise RecordError(name, "want an integer" + (" or nil" if optional else ""))
    if not lo <= v <= hi:
        raise RecordError(name, f"want {lo}..{hi}")


def _check_bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise RecordError(name, "want true or false")


def _check_key_id(name: str, v: Any) -> None:
    _check_str(name, v, max_len=71)
    try:
        parse_key_id(v)
    except KeyFormatError as e:
        raise RecordError(name, e.message) from e


def _check_public_key(name: str, v: Any) -> None:
    if not isinstance(v, PublicKey):
        raise RecordError(name, "want a public key")


def _check_str_list(name: str, v: Any, *, allowed: tuple[str, ...] | None = None) -> None:
    if not isinstance(v, tuple) or not v:
        raise RecordError(name, "want a non-empty list of strings")
    if len(v) > MAX_GLOBS:
        raise RecordError(name, f"more than {MAX_GLOBS} items")
    for i, item in enumerate(v):
        if not isinstance(item, str) or not item or len(item) > 256:
            raise RecordError(f"{name}[{i}]", "want a string of 1..256 characters")
        if allowed is not None and item not in allowed:
            raise RecordError(f"{name}[{i}]", f"{item!r} is not one of {', '.join(allowed)}")
    if len(set(v)) != len(v):
        raise RecordError(name, "has duplicate items")
    if list(v) != sorted(v):
        raise RecordError(name, "items must be sorted (canonical form)")


def _check_window(not_before: int, not_after: int | None) -> None:
    if not_after is not None and not_after < not_before:
        raise RecordError("not_after", "is before not_before")


def _as_tuple(record: object, name: str) -> None:
    """Let callers pass a list where a tuple is declared (the instance stays hashable)."""
    v = getattr(record, name)
    if isinstance(v, list):
        object.__setattr__(record, name, tuple(v))


def _public_key(name: str, v: Any) -> PublicKey:
    if not isinstance(v, bytes):
        raise RecordError(name, "want DER SubjectPublicKeyInfo bytes")
    try:
        return PublicKey.from_der(v)
    except KeyFormatError as e:
        raise RecordError(name, e.message) from e


@dataclass(frozen=True)
class _Record:
    """Shared behaviour: payload type, canonical bytes, strict parsing."""

    kind: ClassVar[str]
    _key_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields holding a :class:`PublicKey` (DER bytes in the payload)."""

    @classmethod
    def payload_type(cls) -> str:
        """``application/vnd.turtles.<kind>.v1+msgpack``."""
        return f"{_PREFIX}{cls.kind}.v1+msgpack"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The payload's field names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def to_value(self) -> dict[str, Any]:
        """The msgpack-ready map: keys as DER, tuples as lists."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            v = getattr(self, name)
            if isinstance(v, PublicKey):
                v = v.der
            elif isinstance(v, tuple):
                v = list(v)
            out[name] = v
        return out

    def to_payload(self) -> bytes:
        """Canonical msgpack bytes: what gets signed."""
        return encode(self.to_value())

    @classmethod
    def from_payload(cls: type[R], payload: bytes) -> R:
        """Parse and validate canonical msgpack bytes."""
        return cls.from_value(decode(payload))

    @classmethod
    def from_value(cls: type[R], obj: Any) -> R:
        """Validate a decoded map; RecordError names the first bad field.

        Every field must be present (an optional one as nil), and no other.
        """
        if not isinstance(obj, dict):
            raise RecordError(cls.kind, "want a map")
        names = cls.field_names()
        extra = sorted(str(k) for k in obj if k not in names)
        if extra:
            raise RecordError(extra[0], f"unknown field in a {cls.kind} record")
        kwargs: dict[str, Any] = {}
        for name in names:
            if name not in obj:
                raise RecordError(name, f"missing from the {cls.kind} record")
            v = obj[name]
            if name in cls._key_fields:
                v = _public_key(name, v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[name] = v
        return cls(**kwargs)


@dataclass(frozen=True)
class RootRecord(_Record):
    """An organisation's root key: the bottom turtle. Self-signed by ``key``."""

    kind: ClassVar[str] = "root"
    _key_fields: ClassVar[frozenset[str]] = frozenset({"key"})
    org: str
    key: PublicKey
    hsm: bool
    created: int

    def __post_init__(self) -> None:
        _check_org("org", self.org)
        _check_public_key("key", self.key)
        _check_bool("hsm", self.hsm)
        _check_int("created", self.created)


@dataclass(frozen=True)
class Delegation(_Record):
    """``issuer`` authorises ``subject`` for a scope: names, purposes, depth, window.

    ``max_depth`` is how many further delegations may hang below ``subject`` (0: none).
    ``org`` is the organisation the subject acts for when it is not the issuer's own (a
    cross-organisation delegation: a join); nil means the issuer's organisation, which the
    trust engine knows from the issuer's chain. ``artefacts`` and ``purposes`` are
    sets, given sorted and without duplicates (their canonical form).
    """

    kind: ClassVar[str] = "delegation"
    _key_fields: ClassVar[frozenset[str]] = frozenset({"subject"})
    issuer: KeyId
    subject: PublicKey
    name: str
    org: str | None
    artefacts: tuple[str, ...]
    purposes: tuple[str, ...]
    max_depth: int
    not_before: int
    not_after: int | None
    created: int

    def __post_init__(self) -> None:
        _as_tuple(self, "artefacts")
        _as_tuple(self, "purposes")
        _check_key_id("issuer", self.issuer)
        _check_public_key("subject", self.subject)
        _check_str("name", self.name, max_len=256)
        if self.org is not None:
            _check_org("org", self.org)
        _check_str_list("artefacts", self.artefacts)
        _check_str_list("purposes", self.purposes, allowed=PURPOSES)
        _check_int("max_depth", self.max_depth, hi=MAX_DEPTH_LIMIT)
        _check_int("not_before", self.not_before)
        _check_int("not_after", self.not_after, optional=True)
        _check_int("created", self.created)
        if self.subject.key_id == self.issuer:
            raise RecordError("subject", "a key cannot delegate to itself")
        _check_window(self.not_before, self.not_after)


@dataclass(frozen=True)
class Endorsement(_Record):
    """``endorser`` says it trusts ``org``'s root ``root`` for ``purposes``, without
    authorising it to act for the endorser: the source of transitive trust."""

    kind: ClassVar[str] = "endorsement"
    endorser: KeyId
    org: str
    root: KeyId
    purposes: tuple[str, ...]
    not_before: int
    not_after: int | None
    created: int

    def __post_init__(self) -> None:
        _as_tuple(self, "purposes")
        _check_key_id("endorser", self.endorser)
        _check_org("org", self.org)
        _check_key_id("root", self.root)
        _check_str_list("purposes", self.purposes, allowed=PURPOSES)
        _check_int("not_before", self.not_before)
        _check_int("not_after", self.not_after, optional=True)
        _check_int("created", self.created)
        if self.root == self.endorser:
            raise RecordError("root", "a key cannot endorse itself")
        _check_window(self.not_before, self.not_after)


@dataclass(frozen=True)
class Revocation(_Record):
    """``target`` is revoked from ``since`` (log time, ms) or entirely (``since`` None).

    Signed by the key that delegated ``target`` or by any key above it, or by ``target``
    itself (a key may always give itself up).
    """

    kind: ClassVar[str] = "revocation"
    issuer: KeyId
    target: KeyId
    since: int | None
    reason: str
    created: int

    def __post_init__(self) -> None:
        _check_key_id("issuer", self.issuer)
        _check_key_id("target", self.target)
        _check_int("since", self.since, optional=True)
        _check_str("reason", self.reason)
        _check_int("created", self.created)


@dataclass(frozen=True)
class Rotation(_Record):
    """``old`` hands over to ``new``: everything ``old`` was trusted for passes to ``new``
    from the rotation's log time, and ``old`` stops signing. Signed by both keys."""

    kind: ClassVar[str] = "rotation"
    _key_fields: ClassVar[frozenset[str]] = frozenset({"new"})
    old: KeyId
    new: PublicKey
    created: int

    def __post_init__(self) -> None:
        _check_key_id("old", self.old)
        _check_public_key("new", self.new)
        _check_int("created", self.created)
        if self.new.key_id == self.old:
            raise RecordError("new", "rotation to the same key")


KeyRecord = RootRecord | Delegation | Endorsement | Revocation | Rotation
KINDS: dict[str, type[KeyRecord]] = {
    k.payload_type(): k for k in (RootRecord, Delegation, Endorsement, Revocation, Rotation)
}
_PARSERS: dict[str, Callable[[bytes], KeyRecord]] = {t: k.from_payload for t, k in KINDS.items()}


def parse_key_record(payload_type: str, payload: bytes) -> KeyRecord:
    """Parse a turtles payload of any kind.

    Raises:
        RecordError: unknown payload type, or a field is bad.
        EncodingError, TooLargeError: the bytes are not canonical msgpack.
    """
    parser = _PARSERS.get(payload_type)
    if parser is None:
        raise RecordError("payloadType", f"{payload_type!r} is not a turtles record type")
    return parser(payload)


def is_key_record_type(payload_type: str) -> bool:
    """True for the five turtles key-record payload types."""
    return payload_type in _PARSERS


def required_signers(record: KeyRecord) -> tuple[KeyId, ...]:
    """Key ids that MUST have signed ``record`` (beyond admission by the trust rules)."""
    if isinstance(record, RootRecord):
        return (record.key.key_id,)
    if isinstance(record, Rotation):
        return (record.old, record.new.key_id)
    if isinstance(record, Delegation):
        return (record.issuer,)
    if isinstance(record, Endorsement):
        return (record.endorser,)
    return (record.issuer,)  # revocation: that the issuer may revoke is a trust rule


__all__ = [
    "KINDS",
    "PURPOSES",
    "Delegation",
    "Endorsement",
    "KeyRecord",
    "Purpose",
    "Revocation",
    "RootRecord",
    "Rotation",
    "is_key_record_type",
    "parse_key_record",
    "required_signers",
]
