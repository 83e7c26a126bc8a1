"""The statement fast path (ledger.attestation._common): statements of make_statement's
shape are read by a regular expression instead of the strict JSON parser. It must give
exactly what the strict reader gives -- the same Attestation, the same statement -- and
leave everything else to the strict reader, so that every error is the strict one.

The reference below is ``Attestation.from_payload`` as it was before the fast path (the
strict parser with its Python hooks, a new decoder each call).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import attestation as att_mod
from ledger.attestation import (
    MAX_MATERIALS,
    MAX_STATEMENT_BYTES,
    MAX_SUBJECTS,
    SLSA_PROVENANCE_V1,
    STATEMENT_V01,
    STATEMENT_V1,
    Artefact,
    Attestation,
    lean_fields,
    make_statement,
)
from ledger.errors import RecordError, TooLargeError, TurtlesError
from ledger.strictjson import cached_loads, no_duplicate_keys, refuse_float


def _reference(payload: bytes) -> Attestation:
    """``Attestation.from_payload`` before the fast path, verbatim."""
    if len(payload) > MAX_STATEMENT_BYTES:
        raise TooLargeError(f"statement has {len(payload)} bytes, limit {MAX_STATEMENT_BYTES}")
    try:
        obj = json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicate_keys,
                         parse_constant=att_mod._no_constant)
    except (ValueError, RecursionError) as e:
        raise RecordError("statement", f"not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise RecordError("statement", "want a JSON object")
    if obj.get("_type") not in (STATEMENT_V1, STATEMENT_V01):
        raise RecordError("_type", f"want {STATEMENT_V1} (or {STATEMENT_V01})")
    ptype = obj.get("predicateType")
    if not isinstance(ptype, str) or not ptype:
        raise RecordError("predicateType", "want a non-empty string")
    subjects = att_mod._artefacts(obj.get("subject"), "subject", MAX_SUBJECTS, need_sha256=True)
    if not subjects:
        raise RecordError("subject", "want at least one subject")
    predicate = obj.get("predicate", {})
    if not isinstance(predicate, dict):
        raise RecordError("predicate", "want a JSON object")
    materials, builder = att_mod._slsa(ptype, predicate)
    return Attestation(subjects, ptype, materials, builder, obj)


def _outcome(fn: Any, payload: bytes) -> tuple[Any, ...]:
    try:
        a = fn(payload)
    except TurtlesError as e:
        return ("error", type(e).__name__, str(e), getattr(e, "field", None))
    return ("ok", a.subjects, a.predicate_type, a.materials, a.builder, json.dumps(a.statement))


def _check(payload: bytes) -> tuple[Any, ...]:
    """from_payload and lean_fields agree with the reference on ``payload``; its outcome."""
    want = _outcome(_reference, payload)
    assert _outcome(Attestation.from_payload, payload) == want
    try:
        fields = lean_fields(payload)
    except TurtlesError as e:
        assert want[:4] == ("error", type(e).__name__, str(e), getattr(e, "field", None))
    else:
        assert want[0] == "ok"
        subjects, ptype, materials, builder = fields
        assert (tuple(Artefact(n, d) for n, d in subjects), ptype, tuple(Artefact(n, d) for n, d in materials),
                builder) == want[1:5]
    return want


def _fast(payload: bytes) -> bool:
    """True if the fast path reads ``payload`` (it decodes and matches the common shape)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return att_mod._common_pairs(text) is not None


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


names = st.text(max_size=12)
plain_names = st.text(st.characters(blacklist_characters='"\\', blacklist_categories=("Cs", "Cc")), max_size=12)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
odd_digests = digests | st.sampled_from(["A" * 64, "a" * 63, "g" * 64, "", "a" * 65])


def _statement(subjects: list[tuple[str, str]], mats: list[tuple[str, str]], builder: str, build_type: str,
               params: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in subjects],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": {"name": subjects[0][0]} if params is None else params,
                "resolvedDependencies": [{"name": n, "digest": {"sha256": d}} for n, d in mats],
            },
            "runDetails": {"builder": {"id": builder}},
        },
    }


statements = st.builds(
    _statement,
    st.lists(st.tuples(names, odd_digests), min_size=1, max_size=3),
    st.lists(st.tuples(names, odd_digests), max_size=3),
    names, names,
    st.none() | st.just({}) | st.dictionaries(st.sampled_from(["name", "x", "ref"]), names | st.integers(), max_size=2),
)


def _dump(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=ascii_only).encode()


# --- the fast path gives the strict answer ---------------------------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(statements, st.booleans())
def test_canonical_statements_read_as_the_strict_reader_reads_them(obj: dict[str, Any], ascii_only: bool) -> None:
    _check(_dump(obj, ascii_only))


@settings(max_examples=300)
@given(st.lists(st.tuples(plain_names, digests), min_size=1, max_size=3),
       st.lists(st.tuples(plain_names, digests), max_size=3), plain_names, plain_names, st.booleans())
def test_the_common_shape_takes_the_fast_path(subjects: list[tuple[str, str]], mats: list[tuple[str, str]],
                                              builder: str, build_type: str, empty_params: bool) -> None:
    payload = _dump(_statement(subjects, mats, builder, build_type, {} if empty_params else None), False)
    assert _fast(payload)  # so that the tests above compare the fast path, not the strict one twice
    assert _check(payload)[0] == "ok"


def test_make_statement_takes_the_fast_path() -> None:
    payload = make_statement(subject=Artefact("pkg-1", sha("1")), materials=(Artefact("dep", sha("d")),))
    assert _fast(payload)
    a = Attestation.from_payload(payload)
    assert a == _reference(payload) and a.materials == (Artefact("dep", sha("d")),)
    assert a.builder == "https://turtles.dev/cli"


# Characters that matter to JSON, and a few that matter to UTF-8 and to the expression.
_NOISE = st.text(st.sampled_from([*'{}[]",:\\ \t\n0123456789abcdefEe.+-ntrufalsNI/u', "\x00", "\x1f", "\x7f", "\u00e9",
                                  "\u2028", "\U0001f600"]),
                 min_size=1, max_size=6)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(statements, st.booleans(), st.data())
def test_any_edit_of_a_canonical_statement_gets_the_strict_answer(obj: dict[str, Any], ascii_only: bool,
                                                                  data: st.DataObject) -> None:
    text = _dump(obj, ascii_only).decode()
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 8)))
        text = text[:start] + data.draw(_NOISE | st.just("")) + text[end:]
    _check(text.encode("utf-8", "surrogatepass"))


no_brace = st.text(st.characters(blacklist_characters='{"\\', blacklist_categories=("Cs", "Cc")), max_size=8)
statements_without_braces = st.builds(  # so that every '{"' in the text opens an object
    _statement, st.lists(st.tuples(no_brace, digests), min_size=1, max_size=3),
    st.lists(st.tuples(no_brace, digests), max_size=3), no_brace, no_brace, st.none() | st.just({"x": "y"}))


@settings(max_examples=300)
@given(statements_without_braces, st.data())
def test_a_repeated_key_anywhere_is_refused_as_the_strict_reader_refuses_it(obj: dict[str, Any],
                                                                            data: st.DataObject) -> None:
    text = _dump(obj, False).decode()
    # Repeat one of the keys of one of the objects: insert `"key":value,` after its `{`.
    opens = [i for i, c in enumerate(text) if c == "{" and text[i + 1 : i + 2] == '"']
    assume(opens)
    at = data.draw(st.sampled_from(opens))
    key = text[at + 1 : text.index(":", at)]
    value = data.draw(st.sampled_from(['"x"', "1", "{}", "[]", "null", '"' + "a" * 64 + '"']))
    payload = (text[: at + 1] + f"{key}:{value}," + text[at + 1 :]).encode()
    outcome = _check(payload)
    assert outcome[0] == "error" and "duplicate key" in outcome[2]
    assert not _fast(payload)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace('"name":"pkg-1"}]}', '"name":"pkg-1","name":"pkg-2"}]}'),  # twice in a subject
    lambda t: t.replace('{"sha256":"', '{"sha256":"' + sha("evil") + '","sha256":"', 1),  # two digests
    lambda t: t.replace('"externalParameters":{"name":"pkg-1"}', '"externalParameters":{"name":"pkg-1","name":"x"}'),
    lambda t: t.replace('"id":"https://turtles.dev/cli"', '"id":"https://turtles.dev/cli","id":"evil"'),
    lambda t: t.replace("pkg-1", "pkg-\\u0031"),  # escapes: the strict path (same text)
    lambda t: t.replace("pkg-1", 'pkg-\\"1'),
    lambda t: t.replace("pkg-1", "pkg-\\\\1"),
    lambda t: t.replace("pkg-1", "pkg-\\ud800"),  # a lone surrogate, escaped
    lambda t: t.replace("pkg-1", "pkg-\x01"),  # a control character, raw
    lambda t: t.replace("pkg-1", "pkg-\u00e9\U0001f600"),  # non-ASCII, raw: still the fast path
    lambda t: t.replace('{"name":"pkg-1"}', '{"name":"pkg-1","n":1.50}'),  # numbers
    lambda t: t.replace('{"name":"pkg-1"}', '{"n":NaN}'),
    lambda t: t.replace('{"name":"pkg-1"}', '{"n":-Infinity}'),
    lambda t: t.replace('{"name":"pkg-1"}', '{"n":' + "[" * 5000 + "]" * 5000 + "}"),  # deep nesting
    lambda t: t.replace('"subject":[', '"subject": ['),  # whitespace
    lambda t: "\ufeff" + t,  # a byte order mark
    lambda t: t + " ",
    lambda t: t[:-1],
    lambda t: t.replace(STATEMENT_V1, STATEMENT_V01),
    lambda t: t.replace(sha("1"), sha("1").upper()),
    lambda t: t.replace('"subject":[{', '"subject":[],"x":[{'),
])
def test_edge_cases_get_the_strict_answer(edit: Any) -> None:
    base = make_statement(subject=Artefact("pkg-1", sha("1")), materials=(Artefact("dep", sha("d")),)).decode()
    payload = edit(base).encode("utf-8", "surrogatepass")
    assert payload != base.encode()
    _check(payload)


def test_non_utf8_and_oversize_get_the_strict_answer() -> None:
    base = make_statement(subject=Artefact("pkg-1", sha("1")))
    _check(base.replace(b"pkg-1", b"pkg-\xff"))
    _check(base.replace(b"pkg-1", b"pkg-\xed\xa0\x80"))  # a surrogate encoded in UTF-8
    _check(base.replace(b"pkg-1", b"p" * MAX_STATEMENT_BYTES))


def test_limits_are_the_strict_limits() -> None:
    subject = Artefact("s", sha("s"))
    many = [(f"s{i}", sha(str(i))) for i in range(MAX_SUBJECTS + 1)]
    payload = _dump(_statement(many, [], "b", "t", None), True)
    assert _check(payload)[1] == "TooLargeError"
    payload = _dump(_statement(many[:MAX_SUBJECTS], [], "b", "t", None), True)
    assert _fast(payload) and _check(payload)[0] == "ok"
    mats = tuple(Artefact(f"m{i}", sha(str(i))) for i in range(MAX_MATERIALS + 1))
    with pytest.raises(TooLargeError):
        make_statement(subject=subject, materials=mats)
    payload = make_statement(subject=subject, materials=mats[:MAX_MATERIALS])
    assert _fast(payload) and len(Attestation.from_payload(payload).materials) == MAX_MATERIALS


def test_the_expression_takes_linear_time_on_hostile_input() -> None:
    base = make_statement(subject=Artefact("pkg-1", sha("1"))).decode()
    for filler in ("a" * 500_000, '{"digest":{"sha256":"' * 20_000, "," * 500_000):
        payload = base.replace("pkg-1", filler, 1).encode()[:MAX_STATEMENT_BYTES]
        t0 = time.process_time()
        _check(payload)
        assert time.process_time() - t0 < 5.0


# --- the pieces ---------------------------------------------------------------------------------------


def test_lean_is_the_attestation_without_its_statement() -> None:
    subjects, materials = (Artefact("a", sha("a")),), (Artefact("m", sha("m")),)
    lean = Attestation.lean(subjects, SLSA_PROVENANCE_V1, materials, "b")
    full = Attestation(subjects, SLSA_PROVENANCE_V1, materials, "b", {})
    assert lean == full and hash(lean) == hash(full) and repr(lean) == repr(full)
    assert vars(lean) == vars(full)
    with pytest.raises(AttributeError):
        lean.builder = "x"  # type: ignore[misc]


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "é"]), c, max_size=3),
    max_leaves=8,
).map(json.dumps)


@settings(max_examples=400)
@given(json_texts | st.text(max_size=30), st.data())
def test_cached_loads_is_json_loads_with_the_same_hooks(text: str, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        text = text.replace("{", '{"a":0,', 1).replace("}", ',"a":1}', 1)  # some duplicates
    if data.draw(st.booleans()):
        text = "\ufeff" + text
    hookss: list[dict[str, Any]] = [
        {"object_pairs_hook": no_duplicate_keys, "parse_constant": att_mod._no_constant},
        {"object_pairs_hook": no_duplicate_keys, "parse_float": refuse_float, "parse_constant": refuse_float}]
    for hooks in hookss:
        try:
            want: Any = ("ok", repr(json.loads(text, **hooks)))
        except (ValueError, RecursionError) as e:
            want = ("error", type(e).__name__, str(e))
        try:
            got: Any = ("ok", repr(cached_loads(**hooks)(text)))
        except (ValueError, RecursionError) as e:
            got = ("error", type(e).__name__, str(e))
        assert got == want
