"""Release attestations (ledger.attestation): in-toto Statement v1 with SLSA Provenance
predicates, read verbatim and strictly (RELIABILITY P1, P4)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.attestation import (
    MAX_MATERIALS,
    MAX_STATEMENT_BYTES,
    MAX_SUBJECTS,
    PAYLOAD_TYPE,
    SLSA_PROVENANCE_V1,
    STATEMENT_V1,
    Artefact,
    Attestation,
    make_statement,
)
from ledger.errors import RecordError, TooLargeError


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# A statement shaped like the ones GitHub's SLSA generator and actions/attest-build-provenance
# write: two subjects (one with several digest algorithms), a git source with only a gitCommit
# digest (cannot be followed by sha256), a dependency with a sha256, run details with a builder.
SLSA_V1: dict[str, Any] = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [
        {"name": "turtles-1.2.0.tar.gz", "digest": {"sha256": sha("tarball"), "sha512": "ab" * 64}},
        {"name": "turtles-1.2.0-py3-none-any.whl", "digest": {"sha256": sha("wheel")}},
    ],
    "predicateType": "https://slsa.dev/provenance/v1",
    "predicate": {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {
                "workflow": {"ref": "refs/tags/v1.2.0", "repository": "https://github.com/acme/turtles",
                             "path": ".github/workflows/release.yml"},
            },
            "internalParameters": {"github": {"event_name": "push", "runner_environment": "github-hosted"}},
            "resolvedDependencies": [
                {"uri": "git+https://github.com/acme/turtles@refs/tags/v1.2.0",
                 "digest": {"gitCommit": "a" * 40}},
                {"name": "libshell", "uri": "pkg:pypi/libshell@3.1", "digest": {"sha256": sha("libshell")}},
                {"uri": "pkg:pypi/msgpack@1.2.4", "digest": {"sha256": sha("msgpack")}},
            ],
        },
        "runDetails": {
            "builder": {"id": "https://github.com/actions/runner/github-hosted"},
            "metadata": {"invocationId": "https://github.com/acme/turtles/actions/runs/1/attempts/1"},
        },
    },
}


def _bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> bytes:
    """SLSA_V1 with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    obj = json.loads(json.dumps(base or SLSA_V1))
    *parents, last = path.split(".")
    node = obj
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is ...:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return _bytes(obj)


def _field_of(payload: bytes) -> str:
    with pytest.raises(RecordError) as info:
        Attestation.from_payload(payload)
    field: str = info.value.field  # type: ignore[attr-defined]
    return field


# --- the real shape --------------------------------------------------------------------------


def test_slsa_v1_statement() -> None:
    payload = _bytes(SLSA_V1)
    att = Attestation.from_payload(payload)
    assert att.predicate_type == SLSA_PROVENANCE_V1
    assert att.subjects == (
        Artefact("turtles-1.2.0.tar.gz", sha("tarball")),
        Artefact("turtles-1.2.0-py3-none-any.whl", sha("wheel")),
    )
    assert att.digests == (sha("tarball"), sha("wheel"))
    # resolvedDependencies with a sha256 are the materials; name wins over uri; the git
    # source (gitCommit only) is skipped.
    assert att.materials == (
        Artefact("libshell", sha("libshell")),
        Artefact("pkg:pypi/msgpack@1.2.4", sha("msgpack")),
    )
    assert att.builder == "https://github.com/actions/runner/github-hosted"
    assert att.statement == SLSA_V1  # kept whole, for display


def test_payload_type_constant() -> None:
    assert PAYLOAD_TYPE == "application/vnd.in-toto+json"


def test_slsa_v02_materials_and_builder() -> None:
    obj = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"name": "app", "digest": {"sha256": sha("app")}}],
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "predicate": {
            "builder": {"id": "https://cloudbuild.googleapis.com/GoogleHostedWorker"},
            "buildType": "https://cloudbuild.googleapis.com/CloudBuildYaml@v0.1",
            "materials": [
                {"uri": "git+https://github.com/acme/app", "digest": {"sha1": "b" * 40}},
                {"uri": "pkg:docker/base@sha256", "digest": {"sha256": sha("base")}},
            ],
        },
    }
    att = Attestation.from_payload(_bytes(obj))
    assert att.materials == (Artefact("pkg:docker/base@sha256", sha("base")),)
    assert att.builder == "https://cloudbuild.googleapis.com/GoogleHostedWorker"


def test_other_predicate_types_have_no_materials() -> None:
    obj = {
        "_type": STATEMENT_V1,
        "subject": [{"name": "app", "digest": {"sha256": sha("app")}}],
        "predicateType": "https://spdx.dev/Document/v2.3",
        # Looks like provenance but is not: never read as materials.
        "predicate": {"materials": [{"uri": "x", "digest": {"sha256": sha("x")}}],
                      "builder": {"id": "nope"}, "spdxVersion": "SPDX-2.3"},
    }
    att = Attestation.from_payload(_bytes(obj))
    assert att.materials == ()
    assert att.builder is None
    # A predicate is optional.
    del obj["predicate"]
    assert Attestation.from_payload(_bytes(obj)).materials == ()


def test_minimal_slsa_v1_without_dependencies_or_builder() -> None:
    payload = _with("predicate", {"buildDefinition": {"buildType": "x", "externalParameters": {}}})
    att = Attestation.from_payload(payload)
    assert att.materials == () and att.builder is None
    assert Attestation.from_payload(_with("predicate.buildDefinition.resolvedDependencies", None)).materials == ()


@pytest.mark.parametrize(
    "run_details",
    [{"builder": "https://builder"}, {"builder": ["x"]}, {"builder": None}, {"builder": {"id": 7}},
     {"builder": {}}, "text", [], None, {}],
    ids=repr,
)
def test_odd_run_details_give_no_builder(run_details: Any) -> None:
    # runDetails is informational: odd shapes give "no builder", never a crash.
    att = Attestation.from_payload(_with("predicate.runDetails", run_details))
    assert att.builder is None
    assert len(att.materials) == 2


def test_v02_odd_builder_gives_no_builder() -> None:
    obj = {"_type": STATEMENT_V1, "subject": [{"digest": {"sha256": sha("a")}}],
           "predicateType": "https://slsa.dev/provenance/v0.2", "predicate": {"builder": "x"}}
    assert Attestation.from_payload(_bytes(obj)).builder is None


def test_subject_without_name_is_allowed() -> None:
    att = Attestation.from_payload(_with("subject", [{"digest": {"sha256": sha("x")}}]))
    assert att.subjects == (Artefact("", sha("x")),)


def test_attestations_are_hashable_and_compare_by_content() -> None:
    a = Attestation.from_payload(_bytes(SLSA_V1))
    b = Attestation.from_payload(json.dumps(SLSA_V1, separators=(",", ":")).encode())
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1


# --- strictness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("subject.0.digest.sha256", ..., "subject[0].digest.sha256"),
        ("subject.1.digest", {"sha512": "ab" * 64}, "subject[1].digest.sha256"),
        ("subject.0.digest.sha256", sha("x").upper(), "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", sha("x")[:-1], "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", sha("x") + "0", "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", "g" * 64, "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", " " + sha("x")[1:], "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", int("1" * 20), "subject[0].digest.sha256"),
        ("subject.0.digest.sha256", None, "subject[0].digest.sha256"),
        ("subject.0.digest", "sha256:abc", "subject[0].digest"),
        ("subject.0.digest", ..., "subject[0].digest.sha256"),
        ("subject.0.name", 5, "subject[0].name"),
        ("subject.0", "turtles.tar.gz", "subject[0]"),
        ("subject", [], "subject"),
        ("subject", {"name": "x"}, "subject"),
        ("subject", None, "subject"),
        ("subject", ..., "subject"),
        ("_type", "https://in-toto.io/Statement/v2", "_type"),
        ("_type", ..., "_type"),
        ("predicateType", ..., "predicateType"),
        ("predicateType", "", "predicateType"),
        ("predicateType", ["x"], "predicateType"),
        ("predicate", [], "predicate"),
        ("predicate", None, "predicate"),
        ("predicate.buildDefinition", [], "predicate.buildDefinition"),
        ("predicate.buildDefinition.resolvedDependencies", {}, "predicate.buildDefinition.resolvedDependencies"),
        ("predicate.buildDefinition.resolvedDependencies.1.digest.sha256", "XYZ",
         "predicate.buildDefinition.resolvedDependencies[1].digest.sha256"),
        ("predicate.buildDefinition.resolvedDependencies.2", "pkg:x",
         "predicate.buildDefinition.resolvedDependencies[2]"),
        ("predicate.buildDefinition.resolvedDependencies.2.digest", [],
         "predicate.buildDefinition.resolvedDependencies[2].digest"),
    ],
)
def test_bad_fields_are_named(path: str, value: Any, field: str) -> None:
    assert _field_of(_with(path, value)) == field


def test_v02_bad_materials_are_named() -> None:
    obj = {"_type": STATEMENT_V1, "subject": [{"digest": {"sha256": sha("a")}}],
           "predicateType": "https://slsa.dev/provenance/v0.2",
           "predicate": {"materials": [{"uri": "x", "digest": {"sha256": "nothex"}}]}}
    assert _field_of(_bytes(obj)) == "predicate.materials[0].digest.sha256"
    obj["predicate"] = {"materials": "x"}
    assert _field_of(_bytes(obj)) == "predicate.materials"


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"not json",
        b"[]",
        b'"statement"',
        b"null",
        b"{" * 100_000,
        b'{"_type": "https://in-toto.io/Statement/v1",}',
        b'{"a": 1} {"b": 2}',
    ],
    ids=["empty", "not-json", "array", "string", "null", "deep", "trailing-comma", "two-values"],
)
def test_not_a_statement(text: bytes) -> None:
    assert _field_of(text) == "statement"


def test_duplicate_json_keys_are_refused() -> None:
    good = json.dumps(SLSA_V1)
    dup_top = good.replace('"predicateType"', '"_type": "https://in-toto.io/Statement/v1", "predicateType"', 1)
    assert _field_of(dup_top.encode()) == "statement"
    # A second sha256 in one digest set: two readers could follow different artefacts.
    dup_digest = good.replace('"sha256": "', f'"sha256": "{sha("evil")}", "sha256": "', 1)
    with pytest.raises(RecordError, match="duplicate"):
        Attestation.from_payload(dup_digest.encode())
    dup_deep = good.replace('"event_name"', '"x": 1, "x"', 1)
    with pytest.raises(RecordError, match="duplicate"):
        Attestation.from_payload(dup_deep.encode())


def test_non_json_constants_are_refused_but_floats_are_kept() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(RecordError):
            Attestation.from_payload(_with("predicate.runDetails.metadata.x", "@").replace(b'"@"', constant.encode()))
    # Floats are ordinary JSON that foreign predicates may hold; the statement is never re-serialised.
    att = Attestation.from_payload(_with("predicate.runDetails.metadata.x", 1.5))
    assert att.statement["predicate"]["runDetails"]["metadata"]["x"] == 1.5


def test_encoding_must_be_utf8() -> None:
    good = _bytes(SLSA_V1)
    assert _field_of(good.decode().encode("utf-16")) == "statement"
    assert _field_of(b"\xef\xbb\xbf" + good) == "statement"  # no BOM
    assert _field_of(good.replace(b"turtles-1.2.0.tar.gz", b"turtles-\xff.tar.gz")) == "statement"
    # Non-ASCII UTF-8 is fine.
    att = Attestation.from_payload(good.replace(b"turtles-1.2.0.tar.gz", "tört\u00fcl.tar.gz".encode()))
    assert att.subjects[0].name == "tört\u00fcl.tar.gz"


def test_oversize_and_too_many_items() -> None:
    padded = _with("predicate.runDetails.metadata.pad", "x" * MAX_STATEMENT_BYTES)
    with pytest.raises(TooLargeError):
        Attestation.from_payload(padded)
    subject = {"digest": {"sha256": sha("x")}}
    assert len(Attestation.from_payload(_with("subject", [subject] * MAX_SUBJECTS)).subjects) == MAX_SUBJECTS
    with pytest.raises(TooLargeError):
        Attestation.from_payload(_with("subject", [subject] * (MAX_SUBJECTS + 1)))
    dep = {"uri": "x", "digest": {"sha256": sha("x")}}
    with pytest.raises(TooLargeError):
        Attestation.from_payload(
            _with("predicate.buildDefinition.resolvedDependencies", [dep] * (MAX_MATERIALS + 1))
        )


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_input_errors(data: bytes) -> None:
    with contextlib.suppress(RecordError, TooLargeError):
        Attestation.from_payload(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["_type", "subject", "predicateType", "predicate", "name", "uri", "digest",
                         "sha256", "buildDefinition", "resolvedDependencies", "runDetails",
                         "builder", "id", "materials"]), c, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300)
@given(json_values, st.sampled_from([STATEMENT_V1, "https://in-toto.io/Statement/v0.1"]),
       st.sampled_from([SLSA_PROVENANCE_V1, "https://slsa.dev/provenance/v0.2", "other"]))
def test_random_shapes_raise_only_input_errors(predicate: Any, stype: str, ptype: str) -> None:
    obj = {"_type": stype, "subject": [{"digest": {"sha256": sha("x")}}], "predicateType": ptype,
           "predicate": predicate}
    with contextlib.suppress(RecordError, TooLargeError):
        Attestation.from_payload(json.dumps(obj).encode())


# --- make_statement ----------------------------------------------------------------------------


def test_make_statement_round_trip() -> None:
    subject = Artefact("turtles@1.2.0", sha("release"))
    materials = (Artefact("libshell@3.1", sha("libshell")), Artefact("msgpack@1.2.4", sha("msgpack")))
    payload = make_statement(subject=subject, materials=materials, builder_id="https://ci.acme")
    att = Attestation.from_payload(payload)
    assert att.subjects == (subject,)
    assert att.materials == materials
    assert att.builder == "https://ci.acme"
    assert att.predicate_type == SLSA_PROVENANCE_V1
    assert att.statement["_type"] == STATEMENT_V1
    definition = att.statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"] == {"name": "turtles@1.2.0"}
    assert definition["buildType"] == "https://turtles.dev/release/v1"
    # Deterministic compact bytes (sorted keys), so equal inputs give one record id.
    assert payload == make_statement(subject=subject, materials=materials, builder_id="https://ci.acme")
    assert payload == json.dumps(json.loads(payload), separators=(",", ":"), sort_keys=True).encode()


def test_make_statement_keeps_explicit_empty_parameters() -> None:
    subject = Artefact("a", sha("a"))
    att = Attestation.from_payload(make_statement(subject=subject, external_parameters={}))
    assert att.statement["predicate"]["buildDefinition"]["externalParameters"] == {}
    att = Attestation.from_payload(make_statement(subject=subject, external_parameters={"ref": "v1"}))
    assert att.statement["predicate"]["buildDefinition"]["externalParameters"] == {"ref": "v1"}


def test_make_statement_with_given_predicate() -> None:
    predicate = SLSA_V1["predicate"]
    att = Attestation.from_payload(make_statement(subject=Artefact("a", sha("a")), predicate=predicate,
                                                  materials=(Artefact("ignored", sha("ignored")),)))
    assert att.statement["predicate"] == predicate
    assert [m.name for m in att.materials] == ["libshell", "pkg:pypi/msgpack@1.2.4"]


@pytest.mark.parametrize("digest", ["ABC", sha("x").upper(), "", sha("x")[:-1]])
def test_make_statement_refuses_what_would_not_parse(digest: str) -> None:
    with pytest.raises(RecordError):
        make_statement(subject=Artefact("a", digest))
    with pytest.raises(RecordError):
        make_statement(subject=Artefact("a", sha("a")), materials=(Artefact("m", digest),))


@settings(max_examples=100)
@given(st.text(max_size=40), st.binary(min_size=32, max_size=32),
       st.lists(st.tuples(st.text(max_size=20), st.binary(min_size=32, max_size=32)), max_size=5))
def test_make_statement_round_trips_any_names(name: str, digest: bytes, mats: list[tuple[str, bytes]]) -> None:
    subject = Artefact(name, digest.hex())
    materials = tuple(Artefact(n, d.hex()) for n, d in mats)
    att = Attestation.from_payload(make_statement(subject=subject, materials=materials))
    assert att.subjects == (subject,)
    assert att.materials == materials
