"""H1/H2/W6 with real SoftHSM2 tokens: concurrency, a token pulled from under a live log, fork.

Already held by ``tests/ledger/test_hsm.py`` (and referenced by the scoreboard, not repeated
here): 16 threads signing through one context, a closed session re-opened, a finalised module
re-initialised, CKR_USER_ALREADY_LOGGED_IN as success and a lost login restored, a wrong PIN
(HSMError, PIN in no message or log line), non-extractable keys, bounded retries, fork after
C_Initialize with and without ``reset_on_fork``.

Here: many threads *and* many asyncio callers signing at once, and a log whose checkpoints an
HSM key signs under concurrent appends (H1); the token directory deleted under a live log:
appends fail with a clear HSMError, the entries stay durably sequenced, no checkpoint is
published over them, and a checkpoint covering them is signed once the token is back (W6);
fork while other threads are inside the module (H2). Every log line and error is checked for
the PIN.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, open_note
from ledger.entry import sign_record
from ledger.errors import HSMError, InputError, TurtlesError
from ledger.holdings import Holdings
from ledger.hsm import Pkcs11Context, Pkcs11Signer, RetryPolicy, generate_keypair
from ledger.keys import PublicKey, SoftwareSigner
from ledger.log import Log
from ledger.records import Delegation, RootRecord
from ledger.store import Database
from ledger.trust import RootsPolicy
from tests.reliability.nonce import repeated_nonces
from tests.reliability.scoreboard import Recorder
from tests.reliability.world import attestation, audit
from tests.softhsm import SoftHSMToken, make_token

PIN = "pin-7s3cr3t-9431"  # distinctive, so that a leak anywhere is found by substring
ORIGIN = "hsm.turtles/log"
FAST = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.05, call_timeout=30)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHSMToken:
    tok = make_token(tmp_path / "softhsm", pin=PIN)
    monkeypatch.setenv("SOFTHSM2_CONF", str(tok.conf_path))
    return tok


@pytest.fixture
def context(token: SoftHSMToken) -> Iterator[Pkcs11Context]:
    with Pkcs11Context(token.module, retry=FAST) as ctx:
        yield ctx


def _signer(ctx: Pkcs11Context, token: SoftHSMToken, label: str, alg: str = "ed25519") -> Pkcs11Signer:
    generate_keypair(ctx, token_label=token.label, label=label, alg=alg, pin=PIN)  # type: ignore[arg-type]
    return Pkcs11Signer(ctx, token.uri(label), pin=PIN)


def _no_pin(caplog: pytest.LogCaptureFixture, *errors: BaseException) -> None:
    """The PIN is in no log line and in no error, its cause chain, evidence or HTTP body."""
    assert PIN not in caplog.text
    for e in errors:
        seen: BaseException | None = e
        while seen is not None:
            shown = f"{seen}{seen!r}"
            if isinstance(seen, TurtlesError):
                shown += repr(seen.to_dict()) + repr(seen.evidence) + str(seen.hint)
            assert PIN not in shown, f"PIN leaked through {type(seen).__name__}"
            seen = seen.__cause__ or seen.__context__


# --- H1: threads and asyncio callers at once --------------------------------------------------


@pytest.mark.scenario("H1", outcome="survived")
def test_threads_and_asyncio_callers_sign_at_once(
    context: Pkcs11Context, token: SoftHSMToken, caplog: pytest.LogCaptureFixture, score: Recorder
) -> None:
    caplog.set_level(logging.DEBUG)
    signers = [_signer(context, token, "ed", "ed25519"), _signer(context, token, "ec", "p256")]
    results: list[tuple[PublicKey, bytes, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(9)

    def thread_work(n: int) -> None:
        try:
            start.wait(30)
            for i in range(25):
                s = signers[(n + i) % 2]
                data = f"thread {n} {i}".encode()
                sig = s.sign(data) if i % 5 else s.sign_many([data, data + b"!"])[0]
                with lock:
                    results.append((s.public_key, data, sig))
        except BaseException as e:
            with lock:
                errors.append(e)

    async def caller(n: int) -> tuple[PublicKey, bytes, bytes]:
        s = signers[n % 2]
        data = f"task {n}".encode()
        await asyncio.sleep(0)
        return s.public_key, data, await asyncio.to_thread(s.sign, data)

    async def many_callers() -> list[tuple[PublicKey, bytes, bytes]]:
        return list(await asyncio.wait_for(asyncio.gather(*(caller(n) for n in range(96))), 60))

    threads = [threading.Thread(target=thread_work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    start.wait(30)
    from_tasks = asyncio.run(many_callers())
    for t in threads:
        t.join(60)
    assert not errors, errors
    results += from_tasks
    assert len(results) == 8 * 25 + 96
    for key, data, sig in results:
        key.verify(signature=sig, data=data)
    assert repeated_nonces(results) == []  # C2: no r repeats across the HSM's P-256 signatures
    _no_pin(caplog)
    score.tried("H1", "survived", evidence=f"{len(results)} signatures from 8 threads and 96 asyncio callers verify")


def _world_log(db: Path, signer: Pkcs11Signer) -> tuple[Holdings, SoftwareSigner]:
    root, maint = SoftwareSigner.generate(), SoftwareSigner.generate()
    holdings = Holdings.open(db, origin=ORIGIN, signer=signer, roots=RootsPolicy.any_self_signed(), create=True)
    log = holdings.own
    assert log is not None
    log.append(sign_record(RootRecord("hsm", root.public_key, True, 1), [root]))
    log.append(sign_record(Delegation(
        issuer=root.key_id, subject=maint.public_key, name="maint", org="hsm", artefacts=("pkg-*",),
        purposes=("release",), max_depth=0, not_before=0, not_after=None, created=1), [root]))
    return holdings, maint


@pytest.mark.scenario("H1", outcome="survived")
def test_a_log_signs_checkpoints_with_an_hsm_key_under_concurrent_appends(
    context: Pkcs11Context, token: SoftHSMToken, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    score: Recorder,
) -> None:
    caplog.set_level(logging.DEBUG)
    signer = _signer(context, token, "log")
    side = _signer(context, token, "side", "p256")
    holdings, maint = _world_log(tmp_path / "db", signer)
    with holdings:
        log = holdings.own
        assert log is not None
        notes: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def appender(n: int) -> None:
            try:
                for i in range(15):
                    res = log.append(attestation(maint, n * 1000 + i), timeout=60)
                    side.sign(res.leaf_hash)  # other HSM work interleaved with checkpoint signing
                    with lock:
                        notes.append(res.checkpoint)
            except BaseException as e:
                with lock:
                    errors.append(e)

        threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert log.size == 2 + 8 * 15
        for note in set(notes):
            Checkpoint.parse(open_note(note, log.vkey))
        audit(log)
    _no_pin(caplog)
    score.tried("H1", "survived", evidence=f"{len(set(notes))} HSM-signed checkpoints over 120 concurrent appends verify")


# --- W6: the token disappears under a live log, then comes back -------------------------------


@pytest.mark.scenario("W6", outcome="detected")
def test_token_removed_under_a_live_log(
    token: SoftHSMToken, tmp_path: Path, caplog: pytest.LogCaptureFixture, score: Recorder
) -> None:
    """Appends during the outage fail with HSMError; their entries are durable and no checkpoint
    covers them; after the token is back (and the node restarts) a checkpoint covering them is
    signed, the audit passes and the resubmitted records are duplicates at their indexes."""
    caplog.set_level(logging.DEBUG)
    backup = tmp_path / "token-backup"
    with Pkcs11Context(token.module, retry=FAST) as ctx:
        holdings, maint = _world_log(tmp_path / "db", _signer(ctx, token, "log"))
        log = holdings.own
        assert log is not None
        before = log.store.latest_checkpoint()
        assert before is not None and before[0] == log.size == 2
        shutil.copytree(token.token_dir, backup)
        shutil.rmtree(token.token_dir)
        failures: list[HSMError] = []
        outage = [attestation(maint, i) for i in range(3)]
        for env in outage:
            started = time.monotonic()
            with pytest.raises(HSMError) as caught:
                log.append(env, timeout=60)
            assert time.monotonic() - started < 30
            failures.append(caught.value)
            assert "token 'test'" in caught.value.message
        # Durably sequenced, but no checkpoint published over them.
        assert log.size == 5
        assert log.store.latest_checkpoint() == before
        served = log.checkpoint()
        assert served is not None and Checkpoint.parse(open_note(served, log.vkey)).size == 2
        shutil.copytree(backup, token.token_dir)
        holdings.close()
    with Pkcs11Context(token.module, retry=FAST) as ctx:  # the node restarts
        signer = Pkcs11Signer(ctx, token.uri("log"), pin=PIN)
        with Holdings.open(tmp_path / "db", origin=ORIGIN, signer=signer, roots=RootsPolicy.any_self_signed()) as h:
            log2 = h.own
            assert log2 is not None
            assert log2.size == 5
            served = log2.checkpoint()
            assert served is not None
            cp = Checkpoint.parse(open_note(served, log2.vkey))
            assert cp.size == 5 and cp.root == log2.head.root
            audit(log2)
            for i, env in enumerate(outage):
                res = log2.append(env, timeout=60)
                assert (res.index, res.duplicate) == (2 + i, True)
    _no_pin(caplog, *failures)
    score.tried("W6", "detected", evidence=f"token gone: {failures[0].message[:100]}")


@pytest.mark.slow
@pytest.mark.scenario("W6", outcome="survived")
def test_token_back_without_a_restart_signs_again(token: SoftHSMToken, tmp_path: Path) -> None:
    backup = tmp_path / "token-backup"
    with Pkcs11Context(token.module, retry=FAST) as ctx:
        holdings, maint = _world_log(tmp_path / "db", _signer(ctx, token, "log"))
        with holdings:
            log = holdings.own
            assert log is not None
            shutil.copytree(token.token_dir, backup)
            shutil.rmtree(token.token_dir)
            with pytest.raises(HSMError):
                log.append(attestation(maint, 1), timeout=60)
            shutil.copytree(backup, token.token_dir)
            deadline = time.monotonic() + 10
            while True:  # bounded: a few appends within 10 s
                try:
                    res = log.append(attestation(maint, int(time.monotonic() * 1000)), timeout=30)
                    break
                except HSMError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            assert Checkpoint.parse(open_note(res.checkpoint, log.vkey)).size == log.size


# --- H2: fork while other threads are inside the module ---------------------------------------


@pytest.mark.scenario("H2", outcome="survived")
def test_fork_while_other_threads_are_signing(context: Pkcs11Context, token: SoftHSMToken, score: Recorder) -> None:
    """A child forked while the worker thread is mid-call must sign cleanly or fail with a
    clear HSMError within bounded time; never hang on a lock the parent's threads held."""
    signer = _signer(context, token, "root", "p256")
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            signer.sign(b"busy")

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for t in threads:
        t.start()
    outcomes = []
    try:
        for _ in range(3):
            time.sleep(0.05)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: report through the pipe, never return into pytest
                signal.alarm(20)
                try:
                    os.close(read_end)
                    sig = signer.sign(b"child")
                    msg = b"S" + sig
                except HSMError as e:
                    msg = b"E" + e.message.encode()
                except BaseException as e:
                    msg = b"X" + repr(e).encode()
                os.write(write_end, msg)
                os._exit(0)
            os.close(write_end)
            deadline = time.monotonic() + 30
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            if done[0] == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            with os.fdopen(read_end, "rb") as inp:
                result = inp.read()
            assert done[0] != 0, "forked child hung"
            assert result[:1] in (b"S", b"E"), result
            if result[:1] == b"S":
                signer.public_key.verify(signature=result[1:], data=b"child")
            outcomes.append(result[:1].decode())
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    signer.public_key.verify(signature=signer.sign(b"parent"), data=b"parent")
    score.tried("H2", "survived", evidence=f"3 forks mid-signing: child outcomes {outcomes}")


@pytest.mark.scenario("C3", outcome="detected")
def test_log_refuses_an_hsm_key_of_the_wrong_kind(context: Pkcs11Context, token: SoftHSMToken, tmp_path: Path) -> None:
    """C3: a P-256 HSM key cannot sign C2SP notes; the log refuses it before writing anything."""
    signer = _signer(context, token, "ec", "p256")
    with Database(tmp_path / "db") as db:
        with pytest.raises(InputError, match="Ed25519"):
            Log.create(db, ORIGIN, signer=signer, gate=None)  # type: ignore[arg-type]
        assert db.origins() == []
