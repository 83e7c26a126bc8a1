"""The worker side of ledger.procverify, and the pool that runs it (ledger._workers).

A worker's answer for an attestation stands for :func:`verify_envelope`'s: it accepts only
what verify_envelope accepts, with the same signers, record id, record and entry bytes, and
hands back (None) whatever it is not sure of. Checked here against verify_envelope itself,
on envelopes mixing known, unknown and forged signatures, odd key tables and bad payloads.
"""

from __future__ import annotations

import operator
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger._workers import WorkerPool
from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation, make_statement
from ledger.encoding import encode
from ledger.entry import sign_record
from ledger.envelope import Envelope, Signature, pae
from ledger.errors import TurtlesError
from ledger.keys import KeyId, PublicKey, SoftwareSigner
from ledger.procverify import VerifierProcesses, _request, verify_attestations
from ledger.records import Delegation
from ledger.verification import Prepared, verify_envelope

A, B, C = SoftwareSigner.generate(), SoftwareSigner.generate("p256"), SoftwareSigner.generate()  # C: a stranger


class Gate:
    """A gate that knows ``keys`` (hint -> key), honest or not."""

    def __init__(self, keys: dict[str, PublicKey]) -> None:
        self.keys = keys

    def public_key(self, key_id: KeyId) -> PublicKey | None:
        return self.keys.get(key_id)

    def admit(self, **_: object) -> None:  # never called here
        raise AssertionError

    def add(self, rec: object) -> None:
        raise AssertionError


HONEST = Gate({A.key_id: A.public_key, B.key_id: B.public_key})
GATES = {
    "honest": HONEST,
    "liar": Gate({A.key_id: B.public_key, B.key_id: B.public_key}),  # A's id leads to B's key
    "alias": Gate({"alias": A.public_key, A.key_id: A.public_key}),  # a key under another hint too
    "empty": Gate({"": A.public_key}),
}


def _payloads() -> dict[str, tuple[str, bytes]]:
    good = make_statement(subject=Artefact("pkg-1", "ab" * 32), materials=(Artefact("dep", "cd" * 32),))
    delegation = Delegation(issuer=A.key_id, subject=C.public_key, name="m", org="o", artefacts=("pkg-*",),
                            purposes=("release",), max_depth=0, not_before=0, not_after=None, created=1)
    return {
        "good": (PAYLOAD_TYPE, good),
        "spaced": (PAYLOAD_TYPE, good.replace(b'"subject":[', b'"subject": [')),  # the strict reader's
        "foreign": (PAYLOAD_TYPE, b'{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"'
                    + b"ef" * 32 + b'"}}],"predicateType":"https://example.com/x","predicate":{"n":1.5}}'),
        "duplicate": (PAYLOAD_TYPE, good.replace(b'"name":"pkg-1"}]', b'"name":"pkg-1","name":"pkg-2"}]')),
        "not json": (PAYLOAD_TYPE, b"{"),
        "text": ("text/plain", b"hello"),
        "key record": (sign_record(delegation, [A]).payload_type, sign_record(delegation, [A]).payload),
    }


PAYLOADS = _payloads()
SIGS = ["A", "A forged", "A by C", "B", "B forged", "C", "alias", "empty", "empty 2"]


def _signature(kind: str, ptype: str, payload: bytes) -> Signature:
    data = pae(ptype, payload)
    return {
        "A": lambda: Signature(A.key_id, A.sign(data)),
        "A forged": lambda: Signature(A.key_id, bytes(64)),
        "A by C": lambda: Signature(A.key_id, C.sign(data)),
        "B": lambda: Signature(B.key_id, B.sign(data)),
        "B forged": lambda: Signature(B.key_id, B.sign(data + b"x")),
        "C": lambda: Signature(C.key_id, C.sign(data)),
        "alias": lambda: Signature("alias", A.sign(data)),
        "empty": lambda: Signature("", A.sign(data)),
        "empty 2": lambda: Signature("", C.sign(data)),
    }[kind]()


def _keyid(kind: str) -> str:
    return {"A forged": "A", "A by C": "A", "B forged": "B", "empty 2": "empty"}.get(kind, kind)


def _in_worker(gate: Gate, envs: list[Envelope]) -> list[Prepared | None]:
    """What the workers hand back for ``envs`` (run here, through the very same bytes)."""
    done: Future[bytes] = Future()
    done.set_result(verify_attestations(_request(gate, envs)))
    return VerifierProcesses(1).collect(done, envs)


def _want(gate: Gate, env: Envelope) -> Prepared | None:
    try:
        return verify_envelope(gate, env)
    except TurtlesError:
        return None


def _same(got: Prepared, want: Prepared, env: Envelope) -> None:
    assert got.envelope is env and got.signers == want.signers and got.record_id == want.record_id
    assert isinstance(want.record, Attestation)
    assert got.record == Attestation.lean(want.record.subjects, want.record.predicate_type, want.record.materials,
                                          want.record.builder)
    assert env.to_msgpack() == encode(env.to_value())  # the bytes the worker handed over are the entry's


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(GATES)), st.lists(st.tuples(st.sampled_from(sorted(PAYLOADS)),
                                                          st.lists(st.sampled_from(SIGS), min_size=1, max_size=3,
                                                                   unique_by=_keyid)),
                                                min_size=1, max_size=6))
def test_a_worker_accepts_only_what_verify_envelope_accepts(gate_name: str,
                                                            specs: list[tuple[str, list[str]]]) -> None:
    gate = GATES[gate_name]
    envs = []
    for payload_name, sig_kinds in specs:
        ptype, payload = PAYLOADS[payload_name]
        envs.append(Envelope(ptype, payload, tuple(_signature(k, ptype, payload) for k in sig_kinds)))
    for env, got in zip(envs, _in_worker(gate, envs), strict=True):
        want = _want(gate, env)
        if got is not None:
            assert want is not None, "the worker accepted what verify_envelope refuses"
            _same(got, want, env)
        elif gate is HONEST and want is not None and env.payload_type == PAYLOAD_TYPE:
            pytest.fail("the worker handed back an attestation an honest gate accepts")


@pytest.mark.parametrize("gate_name", sorted(GATES))
def test_every_pair_of_signatures_is_decided_as_verify_envelope_decides(gate_name: str) -> None:
    gate = GATES[gate_name]
    combos = [[k] for k in SIGS] + [[k, m] for k in SIGS for m in SIGS if _keyid(k) != _keyid(m)]
    envs = [Envelope(ptype, payload, tuple(_signature(k, ptype, payload) for k in kinds))
            for name in ("good", "duplicate", "text") for ptype, payload in [PAYLOADS[name]] for kinds in combos]
    for env, got in zip(envs, _in_worker(gate, envs), strict=True):
        want = _want(gate, env)
        if got is not None:
            assert want is not None, f"the worker accepted what verify_envelope refuses: {env.key_ids}"
            _same(got, want, env)
        else:
            assert gate is not HONEST or want is None or env.payload_type != PAYLOAD_TYPE


def test_the_common_attestation_is_decided_in_the_worker() -> None:
    envs = [Envelope(PAYLOAD_TYPE, p, (_signature("A", PAYLOAD_TYPE, p),))
            for p in (PAYLOADS["good"][1], PAYLOADS["spaced"][1], PAYLOADS["foreign"][1])]
    got = _in_worker(HONEST, envs)
    for env, g in zip(envs, got, strict=True):
        want = _want(HONEST, env)
        assert g is not None and want is not None
        _same(g, want, env)
    assert got[0] is not None and got[1] is not None
    assert got[0].signers is got[1].signers  # one tuple for the chunk's one signer set
    assert got[0].record.builder is got[1].record.builder  # type: ignore[union-attr]


def test_a_key_id_that_is_not_unicode_stays_with_the_caller() -> None:
    payload = PAYLOADS["good"][1]
    odd = Envelope(PAYLOAD_TYPE, payload, (_signature("A", PAYLOAD_TYPE, payload), Signature("\ud800", b"x" * 64)))
    fine = Envelope(PAYLOAD_TYPE, payload, (_signature("A", PAYLOAD_TYPE, payload),))
    got = _in_worker(HONEST, [odd, fine])
    assert got[0] is None and got[1] is not None


def test_a_failed_chunk_is_handed_back_whole() -> None:
    envs = [Envelope(PAYLOAD_TYPE, PAYLOADS["good"][1], (_signature("A", PAYLOAD_TYPE, PAYLOADS["good"][1]),))]
    failed: Future[bytes] = Future()
    failed.set_exception(ValueError("a bug in a worker"))
    assert VerifierProcesses(1).collect(failed, envs) == [None]
    broken: Future[bytes] = Future()
    broken.set_exception(BrokenProcessPool("gone"))
    assert VerifierProcesses(1).collect(broken, envs) == [None]


# --- the pool -------------------------------------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.shutdown(wait=True)
    assert all(proc.poll() is not None for proc in p._processes.values())


def test_tasks_run_in_the_workers_and_fail_there(pool: WorkerPool) -> None:
    futures = [pool.submit(operator.add, i, 1) for i in range(40)]  # more than the workers: queued
    assert [f.result(30) for f in futures] == list(range(1, 41))
    pids = {pool.submit(os.getpid).result(30) for _ in range(10)}
    assert pids <= set(pool._processes) and os.getpid() not in pids
    with pytest.raises(ZeroDivisionError):
        pool.submit(operator.truediv, 1, 0).result(30)
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        pool.submit(threading.Lock).result(30)
    assert pool.submit(operator.mul, 6, 7).result(30) == 42  # the workers are still there
    # bytes cross as they are (a last argument, a result), and a memoryview arrives as bytes
    assert pool.submit(bytes.upper, b"abc").result(30) == b"ABC"
    assert pool.submit(operator.add, b"ab", memoryview(b"cd")).result(30) == b"abcd"
    assert pool.submit(operator.getitem, [b"x", 1], 1).result(30) == 1
    with pytest.raises(TypeError):
        pool.submit(operator.add, 1, b"x").result(30)


def test_a_queued_task_can_be_cancelled(pool: WorkerPool) -> None:
    busy = [pool.submit(time.sleep, 0.5) for _ in range(2)]
    queued = pool.submit(operator.add, 1, 1)
    assert queued.cancel()
    after = pool.submit(operator.add, 2, 2)
    assert after.result(30) == 4 and queued.cancelled()
    for f in busy:
        f.result(30)


def test_a_killed_worker_breaks_the_pool(pool: WorkerPool) -> None:
    running = [pool.submit(time.sleep, 2) for _ in range(2)]
    queued = pool.submit(operator.add, 1, 1)
    time.sleep(0.5)
    os.kill(next(iter(pool._processes)), signal.SIGKILL)
    for f in (*running, queued):
        with pytest.raises(BrokenProcessPool):
            f.result(30)
    with pytest.raises(BrokenProcessPool):
        pool.submit(operator.add, 1, 1)


def test_closing_fails_what_is_not_answered() -> None:
    pool = WorkerPool(1)
    running = pool.submit(time.sleep, 1)
    queued = pool.submit(operator.add, 1, 1)
    time.sleep(0.2)
    pool.shutdown(wait=True)
    for f in (running, queued):
        with pytest.raises(BrokenProcessPool):
            f.result(30)
    assert all(p.poll() is not None for p in pool._processes.values())
    with pytest.raises(BrokenProcessPool):
        pool.submit(operator.add, 1, 1)


def test_run_takes_any_module_level_function_and_survives_a_broken_pool() -> None:
    procs = VerifierProcesses(2)
    try:
        assert procs.run(operator.mul, 6, 7).result(30) == 42
        assert procs._pool is not None
        for pid in list(procs._pool._processes):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the pool notices (a failed Future), then is replaced
            try:
                if procs.run(operator.mul, 2, 3).result(30) == 6:
                    break
            except BrokenProcessPool:
                time.sleep(0.05)
        assert procs.run(operator.mul, 2, 3).result(30) == 6
    finally:
        procs.close()
