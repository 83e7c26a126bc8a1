"""The pipelined group commit: the sequencer commits, a checkpointer thread signs and answers.

Real LevelDB and real Ed25519 keys throughout. The signer is a software key that a test can
make wait (to hold stage 2 while stage 1 goes on) or refuse one signature; a store's commit
is counted by wrapping the real one, and a checkpoint put or mark write is made to fail
once by raising the error the real one raises before calling it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.checkpoint import Checkpoint, open_note
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.errors import HSMError, SignatureError, StorageError, TurtlesError, UnavailableError
from ledger.holdings import LogGate
from ledger.hsm import Pkcs11Signer, generate_keypair
from ledger.keys import PublicKey, Signer, SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.pkcs11ctx import Pkcs11Context
from ledger.store import Batch, Database, LogStore
from ledger.trust import RootsPolicy
from tests.ledger.conftest import ORIGIN, delegation_envelope, root_envelope
from tests.softhsm import SoftHSMToken

WAIT = 30  # seconds any one wait in these tests may take before it counts as a failure


class GatedSigner:
    """An Ed25519 key (software, or ``inner``) whose signatures can be held back or refused."""

    def __init__(self, inner: Signer | None = None) -> None:
        self._key = inner or SoftwareSigner.generate()
        self.calls = 0
        self.refuse: set[int] = set()  # numbers of the calls that fail (1 = the first)
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()  # set while a call waits for ``open``
        self._lock = threading.Lock()

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    def sign(self, data: bytes) -> bytes:
        with self._lock:
            self.calls += 1
            n = self.calls
        if not self.open.is_set():
            self.held.set()
            if not self.open.wait(WAIT):
                raise HSMError("test signer held too long")
        if n in self.refuse:
            raise HSMError(f"signature {n} refused (test)")
        return self._key.sign(data)


@dataclass
class Rig:
    """An open log over a real store whose commits are counted and whose writes can fail once."""

    db: Database
    store: LogStore
    signer: GatedSigner
    log: Log
    root: SoftwareSigner
    maint: SoftwareSigner
    commits: list[int] = field(default_factory=list)
    fail_put: list[TurtlesError] = field(default_factory=list)
    committed: threading.Condition = field(default_factory=threading.Condition)

    def attest(self, name: str) -> Envelope:
        stmt = make_statement(subject=Artefact(name, hashlib.sha256(name.encode()).hexdigest()))
        return sign_envelope(INTOTO, stmt, [self.maint])

    def wait_commits(self, n: int) -> None:
        with self.committed:
            assert self.committed.wait_for(lambda: len(self.commits) >= n, WAIT), f"{n} commits not reached"


def _open_rig(path: Path, signer: GatedSigner | None = None) -> Rig:
    signer = signer or GatedSigner()
    db = Database(path)
    if db.log(ORIGIN).meta() is None:
        Log.create(db, ORIGIN, signer=signer, gate=LogGate(RootsPolicy.any_self_signed())).close()
    store = db.log(ORIGIN)
    rig = Rig(db, store, signer, None, SoftwareSigner.generate(), SoftwareSigner.generate())  # type: ignore[arg-type]
    commit, put = store.commit, store.put_checkpoint

    def counted(batch: Batch) -> None:
        commit(batch)
        with rig.committed:
            rig.commits.append(batch.head.size)
            rig.committed.notify_all()

    def failing_put(size: int, note: str) -> None:
        if rig.fail_put:
            raise rig.fail_put.pop()
        put(size, note)

    store.commit = counted  # type: ignore[method-assign]
    store.put_checkpoint = failing_put  # type: ignore[method-assign]
    rig.log = Log(store, signer=signer, gate=LogGate(RootsPolicy.any_self_signed()))
    return rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = _open_rig(tmp_path / "db")
    r.log.append(root_envelope(r.root))
    r.log.append(delegation_envelope(r.root, r.maint))
    yield r
    r.log.close()
    r.db.close()


def _cp(log: Log, note: str) -> Checkpoint:
    return Checkpoint.parse(open_note(note, log.vkey))


def _assert_covered(log: Log, res: AppendResult) -> None:
    """``res``'s checkpoint is signed by the log, covers ``res.index``, and proves it."""
    cp = _cp(log, res.checkpoint)
    assert cp.size == res.size > res.index
    merkle.verify_inclusion(res.leaf_hash, res.index, cp.size, log.inclusion_proof(res.index, cp.size), cp.root)
    assert log.entry(res.index).leaf_hash == res.leaf_hash


def _forged(env: Envelope) -> Envelope:
    return Envelope(env.payload_type, env.payload, (Signature(env.signatures[0].keyid, bytes(64)),))


def test_groups_committed_while_a_checkpoint_is_signed_share_the_next_one(rig: Rig) -> None:
    """Stage 2 held in its signature: stage 1 commits two more groups meanwhile, and both
    are answered with ONE checkpoint, of the newer head."""
    log, signer = rig.log, rig.signer
    base, signed = len(rig.commits), signer.calls
    signer.open.clear()
    first = log.submit(rig.attest("pkg-a"))
    assert signer.held.wait(WAIT)
    later = []
    for i, name in enumerate(("pkg-b", "pkg-c")):
        later.append(log.submit(rig.attest(name)))
        rig.wait_commits(base + 2 + i)
    assert not first.done() and log.size == 5 and _cp(log, log.checkpoint()).size == 2
    signer.open.set()
    a, b, c = (f.result(WAIT) for f in (first, *later))
    assert signer.calls - signed == 2, "three groups committed: one signature for the first, one for both others"
    assert _cp(log, a.checkpoint).size == 3 and a.size == 3
    assert b.checkpoint == c.checkpoint and b.size == c.size == 5
    assert list(log.store.checkpoints())[-2:] == [(3, a.checkpoint), (5, c.checkpoint)]
    for res in (a, b, c):
        _assert_covered(log, res)


def test_through_softhsm_many_threads_share_checkpoints_and_each_is_covered(
    tmp_path: Path, pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    """The log key in a SoftHSM2 token: held once to force two groups into one signature,
    then 8 threads appending; every answer verifies against the token's key."""
    generate_keypair(pkcs11_context, token_label=softhsm_token.label, label="log", alg="ed25519",
                     pin=softhsm_token.pin)
    hsm = Pkcs11Signer(pkcs11_context, softhsm_token.uri("log"), pin=softhsm_token.pin)
    r = _open_rig(tmp_path / "db", GatedSigner(hsm))
    log, signer = r.log, r.signer
    try:
        log.append(root_envelope(r.root))
        log.append(delegation_envelope(r.root, r.maint))
        signer.open.clear()
        first = log.submit(r.attest("pkg-first"))
        assert signer.held.wait(WAIT)
        signed = signer.calls
        two = [log.submit(r.attest(f"pkg-two-{i}")) for i in range(2)]
        with r.committed:  # one or two groups, both committed while the first is being signed
            assert r.committed.wait_for(lambda: log.size == 5, WAIT)
        signer.open.set()
        a, b, c = (f.result(WAIT) for f in (first, *two))
        assert b.checkpoint == c.checkpoint and b.size == c.size == 5 and signer.calls == signed + 1
        results = [a, b, c]
        lock = threading.Lock()

        def writer(t: int) -> None:
            for i in range(10):
                res = log.append(r.attest(f"pkg-{t}-{i}"), timeout=WAIT)
                with lock:
                    results.append(res)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2 * WAIT)
        assert len(results) == 83 and sorted(x.index for x in results) == list(range(2, 85))
        for res in results:
            _assert_covered(log, res)
    finally:
        signer.open.set()
        log.close()
        r.db.close()


def test_many_threads_no_more_signatures_than_groups_and_every_answer_covered(rig: Rig) -> None:
    log, signer = rig.log, rig.signer
    base, signed = len(rig.commits), signer.calls
    results: list[AppendResult] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(25):
            res = log.append(rig.attest(f"pkg-{t}-{i}"), timeout=WAIT)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * WAIT)
    assert len(results) == 16 * 25
    assert sorted(r.index for r in results) == list(range(2, 2 + 16 * 25))
    groups, signatures = len(rig.commits) - base, signer.calls - signed
    assert 0 < signatures <= groups
    for res in results:
        _assert_covered(log, res)


def test_answers_come_in_queue_order_refusals_and_duplicates_included(rig: Rig) -> None:
    log, signer = rig.log, rig.signer
    old = rig.attest("pkg-old")
    log.append(old)
    told: list[int] = []
    signer.open.clear()  # everything below queues behind a held signature
    futures: list[Future[AppendResult]] = []
    for i in range(60):
        env = rig.attest(f"pkg-{i}")
        env = old if i % 7 == 3 else _forged(env) if i % 11 == 5 else env
        fut = log.submit(env)
        fut.add_done_callback(lambda _, n=i: told.append(n))
        futures.append(fut)
        if i == 0:
            assert signer.held.wait(WAIT)
    signer.open.set()
    for i, fut in enumerate(futures):
        if i % 11 == 5 and i % 7 != 3:
            with pytest.raises(SignatureError):
                fut.result(WAIT)
        else:
            res = fut.result(WAIT)
            assert res.duplicate == (i % 7 == 3)
            _assert_covered(log, res)
    assert told == list(range(60))


@pytest.mark.parametrize("fault", ["sign", "put", "mark"])
def test_a_failed_checkpoint_rejects_its_groups_and_the_log_goes_on(rig: Rig, fault: str) -> None:
    """The entries stay durable but unacknowledged; later appends are covered, and so is a
    resubmission of a rejected one (a duplicate, with a checkpoint that covers it)."""
    log, signer = rig.log, rig.signer
    before = log.store.latest_checkpoint()
    error: type[TurtlesError] = HSMError if fault == "sign" else StorageError
    if fault == "sign":
        signer.refuse.add(signer.calls + 1)
    elif fault == "put":
        rig.fail_put.append(StorageError("log test: write failed: injected"))
    else:
        mark = log._checkpoints._watermark  # the real mark file, made to fail once
        assert mark is not None
        write = mark.write

        def failing(m: object) -> None:
            mark.write = write  # type: ignore[method-assign]
            raise StorageError("cannot write the high-water mark: injected")

        mark.write = failing  # type: ignore[method-assign]
    rejected = rig.attest("pkg-rejected")
    with pytest.raises(error):
        log.append(rejected, timeout=WAIT)
    assert log.size == 3, "the entry is durable"
    assert _cp(log, log.checkpoint()).size == 2, "no checkpoint was published over it"
    if fault != "mark":
        assert log.store.latest_checkpoint() == before
    later = log.append(rig.attest("pkg-later"), timeout=WAIT)
    assert later.index == 3 and later.size == 4
    _assert_covered(log, later)
    again = log.append(rejected, timeout=WAIT)
    assert again.duplicate and again.index == 2
    _assert_covered(log, again)


def test_a_duplicate_of_an_entry_not_yet_covered_waits_for_its_checkpoint(rig: Rig) -> None:
    log, signer = rig.log, rig.signer
    env = rig.attest("pkg-twice")
    signer.refuse.add(signer.calls + 1)
    with pytest.raises(HSMError):
        log.append(env, timeout=WAIT)
    signer.open.clear()
    dup = log.submit(env)  # stage 1 finds it durable at 2; stage 2 must sign before answering
    assert signer.held.wait(WAIT)
    assert not dup.done()
    signer.open.set()
    res = dup.result(WAIT)
    assert res.duplicate and res.index == 2 and res.size == 3
    _assert_covered(log, res)


def test_close_answers_everything_in_flight_and_leaves_no_thread(tmp_path: Path) -> None:
    r = _open_rig(tmp_path / "db")
    log = r.log
    log.append(root_envelope(r.root))
    log.append(delegation_envelope(r.root, r.maint))
    r.signer.open.clear()
    futures = [log.submit(r.attest(f"pkg-{i}")) for i in range(40)]
    bulk: list[list[AppendResult | TurtlesError]] = []
    runner = threading.Thread(target=lambda: bulk.append(log.append_many([r.attest(f"pkg-bulk-{i}") for i in range(300)])))
    runner.start()
    assert r.signer.held.wait(WAIT)
    with r.committed:  # all committed by stage 1, none answered: stage 2 is held
        assert r.committed.wait_for(lambda: log.size == 342, WAIT), log.size
    assert not any(f.done() for f in futures) and not bulk
    closer = threading.Thread(target=log.close)
    closer.start()
    r.signer.open.set()
    closer.join(2 * WAIT)
    runner.join(WAIT)
    assert not closer.is_alive() and not runner.is_alive()
    for fut in futures:
        _assert_covered(log, fut.result(0))
    assert len(bulk) == 1 and len(bulk[0]) == 300
    for res in bulk[0]:
        assert isinstance(res, AppendResult), res
        _assert_covered(log, res)
    with pytest.raises(UnavailableError):
        log.submit(r.attest("pkg-late"))
    names = {t.name for t in threading.enumerate()}
    assert f"sequencer:{ORIGIN}" not in names and f"checkpointer:{ORIGIN}" not in names
    size, note = log.size, log.checkpoint()
    r.db.close()
    reopened = _open_rig(tmp_path / "db", r.signer)
    try:
        assert reopened.log.size == size and reopened.log.checkpoint() == note
    finally:
        reopened.log.close()
        reopened.db.close()


_step = st.sampled_from(["new", "new", "new", "dup", "forged", "refuse", "key"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(_step, st.booleans()), min_size=1, max_size=30))
def test_any_mix_of_appends_and_failures_answers_in_order_and_covered(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, bool]]
) -> None:
    """Submissions of every kind, some signatures refused, some submitted while stage 2 is
    held: every future fires in queue order, every AppendResult verifies and covers its
    index, and each refusal is the error met (the signer's or the envelope's)."""
    r = _open_rig(tmp_path_factory.mktemp("db"))
    log, signer = r.log, r.signer
    try:
        log.append(root_envelope(r.root))
        log.append(delegation_envelope(r.root, r.maint))
        sent: list[Envelope] = []
        futures: list[Future[AppendResult]] = []
        told: list[int] = []
        for n, (kind, hold) in enumerate(steps):
            if hold and signer.open.is_set():
                signer.open.clear()
            elif not hold:
                signer.open.set()
            if kind == "refuse":
                signer.refuse.add(signer.calls + 1)
            env = (sent[n % len(sent)] if kind == "dup" and sent else
                   delegation_envelope(r.root, SoftwareSigner.generate()) if kind == "key" else
                   r.attest(f"pkg-{n}"))
            if kind == "forged":
                env = _forged(env)
            else:
                sent.append(env)
            fut = log.submit(env)
            fut.add_done_callback(lambda _, i=n: told.append(i))
            futures.append(fut)
        signer.open.set()
        for fut, (kind, _) in zip(futures, steps, strict=True):
            try:
                res = fut.result(WAIT)
            except TurtlesError as e:
                assert isinstance(e, SignatureError if kind == "forged" else HSMError), e
                continue
            assert kind != "forged"
            _assert_covered(log, res)
        assert told == list(range(len(steps)))
    finally:
        signer.open.set()
        log.close()
        r.db.close()
