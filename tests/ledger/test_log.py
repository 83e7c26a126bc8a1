"""The Log: verified, chained, durable appends; reads; proofs; bad input; restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import merkle
from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.checkpoint import Checkpoint, open_note
from ledger.encoding import encode
from ledger.entry import Entry, sign_record
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.errors import (
    EncodingError,
    EnvelopeError,
    HSMError,
    InputError,
    NotAdmittedError,
    RecordError,
    ScopeError,
    SignatureError,
    StoreLockedError,
    TooLargeError,
    UnavailableError,
)
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy
from tests.ledger.conftest import ORIGIN, World, delegation_envelope, root_envelope


def _root_of(world: World, size: int) -> bytes:
    cp = Checkpoint.parse(open_note(world.log.checkpoint(), world.log.vkey))
    assert cp.size == size
    return cp.root


def test_append_chains_proves_and_indexes(world: World) -> None:
    env = world.attest("pkg-1")
    res = world.log.append(env)
    assert res.index == 2 and res.size == 3 and not res.duplicate
    entry = world.log.entry(2)
    assert entry.envelope == env and entry.prev == world.log.entry(1).leaf_hash
    assert world.log.entry(0).prev == bytes(32)
    root = _root_of(world, 3)
    merkle.verify_inclusion(res.leaf_hash, 2, 3, world.log.inclusion_proof(2, 3), root)
    # Every past size proves consistent with the current one.
    for m in range(4):
        merkle.verify_consistency(m, 3, world.log.consistency_proof(m, 3), world.log.root_at(m), root)
    digest = json.loads(env.payload)["subject"][0]["digest"]["sha256"]
    assert world.log.by_artefact(digest) == [2]
    assert world.log.by_key(world.maint.key_id) == [1, 2]  # delegated to, then signed


def test_checkpoint_is_signed_by_log_key_over_the_root(world: World) -> None:
    note = world.log.checkpoint()
    cp = Checkpoint.parse(open_note(note, world.log.vkey))
    assert (cp.origin, cp.size) == (ORIGIN, 2)
    leaves = [world.log.entry(i).leaf_hash for i in range(2)]
    assert cp.root == merkle.root_hash(leaves)


def test_roots_match_reference_tree_at_every_size(world: World) -> None:
    world.log.append_many([world.attest(f"pkg-{i}") for i in range(40)])
    leaves = [e.leaf_hash for e in world.log.entries(0, world.log.size)]
    for n in range(world.log.size + 1):
        assert world.log.root_at(n) == merkle.root_hash(leaves[:n])
    for i in (0, 7, 41):
        assert world.log.inclusion_proof(i, 42) == merkle.inclusion_proof(leaves, i, 42)


def test_proofs_through_the_hash_cache_stay_right_as_the_log_grows(world: World) -> None:
    """The reader caches the top levels of stored hashes within a byte budget (brought up to
    the head as it grows, lowest levels dropped when over budget): proofs at every size,
    read before and after growth, equal the reference tree's, and the cache stays in budget."""
    log = world.log
    log.set_hash_cache_bytes(2000)  # small enough to go over it in this test
    for step in (30, 70, 200):
        log.append_many([world.attest(f"pkg-{step}-{i}") for i in range(step)])
        leaves = [e.leaf_hash for e in log.entries(0, log.size)]
        for size in sorted({s for s in (1, 2, 17, 33, 64, log.size // 2, log.size - 1) if s <= log.size} | {log.size}):
            for i in sorted({0, size // 3, size - 1}):
                assert log.inclusion_proof(i, size) == merkle.inclusion_proof(leaves, i, size), (i, size)
            for old in sorted({1, size // 2, size}):
                assert log.consistency_proof(old, size) == merkle.consistency_proof(leaves, old, size)
        assert 0 < log.hash_cache_bytes <= 2000


def _assert_refused(world: World, env: Envelope, error: type[Exception], words: str) -> None:
    size, note = world.log.size, world.log.checkpoint()
    with pytest.raises(error) as info:
        world.log.append(env)
    assert words in str(info.value)
    assert world.log.size == size and world.log.checkpoint() == note, "a refused record changed the log"


def test_bad_inputs_are_refused_with_specific_errors_and_nothing_is_appended(world: World) -> None:
    maint, root = world.maint, world.root
    stranger = SoftwareSigner.generate()
    good = world.attest("pkg-ok")
    # wrongly signed: a known key's signature over other bytes
    forged = Envelope(good.payload_type, good.payload,
                      (Signature(maint.key_id, maint.sign(b"something else")),))
    _assert_refused(world, forged, SignatureError, "does not verify")
    # unknown signer
    _assert_refused(world, world.attest("pkg-x", signer=stranger), SignatureError, "no signature by a known key")
    # out of scope: the maintainer may only release pkg-*
    _assert_refused(world, world.attest("other-1"), ScopeError, "not delegated for artefact 'other-1'")
    # a delegate with max_depth 0 cannot delegate further
    sub = SoftwareSigner.generate()
    _assert_refused(world, delegation_envelope(maint, sub), ScopeError, "")
    # malformed payloads of our own kinds
    truncated = sign_envelope(Delegation.payload_type(), encode({"issuer": root.key_id})[:-3], [root])
    _assert_refused(world, truncated, EncodingError, "truncated")
    nested: object = []
    for _ in range(40):
        nested = [nested]
    deep = sign_envelope(Delegation.payload_type(), encode_unchecked(nested), [root])
    _assert_refused(world, deep, EncodingError, "deeper")
    missing = sign_envelope(Delegation.payload_type(), encode({"issuer": root.key_id}), [root])
    _assert_refused(world, missing, RecordError, "subject")
    bad_json = sign_envelope(INTOTO, b'{"_type": ', [maint])
    _assert_refused(world, bad_json, RecordError, "not valid JSON")
    unknown_type = sign_envelope("text/plain", b"hi", [maint])
    _assert_refused(world, unknown_type, RecordError, "not a record type")
    # a root record not signed by its own key
    _assert_refused(world, sign_record(RootRecord("evil", stranger.public_key, False, 1), [root]),
                    SignatureError, "root record must be signed by")
    # and the log still works
    assert world.log.append(good).index == 2


def encode_unchecked(value: object) -> bytes:
    """msgpack without the canonical encoder's depth check (to build hostile payloads)."""
    return bytes(msgpack.packb(value))


def test_oversized_and_malformed_envelopes_never_reach_the_log() -> None:
    with pytest.raises(TooLargeError):
        Envelope(INTOTO, b"x" * ((1 << 20) + 1), (Signature("k", b"s"),))
    with pytest.raises(EnvelopeError):
        Envelope.from_json(b'{"payloadType": "x", "payload": "aGk=", "signatures": []}')
    with pytest.raises(EnvelopeError):
        Envelope.from_json(b'{"payloadType": "x"')


def test_replayed_envelope_is_idempotent(world: World) -> None:
    env = world.attest("pkg-replay")
    first = world.log.append(env)
    again = world.log.append(env)
    assert again.duplicate and again.index == first.index and world.log.size == first.size
    world.reopen()
    after = world.log.append(env)
    assert after.duplicate and after.index == first.index


def test_concurrent_duplicates_get_one_index(world: World) -> None:
    env = world.attest("pkg-race")
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(world.log.append(env).index)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 12 and len(set(results)) == 1
    assert world.log.size == 3


def test_concurrent_writers_get_contiguous_indexes(world: World) -> None:
    per_thread = 60
    indexes: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(per_thread):
            res = world.log.append(world.attest(f"pkg-{t}-{i}"))
            with lock:
                indexes.append(res.index)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(indexes) == list(range(2, 2 + 8 * per_thread))
    leaves = [e.leaf_hash for e in world.log.entries(0, world.log.size)]
    assert _root_of(world, world.log.size) == merkle.root_hash(leaves)


def test_co_signed_envelope_is_a_new_entry_but_a_resubmission_is_not(world: World) -> None:
    second = SoftwareSigner.generate()
    world.log.append(delegation_envelope(world.root, second))
    env = world.attest("pkg-co")
    first = world.log.append(env)
    both = env.with_signature(second)
    res = world.log.append(both)
    assert not res.duplicate and res.index == first.index + 1
    assert world.log.append(both).duplicate


def test_state_survives_restart_and_timestamps_never_go_back(world: World) -> None:
    world.log.append(world.attest("pkg-a"))
    note, size = world.log.checkpoint(), world.log.size
    world.reopen()
    assert world.log.size == size and world.log.checkpoint() == note
    # the maintainer is still admitted after a restart (trust state replayed)
    res = world.log.append(world.attest("pkg-b"))
    ts = [e.ts for e in world.log.entries(0, world.log.size)]
    assert ts == sorted(ts)
    assert res.index == size


def test_clock_going_backwards_does_not_reorder_timestamps(tmp_path: Path) -> None:
    times = iter([5_000, 4_000, 3_000, 10_000] + [10_000] * 100)
    log_key, root = SoftwareSigner.generate(), SoftwareSigner.generate()
    with Holdings.open(tmp_path, origin=ORIGIN, signer=log_key, create=True,
                       clock=lambda: next(times)) as h:
        assert h.own is not None
        h.own.append(root_envelope(root))
        h.own.append(root_envelope(SoftwareSigner.generate(), "other"))
        h.own.append(root_envelope(SoftwareSigner.generate(), "third"))
        assert [e.ts for e in h.own.entries(0, 3)] == [5_000, 5_000, 5_000]


def test_opening_with_another_key_is_refused(world: World) -> None:
    world.holdings.close()
    with pytest.raises(InputError, match="was created with key"):
        Holdings.open(world.path, origin=ORIGIN, signer=SoftwareSigner.generate())
    world.holdings = Holdings.open(world.path, origin=ORIGIN, signer=world.log_key)


def test_a_second_process_gets_a_clear_lock_error(world: World) -> None:
    code = (
        "from ledger.store import Database\n"
        "from ledger.errors import StoreLockedError\n"
        f"try:\n    Database({str(world.path)!r})\nexcept StoreLockedError as e:\n    print('LOCKED', e.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.startswith("LOCKED") and "in use by another process" in out.stdout, out.stderr
    with pytest.raises(StoreLockedError):
        Holdings.open(world.path, origin=ORIGIN, signer=world.log_key)


def test_roots_policy_limits_which_roots_are_admitted(tmp_path: Path) -> None:
    allowed, other = SoftwareSigner.generate(), SoftwareSigner.generate()
    with Holdings.open(tmp_path, origin=ORIGIN, signer=SoftwareSigner.generate(), create=True,
                       roots=RootsPolicy.only_keys([allowed.key_id])) as h:
        assert h.own is not None
        h.own.append(root_envelope(allowed))
        with pytest.raises(NotAdmittedError):
            h.own.append(root_envelope(other, "other"))
        assert h.own.size == 1


def test_entries_are_exactly_the_leaf_bytes(world: World) -> None:
    raw = world.log.store.entry(1)
    assert Entry.from_bytes(raw).raw == raw
    assert merkle.leaf_hash(raw) == world.log.entry(1).leaf_hash


def test_duplicates_within_one_group_commit_are_answered_after_it_is_durable(world: World) -> None:
    # append_many queues everything before the sequencer wakes, so twins share a batch.
    for round_ in range(20):
        env = world.attest(f"pkg-twin-{round_}")
        results = world.log.append_many([env] * 5)
        assert all(not isinstance(r, Exception) for r in results), results
        indexes = {r.index for r in results}  # type: ignore[union-attr]
        assert len(indexes) == 1
        assert sum(r.duplicate for r in results) == 4  # type: ignore[union-attr]


def test_a_cancelled_submission_does_not_stop_the_sequencer(world: World) -> None:
    futures = [world.log.submit(world.attest(f"pkg-cancel-{i}")) for i in range(50)]
    cancelled = sum(f.cancel() for f in futures)
    kept = [f.result(30) for f in futures if not f.cancelled()]
    assert len(kept) + cancelled == 50
    # the sequencer is alive and indexes stay contiguous
    res = world.log.append(world.attest("pkg-after-cancel"))
    assert res.index == 2 + len(kept)


def test_append_many_when_a_chunk_ends_in_an_early_answer(world: World) -> None:
    # The sequencer answers a refusal or a duplicate of an old entry at once; append_many
    # waits only on the last request of each verified chunk (64), so those answers must
    # never be told before the requests ahead of them in the same batch are done.
    old = world.attest("pkg-old")
    world.log.append(old)
    for round_ in range(12):
        envs = [world.attest(f"pkg-{round_}-{i}") for i in range(256)]
        forged = envs[191]
        envs[63] = envs[255] = old  # the last of a chunk, and the very last one
        envs[127] = Envelope(forged.payload_type, forged.payload, (Signature(forged.signatures[0].keyid, bytes(64)),))
        results = world.log.append_many(envs)
        assert [i for i, r in enumerate(results) if not isinstance(r, AppendResult)] == [127]
        assert isinstance(results[127], SignatureError)
        assert results[63].duplicate and results[255].duplicate  # type: ignore[union-attr]


def test_append_result_appended_is_the_dataclass() -> None:
    made = AppendResult.appended(5, b"h" * 32, "note", 9)
    plain = AppendResult(5, b"h" * 32, "note", 9)
    assert made == plain and hash(made) == hash(plain) and vars(made) == vars(plain)
    assert not made.duplicate


class _FlakySigner(SoftwareSigner):
    """A software key whose next ``fail`` signatures raise HSMError, like a token gone away."""

    fail = 0

    def sign(self, data: bytes) -> bytes:
        if self.fail:
            self.fail -= 1
            raise HSMError("token 'test' is not present")
        return super().sign(data)


def test_each_batch_stores_its_checkpoint_and_one_that_is_not_signed_stores_none(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint is signed before the batch and written in it (one synced write); when the
    signature fails the batch is still sequenced durably but not acknowledged, no checkpoint
    covers it until the next one, and resubmitting it answers it as a duplicate (W6)."""
    key = _FlakySigner(Ed25519PrivateKey.generate())
    with Holdings.open(tmp_path / "flaky", origin=ORIGIN, signer=key, create=True,
                       roots=RootsPolicy.any_self_signed()) as holdings:
        log = holdings.own
        assert log is not None
        log.append(root_envelope(world.root))
        log.append(delegation_envelope(world.root, world.maint))
        size = log.size
        assert [n for n, _ in log.store.checkpoints()] == list(range(size + 1))  # one per batch

        def no_second_write(size: int, note: str) -> None:
            raise AssertionError("a checkpoint written apart from its batch")

        monkeypatch.setattr(log.store, "put_checkpoint", no_second_write)
        env = world.attest("pkg-unsigned")
        key.fail = 1
        with pytest.raises(HSMError):
            log.append(env)
        assert log.size == size + 1 and log.store.latest_checkpoint() == (size, log.checkpoint())
        r = log.append(world.attest("pkg-next"))
        assert (r.index, r.size) == (size + 1, size + 2) and log.store.checkpoint(size + 2) == r.checkpoint
        again = log.append(env)
        assert (again.index, again.duplicate, again.checkpoint) == (size, True, r.checkpoint)
        assert log.store.latest_checkpoint() == (size + 2, r.checkpoint)


def test_append_many_while_the_log_closes_answers_each_envelope_unavailable(world: World) -> None:
    """A bulk append whose verifying threads are shut down under it (the log closing) answers
    every envelope it could not verify with UnavailableError (503), never a RuntimeError."""
    envs = [world.attest(f"pkg-closing-{i}") for i in range(41)]
    assert isinstance(world.log.append_many(envs[:1])[0], AppendResult)  # its verifying threads run
    world.log._verifier.close()  # what Log.close does first, racing the next call
    envs = envs[1:]
    out = world.log.append_many(envs)
    assert len(out) == len(envs)
    assert all(isinstance(o, UnavailableError) and "closing" in o.message for o in out), out[:2]


class _CloseWhileQueueing:
    """Stands in for a log's queue lock: the first time the test's thread lets it go, it
    starts ``log.close()`` on another thread and gives it 0.5 s before letting go for real,
    so a close racing a submission gets every chance to run inside the submission's window."""

    def __init__(self, log: Log) -> None:
        self._lock = threading.Lock()
        self._log = log
        self._armed = threading.current_thread()
        self.closer: threading.Thread | None = None

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        if threading.current_thread() is self._armed and self.closer is None:
            self.closer = threading.Thread(target=self._log.close)
            self.closer.start()
            self.closer.join(0.5)
        self._lock.release()


def test_a_submission_racing_close_is_answered_or_refused_never_left_waiting(world: World) -> None:
    log = world.log
    race = _CloseWhileQueueing(log)
    log._queued_lock = race
    try:
        future = log.submit(world.attest("pkg-racing-close"))
    except UnavailableError:
        future = None  # refused: the close came first
    assert race.closer is not None
    race.closer.join(30)
    assert not race.closer.is_alive()
    if future is not None:  # queued ahead of close's stop: appended before the sequencer ends
        assert isinstance(future.result(timeout=10), AppendResult)
    with pytest.raises(UnavailableError):
        log.submit(world.attest("pkg-after-close"))
