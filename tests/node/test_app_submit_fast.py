"""The fast paths of POST /v1/entries give exactly what the general code gives.

* the envelope JSON fast path: the same envelope, or (for anything it does not take) the
  strict parser's own answer and error, over many mutations of valid bodies;
* batched inclusion proofs (:class:`node.proofs.Prover`) equal the log's own;
* the pre-built JSON answer equals ``json.dumps`` of the dict, with the same headers.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ledger.encoding import encode
from ledger.envelope import Envelope, Signature
from ledger.errors import SignatureError, TurtlesError
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.log import AppendResult
from ledger.trust import RootsPolicy
from node.proofs import Prover
from node.routes import submit as submit_routes
from node.routes.submit import parse_batch, parse_envelope
from node.submission import Accepted, BatchOutcome
from tests.node.conftest import Client, attestation, root_envelope

JSON = {"Content-Type": "application/json"}


def _outcome(fn: Any, body: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(body)
    except TurtlesError as e:
        return type(e).__name__, (e.message, e.to_dict())


def _same(body: bytes) -> None:
    assert _outcome(lambda b: parse_envelope("json", b), body) == _outcome(Envelope.from_json, body), body[:300]


def _bodies() -> list[bytes]:
    signer, root = root_envelope()
    other = SoftwareSigner.generate("ed25519")
    _, att = attestation(signer, "pkg", b"x")
    two = att.with_signature(other)
    return [
        root.to_json(),
        att.to_json(),
        json.dumps(att.to_dict()).encode(),
        json.dumps(two.to_dict(), indent=2).encode(),
        json.dumps(att.to_dict(), indent="\t").encode(),
    ]


def test_fast_path_takes_the_common_shape() -> None:
    for body in _bodies():
        _same(body)
        assert parse_envelope("json", body) == Envelope.from_json(body)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: {**d, "payload": d["payload"].rstrip("=")},  # unpadded: strict parser takes it
        lambda d: {**d, "payload": d["payload"][:-2] + "=="},
        lambda d: {**d, "payload": d["payload"].replace("+", "-").replace("/", "_")},
        lambda d: {**d, "payload": ""},
        lambda d: {**d, "payload": " " + d["payload"]},
        lambda d: {**d, "payloadType": ""},
        lambda d: {**d, "payloadType": "x" * 300},
        lambda d: {**d, "payloadType": "caf\u00e9/\u2603"},
        lambda d: {**d, "payloadType": "a\\u0062c"},
        lambda d: {**d, "extra": 1},
        lambda d: {**d, "signatures": []},
        lambda d: {**d, "signatures": d["signatures"] * 2},
        lambda d: {**d, "signatures": d["signatures"] * 17},
        lambda d: {**d, "signatures": [{"sig": d["signatures"][0]["sig"]}]},
        lambda d: {**d, "signatures": [{"sig": d["signatures"][0]["sig"], "keyid": "k"}]},
        lambda d: {**d, "signatures": [{"keyid": "", "sig": d["signatures"][0]["sig"]}]},
        lambda d: {**d, "signatures": [{"keyid": "a]b{c}", "sig": d["signatures"][0]["sig"]}]},
        lambda d: {**d, "signatures": [{"keyid": "k", "sig": ""}]},
        lambda d: {**d, "signatures": [{"keyid": "k", "sig": "A" * 1400}]},
        lambda d: {**d, "signatures": [{"keyid": 5, "sig": d["signatures"][0]["sig"]}]},
    ],
)
def test_fast_path_edge_cases_match_the_strict_parser(edit: Any) -> None:
    for body in _bodies()[:2]:
        doc = json.loads(body)
        _same(json.dumps(edit(doc)).encode())
        _same(json.dumps(edit(doc), separators=(",", ":")).encode())


def test_fast_path_random_mutations_match_the_strict_parser() -> None:
    rng = random.Random(7)
    alphabet = b' \t\n\r{}[]:,"\\=+/-_Aa0\x00\xc3\xa9\xff'
    bodies = _bodies()
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            op = rng.random()
            if op < 0.4:
                body[i] = rng.choice(alphabet)
            elif op < 0.7:
                del body[i]
            else:
                body.insert(i, rng.choice(alphabet))
        _same(bytes(body))
    raw = b'{"payloadType": "t", "payload": "YQ==", "payload": "YQ==", "signatures": [{"keyid": "k", "sig": "YQ=="}]}'
    _same(raw)
    _same(raw.replace(b'"YQ=="', b"1.5", 1))


def test_batched_proofs_equal_the_logs(tmp_path: Path) -> None:
    signer = SoftwareSigner.generate("ed25519")
    holdings = Holdings.open(tmp_path / "db", origin="t/log", signer=SoftwareSigner.generate("ed25519"),
                             roots=RootsPolicy.any_self_signed(), create=True)
    try:
        log = holdings.own
        assert log is not None
        _, root = root_envelope(signer=signer)
        log.append(root)
        results = log.append_many([attestation(signer, f"p{i}", b"%d" % i)[1] for i in range(70)])
        assert all(isinstance(r, AppendResult) for r in results)
        prover = Prover(log)
        rng = random.Random(1)
        for size in [1, 2, 3, 5, 8, 16, 17, 33, 64, 70, 71]:
            indexes = rng.sample(range(size), min(size, 9))
            assert prover.prove(indexes, size).proofs(indexes) == [log.inclusion_proof(i, size) for i in indexes]
            assert prover.prove(list(range(size)), size).proofs(list(range(size))) == [log.inclusion_proof(i, size) for i in range(size)]
        with pytest.raises(TurtlesError):
            prover.prove([3], 72)
        with pytest.raises(TurtlesError):
            prover.prove([5], 5)
    finally:
        holdings.close()


def test_prebuilt_json_equals_json_dumps() -> None:
    for proof in ([], [b"\x01" * 32], [bytes([i]) * 32 for i in range(20)]):
        for note in ("o/log\n3\nAAA=\n\n\u2014 o/log x\n", 'odd "note" \\ \u00e9\n'):
            acc = Accepted(AppendResult(7, b"\xab" * 32, note, 9, duplicate=False), proof)
            assert acc.to_json() == json.dumps(acc.to_dict()).encode()


def test_prebuilt_batch_json_equals_json_dumps() -> None:
    refused = SignatureError("envelope signature by k does not verify", key_id="k")
    for proofs in ([[], []], [[b"\x01" * 32], []], [[bytes([i]) * 32 for i in range(20)], [b"\x02" * 32]]):
        for note in ("o/log\n3\nAAA=\n\n\u2014 o/log x\n", 'odd "note" \\ \u00e9\n'):
            for dup in (False, True):
                results: list[AppendResult | TurtlesError] = [AppendResult(7, b"\xab" * 32, note, 9, duplicate=dup)]
                results.append(refused if not proofs[1] else AppendResult(8, b"\xcd" * 32, note, 9))
                out = BatchOutcome(note, 9, results, proofs)
                assert out.to_json() == json.dumps(out.to_dict()).encode()
                rendered = BatchOutcome(note, 9, results, proofs)
                rendered.render()  # built ahead (in a pool thread, by the node): the same bytes
                assert rendered.to_json() == out.to_json() and rendered == out


async def test_single_post_answer_headers_and_body(client: Client) -> None:
    signer, root = root_envelope()
    r = await client.post("/v1/entries", data=root.to_json(), headers=JSON)
    assert r.status == 201
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = await r.json()
    assert set(body) == {"index", "leaf_hash", "checkpoint", "size", "inclusion_proof"}
    _, att = attestation(signer, "pkg", b"y")
    again = att.to_json()
    first, second = await client.post("/v1/entries", data=again, headers=JSON), None
    second = await client.post("/v1/entries", data=again, headers=JSON)
    assert (first.status, second.status) == (201, 409)
    a, b = await first.json(), await second.json()
    assert a == b and a["index"] == 1


def test_signature_type_is_the_ledgers() -> None:
    env = parse_envelope("json", _bodies()[1])
    assert all(type(s) is Signature for s in env.signatures)


async def test_pipeline_errors_are_answered_and_the_node_goes_on(client: Client, monkeypatch: Any) -> None:
    from ledger.errors import OverloadedError
    from node.state import RUNTIME

    log = client.app[RUNTIME].own_log()
    signer, root = root_envelope()
    assert (await client.post("/v1/entries", data=root.to_json(), headers=JSON)).status == 201

    def broken(envelope: Envelope) -> None:
        raise RuntimeError("bug in verification")

    monkeypatch.setattr(log, "try_prepare", broken)
    r = await client.post("/v1/entries", data=attestation(signer, "a", b"1")[1].to_json(), headers=JSON)
    assert r.status == 500 and (await r.json())["error"] == "internal"
    monkeypatch.undo()

    def full(envelope: Envelope, prepared: object = None) -> None:
        raise OverloadedError("queue full", retry_after=1)

    monkeypatch.setattr(log, "submit", full)
    r = await client.post("/v1/entries", data=attestation(signer, "b", b"2")[1].to_json(), headers=JSON)
    assert r.status == 503 and r.headers["Retry-After"] == "1"
    monkeypatch.undo()

    envs = [attestation(signer, f"c{i}", b"%d" % i)[1] for i in range(20)]
    rs = await asyncio.gather(*(client.post("/v1/entries", data=e.to_json(), headers=JSON) for e in envs + envs))
    assert sorted(r.status for r in rs) == [201] * 20 + [409] * 20
    bodies = [await r.json() for r in rs]
    assert len({b["index"] for b in bodies}) == 20
    metrics = await (await client.get("/metrics")).text()
    assert 'turtles_appends_total{outcome="appended"}' in metrics
    assert 'turtles_appends_total{outcome="overloaded"} 1' in metrics



def _batch_outcome(body: bytes, kind: str = "json") -> Any:
    """What ``parse_batch`` makes of ``body``: envelopes and per-element errors, or the error."""
    try:
        got = parse_batch(kind, body, 1000)
    except TurtlesError as e:
        return type(e).__name__, e.message
    return [x if isinstance(x, Envelope) else (type(x).__name__, x.message) for x in got]


def test_batch_fast_path_matches_the_strict_parser(monkeypatch: Any) -> None:
    docs = [json.loads(b) for b in _bodies()]
    bodies = [json.dumps({"envelopes": docs}).encode(), json.dumps({"envelopes": docs}, indent=1).encode()]
    bodies.append(bodies[0].replace(b'{"payloadType"', b'{"payloadType": "x", "payloadType"', 1))  # a twin key
    rng = random.Random(11)
    for _ in range(1500):
        mutated = bytearray(rng.choice(bodies[:2]))
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(mutated))
            if rng.random() < 0.5:
                mutated[i] = rng.choice(b' \t{}[]:,"\\=+/Aa0')
            else:
                del mutated[i]
        bodies.append(bytes(mutated))
    assert submit_routes._common_batch(bodies[0], 1000) is not None  # the fast path takes the common shape
    assert submit_routes._common_batch(bodies[2], 1000) is None  # and never a body with a twin key
    fast = [_batch_outcome(b) for b in bodies]
    assert isinstance(fast[0], list) and all(isinstance(x, Envelope) for x in fast[0])
    monkeypatch.setattr(submit_routes, "_common_batch", lambda body, max_batch: None)
    strict = [_batch_outcome(b) for b in bodies]
    for body, f, s in zip(bodies, fast, strict, strict=True):
        assert f == s, body[:200]


def _msgpack_bodies() -> list[bytes]:
    """Canonical batch bodies, and near misses of them the strict decoder reads otherwise."""
    signer, root = root_envelope()
    _, att = attestation(signer, "pkg", b"x")
    two = att.with_signature(SoftwareSigner.generate("ed25519"))
    values = [root.to_value(), att.to_value(), two.to_value()]
    canonical = encode(values)
    sig = values[1]["signatures"][0]
    odd: list[Any] = [
        {**values[1], "payload": values[1]["payload"].decode("latin-1")},  # str, not bin
        {**values[1], "extra": 1},
        {**values[1], "payloadType": ""},
        {**values[1], "signatures": []},
        {**values[1], "signatures": [sig, sig]},  # a duplicate key id
        {**values[1], "signatures": [sig] * 17},
        {**values[1], "signatures": [{"sig": sig["sig"]}]},  # no keyid
        {**values[1], "signatures": [{"keyid": 5, "sig": sig["sig"]}]},
        {**values[1], "signatures": [{"keyid": sig["keyid"], "sig": b""}]},
        [values[1]],
        7,
    ]
    bodies = [canonical, encode([values[1]]), encode(values * 400)]  # the last: over the batch limit
    bodies += [encode([*values, v]) for v in odd]
    packed_att = encode(values[1])
    bodies += [
        msgpack.packb([values[1]], use_bin_type=True),  # keys out of canonical order
        b"\x91" + packed_att + b"\x00",  # a trailing byte
        b"\xdc\x00\x01" + packed_att,  # a wider array header than needed
        b"\x91" + packed_att.replace(b"\x82\xa5keyid", b"\x83\xa5keyid\xa0\xa5keyid", 1),  # a twin key
        b"\x90",
        b"\xc0",
        b"",
    ]
    return bodies


def test_msgpack_batch_fast_path_matches_the_strict_decoder(monkeypatch: Any) -> None:
    bodies = _msgpack_bodies()
    rng = random.Random(13)
    for _ in range(1500):
        mutated = bytearray(rng.choice(bodies[:2]))
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(mutated))
            op = rng.random()
            if op < 0.4:
                mutated[i] = rng.randrange(256)
            elif op < 0.7:
                del mutated[i]
            else:
                mutated.insert(i, rng.choice(b"\x00\x01\x7f\x80\x90\x91\xa0\xa5\xc0\xc4\xd9\xdc\xff"))
        bodies.append(bytes(mutated))
    assert submit_routes._common_msgpack_batch(bodies[0], 1000) is not None  # the fast path takes the common shape
    fast = [_batch_outcome(b, "msgpack") for b in bodies]
    assert isinstance(fast[0], list) and len(fast[0]) == 3 and all(isinstance(x, Envelope) for x in fast[0])
    common = submit_routes._common_msgpack_batch
    took = [b for b in bodies if common(b, 1000) is not None]
    monkeypatch.setattr(submit_routes, "_common_msgpack_batch", lambda body, max_batch: None)
    strict = [_batch_outcome(b, "msgpack") for b in bodies]
    for body, f, s in zip(bodies, fast, strict, strict=True):
        assert f == s, body[:200]
    assert all(isinstance(s, list) and all(isinstance(x, Envelope) for x in s)
               for s in (_batch_outcome(b, "msgpack") for b in took))  # it takes only bodies the strict path takes whole
    assert len(took) < len(bodies) // 2
    for body in took:  # each envelope keeps its element's bytes: its own canonical encoding
        envs = common(body, 1000)
        assert envs is not None
        for env in envs:
            assert isinstance(env, Envelope) and env.packed() is not None
            assert env.packed() == encode(env.to_value()) == Envelope.from_msgpack(env.packed()).to_msgpack()
