"""Batched inclusion proofs (:mod:`node.proofs`) equal the strict per-leaf ones.

Against a real on-disk store (LevelDB, written as :class:`ledger.log.Log` writes it, read
through :class:`ledger.reader.LogReader` and its cache) of 5000 leaves, over random tree
sizes and index sets (runs at the right edge or not, interleaved runs, scattered leaves,
repeats, old leaves far from a batch): every proof and its JSON text equal
:meth:`LogReader.inclusion_proof`'s and verify against the stored root, and the fast path
is taken (no fallback). Leaf hashes that disagree with the store, sizes and indexes out of
range, and failed reads all end in the strict path's own answer or error.
"""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.checkpoint import Checkpoint, open_note
from ledger.errors import CorruptionError, ProofError, SignatureError, TurtlesError
from ledger.log import AppendResult
from ledger.reader import LogReader
from ledger.store import Batch, Database, Head
from node.proofs import Prover, proof_text
from node.state import RUNTIME
from node.submission import Accepted, BatchOutcome, Submitter
from tests.node.conftest import Client, attestation, root_envelope

JSON = {"Content-Type": "application/json"}
LEAVES = 5000
NOTE = "t/log\n9\nAAA=\n\n\u2014 t/log x\n"


def _leaf(i: int) -> bytes:
    return merkle.leaf_hash(b"entry %d" % i)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogReader]:
    """A store of LEAVES leaves, committed in uneven batches as the sequencer commits them."""
    db = Database(tmp_path_factory.mktemp("proofs") / "db")
    store = db.log("t/log")
    size = 0
    for k in [1, 2, 5, 37, 500, 955, 1500, 2000]:
        leaves = [_leaf(i) for i in range(size, size + k)]
        hashes = merkle.stored_hashes_for_leaves(size, leaves, store.hashes)
        size += k
        store.commit(Batch([], hashes, [], Head(size, bytes(32), leaves[-1])))
    assert size == LEAVES
    yield LogReader(db.log("t/log"))
    db.close()


def _check(log: LogReader, indexes: list[int], size: int, *, fallbacks: int = 0) -> None:
    prover = Prover(log)
    proofs = prover.prove(indexes, size, [_leaf(i) for i in indexes])
    root = log.root_at(size)
    for i in indexes:
        want = log.inclusion_proof(i, size)
        assert proofs.proof(i) == want, (i, size)
        assert proofs.text(i) == proof_text(want) == ", ".join(json.dumps(h.hex()) for h in want)
        merkle.verify_inclusion(_leaf(i), i, size, proofs.proof(i), root)
    assert prover.fallbacks == fallbacks
    assert prover.prove(indexes, size).proofs(indexes) == [log.inclusion_proof(i, size) for i in indexes]


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[int], int]:
    """A tree size and the indexes of a batch proved in it (any order, maybe repeated)."""
    size = draw(st.integers(1, LEAVES))
    shape = draw(st.sampled_from(["edge", "run", "interleaved", "scattered", "mixed"]))
    n = draw(st.integers(1, min(size, 600)))
    if shape == "edge":
        indexes = list(range(size - n, size))
    elif shape == "run":
        lo = draw(st.integers(0, size - n))
        indexes = list(range(lo, lo + n))
    elif shape == "interleaved":  # every other run of `width` leaves: another batch holds the rest
        width = draw(st.sampled_from([1, 2, 3, 32]))
        lo = draw(st.integers(0, size - n))
        phase = draw(st.integers(0, 1))
        indexes = [i for i in range(lo, lo + n) if ((i - lo) // width) % 2 == phase] or [lo]
    elif shape == "scattered":
        indexes = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=40))
    else:  # a run at the edge, a few old duplicates and repeats
        indexes = list(range(size - n, size))
        indexes += draw(st.lists(st.integers(0, size - 1), max_size=5))
        indexes += draw(st.lists(st.sampled_from(indexes), max_size=3))
    return draw(st.permutations(indexes)) if draw(st.booleans()) else indexes, size


@given(batches())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batch_proofs_equal_the_strict_ones(log: LogReader, batch: tuple[list[int], int]) -> None:
    indexes, size = batch
    _check(log, indexes, size)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 100, 1023, 1024, 1025, 4096, LEAVES])
def test_every_leaf_and_the_edges_of_chosen_sizes(log: LogReader, size: int) -> None:
    _check(log, list(range(size)), size)
    _check(log, [size - 1], size)
    _check(log, [0, size - 1], size)
    _check(log, [*range(max(0, size - 3), size), 0], size)


def test_leaf_hashes_that_disagree_with_the_store_take_the_strict_path(log: LogReader) -> None:
    size = 3000
    indexes = list(range(2500, 3000))
    for k in [0, 1, 250, 499]:
        for bad in [bytes(32), _leaf(indexes[k])[:31], _leaf(indexes[k]) + b"\x00"]:
            prover = Prover(log)
            given = [_leaf(i) for i in indexes]
            given[k] = bad
            proofs = prover.prove(indexes, size, given)
            assert [proofs.proof(i) for i in indexes] == [log.inclusion_proof(i, size) for i in indexes]
            assert prover.fallbacks == 1
    # One leaf repeated with two different hashes.
    prover = Prover(log)
    proofs = prover.prove([7, 8, 7], 10, [_leaf(7), _leaf(8), bytes(32)])
    assert proofs.proof(7) == log.inclusion_proof(7, 10) and prover.fallbacks == 1
    # A single leaf's own hash is in no proof: nothing to check, nothing trusted.
    prover = Prover(log)
    assert prover.prove([9], 10, [bytes(32)]).proof(9) == log.inclusion_proof(9, 10)
    assert prover.fallbacks == 0


def test_out_of_range_gives_the_strict_error(log: LogReader) -> None:
    prover = Prover(log)
    assert prover.prove([], 0).size == 0 and prover.prove([], 10).proofs([]) == []
    for indexes, size in [([3], LEAVES + 1), ([5], 5), ([-1], 5), ([0, 1, 9], 9), ([0], 0)]:
        with pytest.raises(ProofError) as strict:
            for i in indexes:
                log.inclusion_proof(i, size)
        with pytest.raises(ProofError) as fast:
            prover.prove(indexes, size, [_leaf(0)] * len(indexes))
        assert fast.value.message == strict.value.message


def test_a_failed_read_gives_the_strict_answer(log: LogReader, monkeypatch: pytest.MonkeyPatch) -> None:
    log.set_hash_cache_bytes(0)  # no hash held in memory: every proof reads through stored_hashes
    prover = Prover(log)
    real = log.stored_hashes
    calls: list[int] = []

    def flaky(coords: list[tuple[int, int]]) -> list[bytes]:
        calls.append(len(coords))
        if len(calls) == 1:
            raise CorruptionError("a corrupt block")
        return real(coords)

    monkeypatch.setattr(log, "stored_hashes", flaky)
    indexes = list(range(900, 1000))
    proofs = prover.prove(indexes, 1000, [_leaf(i) for i in indexes])
    assert [proofs.proof(i) for i in indexes] == [real_proof(log, i, 1000) for i in indexes]
    assert prover.fallbacks == 1

    monkeypatch.setattr(log, "stored_hashes", lambda coords: (_ for _ in ()).throw(CorruptionError("gone")))
    with pytest.raises(CorruptionError):
        prover.prove(indexes, 1000, [_leaf(i) for i in indexes])


def real_proof(log: LogReader, index: int, size: int) -> list[bytes]:
    return merkle.inclusion_proof([_leaf(i) for i in range(size)], index, size)


def test_submitter_batch_answer_is_json_dumps_of_its_dict(log: LogReader) -> None:
    size = 4321
    results: list[AppendResult | TurtlesError] = [AppendResult(i, _leaf(i), NOTE, size) for i in range(3821, 4321)]
    results[3] = SignatureError("envelope signature by k does not verify", key_id="k")
    results[7] = AppendResult(12, _leaf(12), NOTE, size, duplicate=True)  # an old entry
    results[9] = AppendResult(4000, _leaf(4000), NOTE, size, duplicate=True)  # a twin in the batch
    results.append(AppendResult(4320, _leaf(4320), NOTE, 4321, duplicate=True))
    fake = types.SimpleNamespace(_prover=Prover(log))
    proofs, texts = Submitter._prove_batch(fake, results, size)  # type: ignore[arg-type]
    assert fake._prover.fallbacks == 0
    for r, proof in zip(results, proofs, strict=True):
        assert proof == (log.inclusion_proof(r.index, size) if isinstance(r, AppendResult) else [])
    out = BatchOutcome(NOTE, size, results, proofs, texts)
    assert out.to_json() == json.dumps(out.to_dict()).encode() == BatchOutcome(NOTE, size, results, proofs).to_json()
    for r, proof, text in zip(results, proofs, texts, strict=True):
        if isinstance(r, AppendResult):
            acc = Accepted(r, proof, text)
            assert acc.to_json() == json.dumps(acc.to_dict()).encode() == Accepted(r, proof).to_json()
    # Nothing appended: no proofs.
    fake = types.SimpleNamespace(_prover=Prover(log))
    assert Submitter._prove_batch(fake, results[3:4], size) == ([[]], [""])  # type: ignore[arg-type]


async def test_concurrent_batches_and_posts_get_proofs_of_the_fast_path(client: Client) -> None:
    """Two batches and single POSTs in flight at once: their entries interleave in the log,
    every proof verifies against the signed checkpoint and equals the log's, and none took
    the strict path."""
    runtime = client.app[RUNTIME]
    key = str((await (await client.get("/v1/log")).json())["vkey"])
    signer, root = root_envelope()
    assert (await client.post("/v1/entries", data=root.to_json(), headers=JSON)).status == 201
    old = attestation(signer, "old", b"old")[1]
    assert (await client.post("/v1/entries", data=old.to_json(), headers=JSON)).status == 201
    batches = [[attestation(signer, f"b{b}-{i}", b"%d %d" % (b, i))[1] for i in range(70)] for b in range(2)]
    batches[0] += [batches[0][5], old]  # a twin in the batch, an old entry
    singles = [attestation(signer, f"s{i}", b"s%d" % i)[1] for i in range(12)]
    bodies = [json.dumps({"envelopes": [e.to_dict() for e in envs] + [{"payload": 1}]}) for envs in batches]
    answers = await asyncio.gather(
        *(client.post("/v1/entries:batch", data=body, headers=JSON) for body in bodies),
        *(client.post("/v1/entries", data=e.to_json(), headers=JSON) for e in singles),
    )
    log = runtime.own_log()
    checked = 0
    for r in answers[:2]:
        raw = await r.read()
        out = json.loads(raw)
        cp = Checkpoint.parse(open_note(out["checkpoint"], key))
        assert cp.size == out["size"]
        assert out["results"][-1]["status"] == 400
        for item in out["results"][:-1]:
            proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
            merkle.verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp.size, proof, cp.root)
            assert proof == log.inclusion_proof(item["index"], cp.size)
            checked += 1
    for r in answers[2:]:
        item = await r.json()
        assert r.status == 201
        cp = Checkpoint.parse(open_note(item["checkpoint"], key))
        proof = [bytes.fromhex(h) for h in item["inclusion_proof"]]
        merkle.verify_inclusion(bytes.fromhex(item["leaf_hash"]), item["index"], cp.size, proof, cp.root)
        checked += 1
    assert checked == 72 + 70 + 12
    assert runtime.open_submitter()._prover.fallbacks == 0
