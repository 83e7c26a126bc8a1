"""Release attestations: in-toto Statement v1 (JSON) with SLSA Provenance v1 predicates.

Invariants:
* The statement is read from the exact payload bytes; it is never re-serialised for
  hashing or verification, so envelopes from other in-toto/DSSE producers are accepted
  verbatim.
* Subjects and materials are identified by ``sha256`` digests (lowercase hex). Other
  digest algorithms are kept but never used to match.
* A SLSA v1 predicate's ``buildDefinition.resolvedDependencies`` are the materials; an
  older SLSA v0.2 ``materials`` list is read too. Other predicate types have no materials.
* One answer per payload. Statements of the shape :func:`make_statement` writes (compact,
  sorted keys, no escapes) are recognised by one regular expression (:func:`_common`)
  instead of the strict JSON parser with Python hooks; that shape has no duplicate key, no
  number and no constant, so the result is the strict parser's, and anything else -- every
  invalid payload included -- goes to the strict parser, which gives its answer and error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import RecordError, TooLargeError
from ledger.strictjson import cached_loads, no_duplicate_keys

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SLSA_PROVENANCE_V02 = "https://slsa.dev/provenance/v0.2"
MAX_STATEMENT_BYTES = 1 << 20
MAX_SUBJECTS = 1024
MAX_MATERIALS = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")

# The statement make_statement writes by default (json.dumps, compact, sorted keys): a JSON
# string without escapes (no '"', no backslash, no control character) is _STR, and its
# text is its value; an artefact is {"digest":{"sha256":<64 hex>},"name":<string>}.
_STR = r'[^"\\\x00-\x1f]*'
_ART = r'\{"digest":\{"sha256":"[0-9a-f]{64}"\},"name":"' + _STR + r'"\}'
_ARTS = _ART + "(?:," + _ART + ")*"
_COMMON = re.compile(
    re.escape('{"_type":"' + STATEMENT_V1 + '","predicate":{"buildDefinition":{"buildType":"') + _STR
    + re.escape('","externalParameters":{') + '(?:"name":"' + _STR + '")?'
    + re.escape('},"resolvedDependencies":[') + "(" + "(?:" + _ARTS + ")?" + ")"
    + re.escape(']},"runDetails":{"builder":{"id":"') + "(" + _STR + ")"
    + re.escape('"}}},"predicateType":"' + SLSA_PROVENANCE_V1 + '","subject":[') + "(" + _ARTS + ")"
    + re.escape("]}")
)
_COMMON_ART = re.compile(r'\{"digest":\{"sha256":"([0-9a-f]{64})"\},"name":"(' + _STR + r')"\}')


@dataclass(frozen=True)
class Artefact:
    """A named artefact and its sha256 digest (hex)."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Attestation:
    """A parsed in-toto statement.

    Attributes:
        subjects: what the statement is about (artefacts released).
        predicate_type: the predicate's URI.
        materials: artefacts the subjects were built from (SLSA resolvedDependencies).
        builder: SLSA ``runDetails.builder.id`` when present.
        statement: the whole decoded JSON, for display.
    """

    subjects: tuple[Artefact, ...]
    predicate_type: str
    materials: tuple[Artefact, ...]
    builder: str | None
    # Compared but not hashed: a dict cannot be hashed, and the other fields decide.
    statement: dict[str, Any] = field(hash=False)

    @property
    def digests(self) -> tuple[str, ...]:
        """sha256 digests of the subjects."""
        return tuple(s.sha256 for s in self.subjects)

    @classmethod
    def from_payload(cls, payload: bytes) -> Attestation:
        """Parse and validate a statement (UTF-8 JSON); RecordError names the bad field.

        Raises:
            TooLargeError: over :data:`MAX_STATEMENT_BYTES`, or too many subjects/materials.
            RecordError: not a JSON object, duplicate keys, ``NaN``/``Infinity``, or a bad field.
        """
        text = _text(payload)
        common = _common(text) if text is not None else None
        if text is not None and common is not None:
            # The shape rules out duplicate keys, numbers and constants: the hook-free C
            # parser reads it exactly as the strict one would.
            subjects, materials, builder = common
            return cls(subjects, SLSA_PROVENANCE_V1, materials, builder, json.loads(text))
        return cls._from_text(payload, text)

    @classmethod
    def lean(cls, subjects: tuple[Artefact, ...], predicate_type: str, materials: tuple[Artefact, ...],
             builder: str | None) -> Attestation:
        """``Attestation(subjects, predicate_type, materials, builder, {})``, made without the
        dataclass ``__init__`` (a frozen one sets each field through a call): the attestation
        of a record whose statement the caller does not keep (see :mod:`ledger.procverify`)."""
        att: Attestation = object.__new__(cls)
        put = object.__setattr__  # field by field (not a new __dict__): as compact as __init__'s
        put(att, "subjects", subjects)
        put(att, "predicate_type", predicate_type)
        put(att, "materials", materials)
        put(att, "builder", builder)
        put(att, "statement", {})
        return att

    @classmethod
    def _from_text(cls, payload: bytes, text: str | None) -> Attestation:
        """The strict path of :meth:`from_payload` (``text``: the payload decoded, or None)."""
        try:
            obj = _loads(text if text is not None else payload.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise RecordError("statement", f"not valid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise RecordError("statement", "want a JSON object")
        if obj.get("_type") not in (STATEMENT_V1, STATEMENT_V01):
            raise RecordError("_type", f"want {STATEMENT_V1} (or {STATEMENT_V01})")
        ptype = obj.get("predicateType")
        if not isinstance(ptype, str) or not ptype:
            raise RecordError("predicateType", "want a non-empty string")
        subjects = _artefacts(obj.get("subject"), "subject", MAX_SUBJECTS, need_sha256=True)
        if not subjects:
            raise RecordError("subject", "want at least one subject")
        predicate = obj.get("predicate", {})
        if not isinstance(predicate, dict):
            raise RecordError("predicate", "want a JSON object")
        materials, builder = _slsa(ptype, predicate)
        return cls(subjects, ptype, materials, builder, obj)


Pairs = tuple[tuple[str, str], ...]


def lean_fields(payload: bytes) -> tuple[Pairs, str, Pairs, str | None]:
    """The subjects, predicate type, materials and builder of ``from_payload(payload)``,
    artefacts as ``(name, sha256)`` pairs, without building the statement when the payload
    has the common shape (what a worker process sends back; see :mod:`ledger.procverify`).

    Raises:
        TooLargeError, RecordError: as :meth:`Attestation.from_payload`.
    """
    text = _text(payload)
    common = _common_pairs(text) if text is not None else None
    if common is not None:
        subjects, materials, builder = common
        return subjects, SLSA_PROVENANCE_V1, materials, builder
    att = Attestation._from_text(payload, text)
    return (tuple((a.name, a.sha256) for a in att.subjects), att.predicate_type,
            tuple((a.name, a.sha256) for a in att.materials), att.builder)


def _text(payload: bytes) -> str | None:
    """The payload as text, None when it is not UTF-8 (the strict path says so)."""
    if len(payload) > MAX_STATEMENT_BYTES:
        raise TooLargeError(f"statement has {len(payload)} bytes, limit {MAX_STATEMENT_BYTES}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _common_pairs(text: str) -> tuple[Pairs, Pairs, str] | None:
    """Subjects, materials (as pairs) and builder of a statement of the common shape, else None."""
    m = _COMMON.fullmatch(text)
    if m is None:
        return None
    subjects = _COMMON_ART.findall(m[3])
    materials = _COMMON_ART.findall(m[1]) if m[1] else []
    if len(subjects) > MAX_SUBJECTS or len(materials) > MAX_MATERIALS:
        return None  # the strict path raises the TooLargeError
    # findall gives (sha256, name); names are the string's text (no escapes in this shape).
    return tuple([(n, d) for d, n in subjects]), tuple([(n, d) for d, n in materials]), m[2]


def _common(text: str) -> tuple[tuple[Artefact, ...], tuple[Artefact, ...], str] | None:
    """:func:`_common_pairs` with the artefacts built."""
    common = _common_pairs(text)
    if common is None:
        return None
    subjects, materials, builder = common
    return artefacts(subjects), artefacts(materials), builder


def artefacts(pairs: Iterable[tuple[str, str]]) -> tuple[Artefact, ...]:
    """The artefacts of ``(name, sha256)`` pairs."""
    return tuple([Artefact(name, sha256) for name, sha256 in pairs])


def _slsa(ptype: str, predicate: dict[str, Any]) -> tuple[tuple[Artefact, ...], str | None]:
    if ptype == SLSA_PROVENANCE_V1:
        build = predicate.get("buildDefinition", {})
        if not isinstance(build, dict):
            raise RecordError("predicate.buildDefinition", "want a JSON object")
        deps = build.get("resolvedDependencies", [])
        where = "predicate.buildDefinition.resolvedDependencies"
        run = predicate.get("runDetails", {})
        b = run.get("builder", {}) if isinstance(run, dict) else None
        builder = b.get("id") if isinstance(b, dict) else None
    elif ptype == SLSA_PROVENANCE_V02:
        deps, where = predicate.get("materials", []), "predicate.materials"
        b = predicate.get("builder", {})
        builder = b.get("id") if isinstance(b, dict) else None
    else:
        return (), None
    mats = _artefacts(deps, where, MAX_MATERIALS, need_sha256=False)
    return mats, builder if isinstance(builder, str) else None


def _artefacts(value: Any, where: str, limit: int, *, need_sha256: bool) -> tuple[Artefact, ...]:
    if value is None and not need_sha256:
        return ()
    if not isinstance(value, list):
        raise RecordError(where, "want a list")
    if len(value) > limit:
        raise TooLargeError(f"{where}: {len(value)} items, limit {limit}")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RecordError(at, "want an object")
        name = item.get("name", item.get("uri", ""))
        if not isinstance(name, str):
            raise RecordError(f"{at}.name", "want a string")
        digest = item.get("digest", {})
        if not isinstance(digest, dict):
            raise RecordError(f"{at}.digest", "want an object")
        sha = digest.get("sha256")
        if sha is None:
            if need_sha256:
                raise RecordError(f"{at}.digest.sha256", "missing: turtles identifies artefacts by sha256")
            continue  # a material without sha256 (e.g. a git commit) cannot be followed
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise RecordError(f"{at}.digest.sha256", "want 64 lowercase hex digits")
        out.append(Artefact(name, sha))
    return tuple(out)


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


_loads = cached_loads(object_pairs_hook=no_duplicate_keys, parse_constant=_no_constant)


def make_statement(
    *,
    subject: Artefact,
    materials: tuple[Artefact, ...] = (),
    builder_id: str = "https://turtles.dev/cli",
    build_type: str = "https://turtles.dev/release/v1",
    external_parameters: dict[str, Any] | None = None,
    predicate: dict[str, Any] | None = None,
) -> bytes:
    """A Statement v1 with a SLSA Provenance v1 predicate, as compact JSON bytes.

    When ``predicate`` is given it is used as is (its materials are what it says);
    otherwise a minimal SLSA v1 predicate is built from ``materials``.

    Raises:
        RecordError: the result would not parse (e.g. a digest is not 64 lowercase hex).
    """
    if predicate is None:
        predicate = {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": (
                    {"name": subject.name} if external_parameters is None else external_parameters
                ),
                "resolvedDependencies": [
                    {"name": m.name, "digest": {"sha256": m.sha256}} for m in materials
                ],
            },
            "runDetails": {"builder": {"id": builder_id}},
        }
    statement = {
        "_type": STATEMENT_V1,
        "subject": [{"name": subject.name, "digest": {"sha256": subject.sha256}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": predicate,
    }
    out = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
    Attestation.from_payload(out)  # refuse to produce what no node would accept
    return out


__all__ = [
    "PAYLOAD_TYPE",
    "SLSA_PROVENANCE_V1",
    "STATEMENT_V1",
    "Artefact",
    "Attestation",
    "artefacts",
    "lean_fields",
    "make_statement",
]
