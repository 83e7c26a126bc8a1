"""P2/P4: every decoder, fed hostile bytes, raises only input errors (see targets.py).

Four feeds per target, all bounded so that CI runs them in seconds:

* the committed corpus (``corpus/<target>/`` and the shared ``corpus/_hostile/``), every file;
* Hypothesis: random bytes, and corpus seeds mutated (bit flips, truncation, insertion,
  deletion, duplication, splicing);
* Hypothesis, structure-aware: msgpack and JSON built from arbitrary values (floats, ext
  types, huge integers, non-string keys, deep nesting) and from each format's own field names
  with values of the wrong types (type confusion);
* msgpack bombs: each must be refused in bounded time and memory.

``TURTLES_FUZZ_EXAMPLES`` sets the examples per Hypothesis test (default 120);
``TURTLES_FUZZ_RANDOM=1`` draws fresh examples instead of the fixed, derandomised ones CI runs.
For long runs use ``python -m tests.fuzz.atheris_fuzz TARGET``.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import CORPUS, TARGETS, Finding, corpus, run_target
from tests.reliability.scoreboard import Recorder

EXAMPLES = int(os.environ.get("TURTLES_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("TURTLES_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
STRUCTURED = settings(FUZZ, max_examples=max(EXAMPLES // 2, 10))
MSGPACK_TARGETS = ["msgpack", "entry", "envelope_msgpack", "record"]
JSON_TARGETS = ["envelope_json", "attestation", "evidence", "bundle_file"]
NAMES = sorted(TARGETS)
# Core bugs these targets found are fixed (UnsupportedAlgorithm from key parsing, RecursionError
# from evidence JSON, lone surrogates in vkeys); a target listed here would run as a strict xfail.
KNOWN: dict[str, str] = {}


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN[n])) if n in KNOWN else n
            for n in names]


@pytest.mark.scenario("P2", "P4", outcome="detected")
@pytest.mark.parametrize("name", _params(NAMES))
def test_corpus_is_refused_or_accepted_cleanly(name: str, score: Recorder) -> None:
    files = corpus(name)
    assert (CORPUS / name).is_dir(), f"no seeds for {name}: run python -m tests.fuzz.make_corpus"
    findings = []
    for path, data in files:
        try:
            run_target(name, data)
        except Finding as e:
            findings.append(f"{path}: {e}")
    for scenario in ("P2", "P4"):
        score.tried(scenario, "detected", evidence=f"{name}: {len(files)} corpus inputs")
    assert not findings, "\n".join(findings)


@pytest.mark.scenario("P4", outcome="detected")
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(name: str, data: bytes) -> None:
    run_target(name, data)


@st.composite
def _mutated(draw: st.DrawFn, name: str) -> bytes:
    # Known crashers (``crash-*``) stay out of the mutation pool: the corpus replay holds them.
    seeds = [d for path, d in corpus(name) if not path.rpartition("/")[2].startswith("crash-")]
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "truncate", "splice", "byte"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF, 0x22, 0x5B]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, max(len(other) - 1, 0))):]
    return bytes(data)


@pytest.mark.scenario("P4", outcome="detected")
@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    run_target(name, data.draw(_mutated(name)))


# --- structure-aware: arbitrary values in msgpack and JSON -------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=True)
    | st.text(max_size=20) | st.binary(max_size=40)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8) | st.integers(0, 9), inner, max_size=6),
    max_leaves=12,
)
_FIELDS = {
    "entry": ["v", "seq", "prev", "ts", "env"],
    "envelope_msgpack": ["payloadType", "payload", "signatures"],
    "envelope_json": ["payloadType", "payload", "signatures"],
    "record": ["org", "key", "hsm", "created", "issuer", "subject", "name", "artefacts", "purposes",
               "max_depth", "not_before", "not_after", "endorser", "root", "target", "since", "reason",
               "old", "new"],
    "attestation": ["_type", "subject", "predicateType", "predicate", "name", "digest", "sha256",
                    "buildDefinition", "resolvedDependencies", "runDetails", "builder", "id", "materials"],
    "evidence": ["type", "origin", "kind", "message", "older", "newer", "proof", "index", "split",
                 "size", "older_root", "older_proof", "newer_root", "newer_proof", "source", "detected_at"],
    "bundle_file": ["artefact", "format", "logs", "records", "witnesses", "origin", "vkey", "checkpoint",
                    "index", "entry", "proof"],
}


def _shaped(name: str) -> st.SearchStrategy[Any]:
    """Maps whose keys are the format's own field names and whose values have any type."""
    names = _FIELDS.get(name, _FIELDS["entry"])
    return st.recursive(
        st.dictionaries(st.sampled_from(names), _values, max_size=len(names)),
        lambda inner: st.dictionaries(st.sampled_from(names), inner | _values | st.lists(inner, max_size=3),
                                      max_size=len(names)),
        max_leaves=4,
    )


def _pack(value: Any, use_bin: bool) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=use_bin, strict_types=False)  # type: ignore[no-any-return]
    except (OverflowError, ValueError, TypeError):
        return msgpack.packb(repr(value))  # type: ignore[no-any-return]


@pytest.mark.scenario("P2", "P4", outcome="detected")
@pytest.mark.parametrize("name", MSGPACK_TARGETS)
@STRUCTURED
@given(value=_values | st.builds(dict), shaped=st.data(), use_bin=st.booleans(), prefix=st.integers(0, 4))
def test_msgpack_values_and_type_confusion(name: str, value: Any, shaped: st.DataObject, use_bin: bool, prefix: int) -> None:
    for v in (value, shaped.draw(_shaped(name))):
        body = _pack(v, use_bin)
        run_target(name, bytes([prefix]) + body if name == "record" else body)


def _json(value: Any) -> bytes:
    return json.dumps(value, default=repr, allow_nan=True).encode()


@pytest.mark.scenario("P4", outcome="detected")
@pytest.mark.parametrize("name", JSON_TARGETS)
@STRUCTURED
@given(value=_values, shaped=st.data())
def test_json_values_and_type_confusion(name: str, value: Any, shaped: st.DataObject) -> None:
    def plain(v: Any) -> Any:  # JSON has no bytes and only string keys
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    for v in (value, shaped.draw(_shaped(name))):
        run_target(name, _json(plain(v)))


# --- P2: bombs are refused cheaply ------------------------------------------------------------

BOMBS = {
    "array32": b"\xdd\xff\xff\xff\xff",
    "map32": b"\xdf\xff\xff\xff\xff",
    "str32": b"\xdb\xff\xff\xff\xff",
    "bin32": b"\xc6\xff\xff\xff\xff",
    "nested arrays": b"\x91" * 100_000 + b"\xc0",
    "nested maps": b"\x81\xa1a" * 50_000 + b"\xc0",
    "array of array32 headers": b"\xdc\xff\xff" + b"\xdd\xff\xff\xff\xff" * 50_000,
    "map of map32 headers": b"\xde\xff\xff" + (b"\xa1a\xdf\xff\xff\xff\xff") * 30_000,
}


@pytest.mark.scenario("P2", outcome="detected")
@pytest.mark.parametrize("name", MSGPACK_TARGETS)
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_msgpack_bombs_are_refused_in_bounded_time_and_memory(name: str, bomb: str, score: Recorder) -> None:
    data = BOMBS[bomb]
    data = bytes([0]) + data if name == "record" else data
    tracemalloc.start()
    started = time.monotonic()
    try:
        run_target(name, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    # A decoder may copy its input and build what it holds, never what a header promises.
    assert peak < 64 * len(data) + (8 << 20), f"{bomb}: {peak} bytes allocated for {len(data)} input bytes"
    assert elapsed < 10, f"{bomb}: {elapsed:.1f}s"
    score.tried("P2", "detected", evidence=f"{bomb} ({len(data)} B) -> {name}: peak {peak >> 10} KiB, {elapsed:.2f}s")
