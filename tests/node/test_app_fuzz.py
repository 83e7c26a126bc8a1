"""Hostile inputs never produce a 5xx (RELIABILITY P1, P2, P4): fuzzed bodies, msgpack
bombs, deep JSON, wrong content types, junk paths and parameters, against a live node."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.encoding import encode
from tests.node.conftest import LiveNode, root_envelope

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CTYPES = ["application/json", "application/msgpack", "application/x-msgpack", "text/plain", "", "application/json; charset=latin-1"]


def send(node: LiveNode, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, bytes]:
    url = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        headers = {"Content-Type": ctype} if ctype is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def assert_client_error(status: int, body: bytes) -> None:
    assert 400 <= status < 500, (status, body[:200])
    doc: Any = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc["error"], str) and isinstance(doc["message"], str)


def assert_refused(path: str, status: int, body: bytes) -> None:
    """A client error; for the batch endpoint, a body that is a list of junk envelopes may
    also be answered 200 with a client error in place of every one (its contract)."""
    if path.endswith(":batch") and status == 200:
        items = json.loads(body)["results"]
        assert items and all(400 <= item["status"] < 500 for item in items), body[:200]
        return
    assert_client_error(status, body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(body=st.binary(max_size=2048), ctype=st.sampled_from(CTYPES), path=st.sampled_from(["/v1/entries", "/v1/entries:batch"]))
@example(body=b"\x91\x00", ctype="application/msgpack", path="/v1/entries:batch")  # a list of one junk envelope
def test_junk_bodies(live_node: LiveNode, body: bytes, ctype: str, path: str) -> None:
    status, reply = send(live_node, "POST", path, body, ctype)
    assert_refused(path, status, reply)


@FUZZ
@given(doc=json_values, path=st.sampled_from(["/v1/entries", "/v1/entries:batch", "/v1/trust/explain"]))
def test_junk_json_documents(live_node: LiveNode, doc: Any, path: str) -> None:
    status, reply = send(live_node, "POST", path, json.dumps(doc).encode(), "application/json")
    assert_refused(path, status, reply)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "payloadType": st.one_of(st.text(max_size=300), st.integers(), st.none()),
            "payload": st.one_of(st.text(max_size=50), st.binary(max_size=50).map(lambda b: base64.b64encode(b).decode())),
            "signatures": st.lists(
                st.fixed_dictionaries({}, optional={"keyid": st.text(max_size=80) | st.integers(), "sig": st.text(max_size=100)}),
                max_size=20,
            ),
        },
    )
)
def test_malformed_envelopes(live_node: LiveNode, fields: dict[str, Any]) -> None:
    for path, doc in (("/v1/entries", fields), ("/v1/entries:batch", {"envelopes": [fields]})):
        status, reply = send(live_node, "POST", path, json.dumps(doc).encode(), "application/json")
        assert_refused(path, status, reply)


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=10) | st.binary(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=15,
))
def test_junk_canonical_msgpack(live_node: LiveNode, value: Any) -> None:
    for path in ("/v1/entries", "/v1/entries:batch"):
        status, reply = send(live_node, "POST", path, encode(value), "application/msgpack")
        if status == 200:
            assert all(400 <= i["status"] < 500 for i in json.loads(reply)["results"])
        else:
            assert_client_error(status, reply)


def test_msgpack_bombs(live_node: LiveNode) -> None:
    """Deep nesting, huge declared lengths, non-str keys, trailing bytes, ext types."""
    _, root = root_envelope()
    bombs = [
        b"\x91" * 100_000,                      # array of array of ... (deep)
        b"\xdd\xff\xff\xff\xff",                # array32 declaring 4G items
        b"\xdf\xff\xff\xff\xff",                # map32 declaring 4G pairs
        b"\xdb\xff\xff\xff\xff" + b"a" * 10,    # str32 declaring 4 GiB
        b"\xc6\xff\xff\xff\xff",                # bin32 declaring 4 GiB
        b"\x81\x01\x02",                        # {1: 2}: non-str key
        b"\x82\xa1a\x01\xa1a\x02",              # duplicate key
        b"\xd4\x01\x00",                        # fixext
        b"\xcb" + b"\x00" * 8,                  # float64
        root.to_msgpack() + b"\xc0",            # trailing byte
        b"\x81\xa1a" * 5000 + b"\xc0",          # deep maps
    ]
    for bomb in bombs:
        for path in ("/v1/entries", "/v1/entries:batch"):
            status, reply = send(live_node, "POST", path, bomb, "application/msgpack")
            assert_client_error(status, reply)


def test_deep_and_odd_json(live_node: LiveNode) -> None:
    for body in (b"[" * 200_000, b'{"a":' * 50_000, b"\xff\xfe", b"NaN", b"1e999999", b'"\\ud800"', b"\x00"):
        for path in ("/v1/entries", "/v1/entries:batch", "/v1/trust/explain"):
            status, reply = send(live_node, "POST", path, body, "application/json")
            assert_client_error(status, reply)


@FUZZ
@given(
    path=st.sampled_from([
        "/v1/entries/{}", "/v1/proofs/inclusion?index={}&size={}", "/v1/proofs/consistency?from={}&to={}",
        "/v1/entries?start={}&limit={}", "/tile/{}", "/tile/entries/{}", "/v1/artefacts/{}",
        "/v1/trust/impact?key={}&at={}", "/mirror/{}/tile/0/000", "/v1/log?origin={}",
    ]),
    args=st.lists(st.text(max_size=30) | st.integers().map(str), min_size=2, max_size=2),
)
def test_junk_read_parameters(live_node: LiveNode, path: str, args: list[str]) -> None:
    quoted = [urllib.parse.quote(a, safe="") for a in args]
    status, reply = send(live_node, "GET", path.format(*quoted))
    assert status < 500, (path, args, reply[:200])
    if status >= 400:
        assert_client_error(status, reply)
