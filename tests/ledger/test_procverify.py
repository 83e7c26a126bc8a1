"""Bulk appends verified in worker processes (ledger.procverify) decide exactly as the
threads do: same entries, same refusals, nothing appended unverified, and a dead worker
costs speed only."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from ledger.attestation import PAYLOAD_TYPE, Attestation
from ledger.encoding import encode
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.errors import TurtlesError
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.procverify import VerifierProcesses, _request, verify_attestations
from ledger.store_keys import index_key, key_index_key, record_key
from ledger.trust import RootsPolicy
from ledger.verification import (
    Prepared,
    attestation_heads,
    index_rows,
    subject_head,
    verify_envelope,
)
from tests.ledger.conftest import ORIGIN, World, delegation_envelope, root_envelope

N = 700  # over the size at which append_many uses the workers


def _clock() -> int:
    return 1_700_000_000_000  # one time for every batch: both logs' entries can be byte-identical


@pytest.fixture
def keys() -> tuple[SoftwareSigner, SoftwareSigner, SoftwareSigner, SoftwareSigner]:
    return (SoftwareSigner.generate(), SoftwareSigner.generate(), SoftwareSigner.generate(),
            SoftwareSigner.generate())


def _open(path: Path, log_key: SoftwareSigner, procs: int) -> Holdings:
    return Holdings.open(path, origin=ORIGIN, signer=log_key, roots=RootsPolicy.any_self_signed(), create=True,
                         clock=_clock, verify_processes=procs)


def _mixed(world: World, late: SoftwareSigner, outsider: SoftwareSigner) -> list[Envelope]:
    """Attestations with, in the middle: a bad signature, an out-of-scope name, a stranger's
    signature, twins, a delegation to ``late`` and then attestations by ``late``, a key id
    that cannot be encoded, and a payload type that is no record."""
    envs = [world.attest(f"pkg-{i}") for i in range(N)]
    bad = envs[10]
    envs[10] = replace(bad, signatures=(Signature(bad.signatures[0].keyid, bytes(64)),))
    envs[20] = world.attest("other-1")  # out of the maintainer's scope
    envs[30] = world.attest("pkg-x", signer=outsider)  # no one introduced this key
    envs[40] = envs[41]  # twins
    envs[300] = delegation_envelope(world.root, late)
    envs[301:305] = [world.attest(f"pkg-late-{i}", signer=late) for i in range(4)]
    envs[600] = sign_envelope("text/plain", b"not a record", [world.maint])
    odd = world.attest("pkg-odd")  # a stranger's key id that is not Unicode: no entry can hold it
    envs[500] = replace(odd, signatures=(*odd.signatures, Signature("\ud800", bytes(64))))
    return envs


def _outcomes(results: list[AppendResult | TurtlesError]) -> list[tuple[object, ...]]:
    return [(r.index, r.leaf_hash, r.duplicate) if isinstance(r, AppendResult) else (type(r).__name__, str(r))
            for r in results]


@pytest.fixture
def twin_logs(tmp_path: Path, keys: tuple[SoftwareSigner, ...]) -> Iterator[tuple[World, World]]:
    log_key, root, maint, _ = keys
    worlds = []
    for name, procs in (("threads", 0), ("procs", 2)):
        w = World(_open(tmp_path / name, log_key, procs), tmp_path / name, log_key, root, maint)
        w.log.append(root_envelope(root))
        w.log.append(delegation_envelope(root, maint))
        worlds.append(w)
    yield worlds[0], worlds[1]
    for w in worlds:
        w.holdings.close()


def test_workers_decide_exactly_as_threads(twin_logs: tuple[World, World], keys: tuple[SoftwareSigner, ...]) -> None:
    threads, procs = twin_logs
    late, outsider = SoftwareSigner.generate(), keys[3]
    envs = _mixed(threads, late, outsider)
    by_threads = threads.log.append_many(envs)
    by_procs = procs.log.append_many(envs)
    assert _outcomes(by_procs) == _outcomes(by_threads)
    assert [type(r).__name__ for i, r in enumerate(by_procs) if i in (10, 20, 30, 500, 600)] == [
        "SignatureError", "ScopeError", "UnknownSignerError", "EncodingError", "RecordError"]
    assert all(isinstance(by_procs[i], AppendResult) for i in range(301, 305))  # admitted after the delegation
    assert by_procs[40].duplicate or by_procs[41].duplicate  # type: ignore[union-attr]
    assert threads.log.size == procs.log.size
    # Byte-identical logs: every entry the workers passed is the entry the threads made.
    assert [e.raw for e in procs.log.entries(0, procs.log.size)] == [
        e.raw for e in threads.log.entries(0, threads.log.size)]


def test_a_killed_worker_costs_speed_not_correctness(twin_logs: tuple[World, World]) -> None:
    _, procs = twin_logs
    log: Log = procs.log
    log.append_many([procs.attest(f"pkg-warm-{i}") for i in range(N)])  # the pool is up
    procs_of = procs.holdings.procs
    assert procs_of is not None and procs_of._pool is not None
    for pid in list(procs_of._pool._processes):
        os.kill(pid, signal.SIGKILL)
    envs = [procs.attest(f"pkg-after-{i}") for i in range(N)]
    bad = envs[5]
    envs[5] = replace(bad, signatures=(Signature(bad.signatures[0].keyid, bytes(64)),))
    results = log.append_many(envs)
    assert type(results[5]).__name__ == "SignatureError"
    assert sum(isinstance(r, AppendResult) for r in results) == N - 1
    # and the replaced pool works again
    again = log.append_many([procs.attest(f"pkg-again-{i}") for i in range(N)])
    assert all(isinstance(r, AppendResult) for r in again)


def _in_worker(gate: object, envs: list[Envelope]) -> list[Prepared | None]:
    """What the workers hand back for ``envs`` (run here, through the very same bytes)."""
    done: Future[bytes] = Future()
    done.set_result(verify_attestations(_request(gate, envs)))  # type: ignore[arg-type]
    return VerifierProcesses(1).collect(done, envs)


def test_a_worker_returns_what_verify_envelope_returns(world: World) -> None:
    envs = [world.attest(f"pkg-{i}") for i in range(5)]
    for env, got in zip(envs, _in_worker(world.log._gate, envs), strict=True):
        want = verify_envelope(world.log._gate, env)
        assert isinstance(want.record, Attestation) and got is not None
        assert env.to_msgpack() == encode(env.to_value())  # adopted from the worker: the entry's bytes
        assert (got.envelope, got.signers, got.record_id) == (env, want.signers, want.record_id)
        assert got.record == replace(want.record, statement={})
        assert got.heads and index_rows(7, got) == index_rows(7, want) == _rows_spelled_out(7, want)


def _rows_spelled_out(seq: int, p: Prepared) -> list[tuple[bytes, bytes]]:
    """An attestation's index rows from the store's full-key functions."""
    assert isinstance(p.record, Attestation)
    return [(record_key(p.record_id, seq), encode(list(p.signers))),
            *[(index_key(b"a", bytes.fromhex(s.sha256), seq), b"") for s in p.record.subjects],
            *[(key_index_key(k, seq), b"") for k in sorted(set(p.signers))]]


def test_index_row_heads_make_the_rows_of_any_attestation(world: World) -> None:
    two = world.attest("pkg-two").with_signature(SoftwareSigner.generate())
    subjects = [{"digest": {"sha256": hashlib.sha256(n.encode()).hexdigest()}, "name": n}
                for n in ("pkg-a", "pkg-b", "pkg-a")]  # a subject twice: a row each, as the record holds them
    statement = {"_type": "https://in-toto.io/Statement/v1", "subject": subjects,
                 "predicateType": "https://example.com/p/v1", "predicate": {}}
    many = sign_envelope(PAYLOAD_TYPE, json.dumps(statement).encode(), [world.maint])
    for env in (two, many, world.attest("pkg-3")):
        for got in _in_worker(world.log._gate, [env]):
            assert got is not None and got.heads
            assert index_rows(5, got) == _rows_spelled_out(5, verify_envelope(world.log._gate, env))
        want = verify_envelope(world.log._gate, env)
        made = replace(want, heads=attestation_heads(want.record_id, want.signers,
                                                     [subject_head(s.sha256) for s in want.record.subjects]))
        assert index_rows(2**40 + 3, made) == index_rows(2**40 + 3, want) == _rows_spelled_out(2**40 + 3, want)


def _packed_by_worker(gate: object, envs: list[Envelope]) -> list[bytes]:
    """The canonical bytes each row of the workers' answer for ``envs`` carries."""
    _, _, rows = msgpack.unpackb(verify_attestations(_request(gate, envs)), use_list=False)  # type: ignore[arg-type]
    return [row[6] for row in rows]


def test_a_worker_packs_only_chunks_whose_bytes_the_caller_lacks(world: World) -> None:
    gate = world.log._gate
    held = [world.attest(f"pkg-{i}") for i in range(3)]
    for env in held:  # as the node's msgpack batch parser does
        env.adopt_msgpack(encode(env.to_value()))
    fresh = [world.attest(f"pkg-new-{i}") for i in range(2)]
    assert all(e.packed() is not None for e in held) and all(e.packed() is None for e in fresh)
    assert _packed_by_worker(gate, held) == [b"", b"", b""]
    assert _packed_by_worker(gate, [*held, fresh[0]]) == [encode(e.to_value()) for e in [*held, fresh[0]]]
    for env, got in zip(held, _in_worker(gate, held), strict=True):
        assert got is not None and env.to_msgpack() == encode(env.to_value())


def test_what_a_worker_cannot_decide_comes_back_to_the_caller(world: World) -> None:
    good = world.attest("pkg-1")
    stranger = world.attest("pkg-2", signer=SoftwareSigner.generate())
    forged = replace(good, signatures=(Signature(good.signatures[0].keyid, bytes(64)),))
    key_record = delegation_envelope(world.root, SoftwareSigner.generate())
    got = _in_worker(world.log._gate, [good, stranger, forged, key_record])
    assert got[0] is not None and got[1:] == [None, None, None]


def test_workers_refuse_to_start_with_none() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        VerifierProcesses(0)


_CHILD = """
import os, sys, time
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.trust import RootsPolicy
from tests.ledger.conftest import World, delegation_envelope, root_envelope

def main():
    log_key, root, maint = (SoftwareSigner.generate() for _ in range(3))
    h = Holdings.open(sys.argv[1], origin="child.test/log", signer=log_key,
                      roots=RootsPolicy.any_self_signed(), create=True, verify_processes=2)
    w = World(h, sys.argv[1], log_key, root, maint)
    w.log.append(root_envelope(root))
    w.log.append(delegation_envelope(root, maint))
    w.log.append_many([w.attest(f"pkg-{i}") for i in range(300)])
    print(" ".join(str(p) for p in h.procs._pool._processes), flush=True)
    time.sleep(60)  # killed before this ends

if __name__ == "__main__":
    main()
"""


def test_workers_leave_when_the_node_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "db")], stdout=subprocess.PIPE, text=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert child.stdout is not None
        workers = [int(p) for p in child.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
    finally:
        child.kill()  # SIGKILL: no shutdown, nothing closed
        child.wait(30)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers), "workers outlived their node"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
