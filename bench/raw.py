"""Raw limits: what this machine does without turtles, measured in the same run.

Each limit is the ceiling one part of the append path cannot beat:

* ``ed25519_verify_1t`` / ``ed25519_verify_2t`` -- Ed25519 verifications per second of a
  DSSE PAE the size of a typical attestation, ``cryptography`` called directly, one thread
  and two threads (it releases the GIL while verifying, so two threads use both cores).
  The append targets are ratios to ``ed25519_verify_2t``, the issue's definition.
* ``ed25519_verify_2t_libsodium`` -- the same through libsodium, the verifier turtles uses
  (``ledger._ed25519``; about twice as fast): how much of an append is the signature itself.
* ``p256_verify_1t`` / ``p256_verify_2t`` -- the same for ECDSA P-256 / SHA-256.
* ``ed25519_sign_1t`` -- software Ed25519 signatures per second (a checkpoint costs one).
* ``sha256_node`` -- RFC 9162 interior-node hashes per second (``SHA-256(0x01||l||r)``).
* ``leveldb_batch1000_sync`` -- puts per second in WriteBatches of 1,000 puts of entry-sized
  values, each batch synced; ``leveldb_put_sync`` -- synced single-put commits per second
  (the fsync rate, what a log without group commit could reach); ``leveldb_sync_tail_ms`` --
  the latency of those synced commits while another thread writes batches into the same
  store, opened as the ledger opens it, fast enough to fill and flush its memtable: the
  disk's share of a durable acknowledgement's tail (its p99 is over commits).
* ``leveldb_get_random`` -- point reads per second of random 32-byte values among 200,000
  keys laid out like stored hashes (what a proof is made of: one read per hash).
* ``softhsm_ed25519_sign`` / ``softhsm_p256_sign`` -- signatures per second from a SoftHSM2
  token through python-pkcs11 in one session, without turtles' checks around it.

Run alone: ``python -m bench.raw [--quick]``.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import plyvel
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pkcs11 import Mechanism, ObjectClass

from bench._harness import Context, limit, main
from bench._hsm import HSM_KEY_LABEL, softhsm_signer
from ledger._ed25519 import BACKEND, ed25519_verify
from ledger.hsm import Pkcs11Context, Pkcs11Signer
from ledger.keys import Algorithm
from ledger.store import LEVELDB_OPTIONS

ED25519_VERIFY_1T = "ed25519_verify_1t"
ED25519_VERIFY_US = "ed25519_verify_us"
ED25519_VERIFY_2T = "ed25519_verify_2t"
ED25519_SODIUM_2T = "ed25519_verify_2t_libsodium"
P256_VERIFY_1T = "p256_verify_1t"
P256_VERIFY_2T = "p256_verify_2t"
ED25519_SIGN_1T = "ed25519_sign_1t"
SHA256_NODE = "sha256_node"
LEVELDB_BATCH = "leveldb_batch1000_sync"
LEVELDB_PUT_SYNC = "leveldb_put_sync"
LEVELDB_SYNC_TAIL = "leveldb_sync_tail_ms"
FSYNC_STALLS = "fsync_stalls_per_min"
STALL_MS = 50.0
"""An fsync slower than this is a stall: the single-POST latency target's bound."""
LEVELDB_GET = "leveldb_get_random"
SOFTHSM_ED25519 = "softhsm_ed25519_sign"
SOFTHSM_P256 = "softhsm_p256_sign"

# A DSSE PAE of a typical in-toto attestation is ~400 bytes.
MESSAGE = b"DSSEv1 28 application/vnd.in-toto+json 380 " + os.urandom(380)


def threads_rate(n_threads: int, per_thread: int, work: Callable[[int], None]) -> float:
    """Operations per second of ``n_threads`` threads each running ``work(per_thread)``."""
    barrier = threading.Barrier(n_threads + 1)

    def body() -> None:
        barrier.wait()
        work(per_thread)

    threads = [threading.Thread(target=body) for _ in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return n_threads * per_thread / (time.perf_counter() - t0)


def _verify_limit(ctx: Context, key: str, threads: int, verify: Callable[[], None], n: int, what: str,
                  library: str = "cryptography") -> None:
    def work(count: int) -> None:
        for _ in range(count):
            verify()

    work(50)  # warm up
    values = [threads_rate(threads, n, work) for _ in range(ctx.reps(5, 9))]
    ctx.record_raw(key, values, "verifies/s", f"{what}, {threads} thread(s), {library}")


def _ed25519_verify() -> Callable[[], None]:
    key = ed25519.Ed25519PrivateKey.generate()
    sig, pub = key.sign(MESSAGE), key.public_key()
    return lambda: pub.verify(sig, MESSAGE)


def _p256_verify() -> Callable[[], None]:
    key = ec.generate_private_key(ec.SECP256R1())
    alg = ec.ECDSA(hashes.SHA256())
    sig, pub = key.sign(MESSAGE, alg), key.public_key()
    return lambda: pub.verify(sig, MESSAGE, alg)


@limit(ED25519_VERIFY_US)
def ed25519_verify_us(ctx: Context) -> None:
    """Microseconds for one bare Ed25519 verification of ~420 bytes (a time: the p99 column
    shows its fast tail). The unit query benchmarks (trust, provenance) are compared with."""
    verify = _ed25519_verify()
    n = 2_000
    values = []
    for _ in range(ctx.reps(5, 9)):
        t0 = time.perf_counter()
        for _ in range(n):
            verify()
        values.append((time.perf_counter() - t0) / n * 1e6)
    ctx.record_raw(ED25519_VERIFY_US, values, "us", "~420 B, cryptography, 1 thread")


@limit(ED25519_VERIFY_1T)
def ed25519_verify_1t(ctx: Context) -> None:
    """Ed25519 verifies/s, one thread."""
    _verify_limit(ctx, ED25519_VERIFY_1T, 1, _ed25519_verify(), ctx.reps(3000, 6000), "Ed25519 ~420 B")


@limit(ED25519_VERIFY_2T)
def ed25519_verify_2t(ctx: Context) -> None:
    """Ed25519 verifies/s, two threads: the raw limit the append targets are set against."""
    _verify_limit(ctx, ED25519_VERIFY_2T, 2, _ed25519_verify(), ctx.reps(3000, 6000), "Ed25519 ~420 B")


@limit(ED25519_SODIUM_2T)
def ed25519_sodium_2t(ctx: Context) -> None:
    """Ed25519 verifies/s, two threads, through the libsodium call turtles itself uses
    (``ledger._ed25519``): for reading how much of the append path is the signature."""
    key = ed25519.Ed25519PrivateKey.generate()
    sig = key.sign(MESSAGE)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    _verify_limit(ctx, ED25519_SODIUM_2T, 2, lambda: ed25519_verify(pub, sig, MESSAGE), ctx.reps(3000, 6000),
                  "Ed25519 ~420 B", library=BACKEND)


@limit(P256_VERIFY_1T)
def p256_verify_1t(ctx: Context) -> None:
    """ECDSA P-256 verifies/s, one thread."""
    _verify_limit(ctx, P256_VERIFY_1T, 1, _p256_verify(), ctx.reps(1500, 3000), "ECDSA P-256/SHA-256 ~420 B")


@limit(P256_VERIFY_2T)
def p256_verify_2t(ctx: Context) -> None:
    """ECDSA P-256 verifies/s, two threads."""
    _verify_limit(ctx, P256_VERIFY_2T, 2, _p256_verify(), ctx.reps(1500, 3000), "ECDSA P-256/SHA-256 ~420 B")


@limit(ED25519_SIGN_1T)
def ed25519_sign_1t(ctx: Context) -> None:
    """Software Ed25519 signatures/s, one thread."""
    key = ed25519.Ed25519PrivateKey.generate()
    n = ctx.reps(3000, 6000)
    values = []
    for _ in range(ctx.reps(5, 9)):
        t0 = time.perf_counter()
        for _ in range(n):
            key.sign(MESSAGE)
        values.append(n / (time.perf_counter() - t0))
    ctx.record_raw(ED25519_SIGN_1T, values, "signs/s", "Ed25519 ~420 B, cryptography, 1 thread")


@limit(SHA256_NODE)
def sha256_node(ctx: Context) -> None:
    """Interior-node hashes/s in Python (hashlib), one thread."""
    left, right = os.urandom(32), os.urandom(32)
    sha, prefix = hashlib.sha256, b"\x01"
    n = ctx.reps(200_000, 500_000)
    values = []
    for _ in range(ctx.reps(5, 9)):
        t0 = time.perf_counter()
        h = left
        for _ in range(n):
            h = sha(prefix + right + h).digest()
        values.append(n / (time.perf_counter() - t0))
    ctx.record_raw(SHA256_NODE, values, "hashes/s", "SHA-256(0x01||l||r), hashlib, 1 thread")


@limit(LEVELDB_BATCH)
def leveldb_batch(ctx: Context) -> None:
    """Puts/s in synced WriteBatches of 1,000 entry-sized values (one LevelDB, plyvel)."""
    db = plyvel.DB(str(ctx.scratch("raw-leveldb-batch")), create_if_missing=True)
    value = os.urandom(450)
    seq = 0
    values = []
    try:
        for _ in range(ctx.reps(7, 15)):
            t0 = time.perf_counter()
            with db.write_batch(transaction=True, sync=True) as wb:
                for _ in range(1000):
                    wb.put(b"e" + seq.to_bytes(8, "big"), value)
                    seq += 1
            values.append(1000 / (time.perf_counter() - t0))
    finally:
        db.close()
    ctx.record_raw(LEVELDB_BATCH, values, "puts/s", "1,000 x 450 B puts per synced WriteBatch")


@limit(LEVELDB_PUT_SYNC)
def leveldb_put_sync(ctx: Context) -> None:
    """Synced single-put commits/s (the fsync rate of the scratch file system)."""
    db = plyvel.DB(str(ctx.scratch("raw-leveldb-put")), create_if_missing=True)
    value = os.urandom(450)
    n = ctx.reps(100, 300)
    values = []
    try:
        for r in range(ctx.reps(5, 9)):
            t0 = time.perf_counter()
            for i in range(n):
                db.put(b"e" + (r * n + i).to_bytes(8, "big"), value, sync=True)
            values.append(n / (time.perf_counter() - t0))
    finally:
        db.close()
    ctx.record_raw(LEVELDB_PUT_SYNC, values, "commits/s", "one 450 B put per synced write")


@limit(LEVELDB_SYNC_TAIL)
def leveldb_sync_tail(ctx: Context) -> None:
    """Synced single-put latency under a background writer (the disk's part of an ack's tail)."""
    db = plyvel.DB(str(ctx.scratch("raw-leveldb-tail")), create_if_missing=True, **LEVELDB_OPTIONS)
    stop = threading.Event()
    blob = os.urandom(1000)

    def writer() -> None:  # ~1 KB puts in unsynced batches of 1,000: at most ~200 MB, at most 60 s
        deadline = time.monotonic() + 60
        for b in range(200):
            if stop.is_set() or time.monotonic() > deadline:
                return
            with db.write_batch() as wb:
                for i in range(1000):
                    wb.put(b"b" + (b * 1000 + i).to_bytes(8, "big"), blob)

    background = threading.Thread(target=writer, name="raw-tail-writer")
    value, latencies = os.urandom(450), []
    try:
        background.start()
        for i in range(ctx.reps(2000, 6000)):
            t0 = time.perf_counter()
            db.put(b"e" + i.to_bytes(8, "big"), value, sync=True)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        background.join(60)
        db.close()
    ctx.record_raw(LEVELDB_SYNC_TAIL, latencies, "ms",
                   f"one 450 B synced put, {len(latencies)} calls, while a thread writes 1,000-put batches "
                   f"into the same store (ledger options); max {max(latencies):.1f} ms", higher_is_better=False)


@limit(FSYNC_STALLS)
def fsync_stalls(ctx: Context) -> None:
    """How often the disk alone holds a durable acknowledgement's syncs past 50 ms.

    The node's syncs per group commit, with nothing else running: a 20 KB append to a log
    file and an ``fdatasync``, then a 48-byte in-place write and an ``fdatasync`` (the
    high-water mark), ~200 pairs a second. Every request waiting on a stalled sync waits it
    out, so with 50 clients one stall delays ~50 requests at once.
    """
    directory = ctx.scratch("raw-fsync-stalls")
    log_fd = os.open(directory / "log", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    mark_fd = os.open(directory / "mark", os.O_RDWR | os.O_CREAT, 0o644)
    window_s, windows = 5.0, ctx.reps(3, 12)
    counts, worst, pairs = [], 0.0, 0
    blob, mark = os.urandom(20_000), os.urandom(48)
    try:
        for _ in range(windows):
            end, stalls = time.monotonic() + window_s, 0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                os.write(log_fd, blob)
                os.fdatasync(log_fd)
                os.pwrite(mark_fd, mark, 0)
                os.fdatasync(mark_fd)
                took = (time.perf_counter() - t0) * 1000
                stalls += took > STALL_MS
                worst, pairs = max(worst, took), pairs + 1
                time.sleep(0.004)
            counts.append(stalls * 60 / window_s)
    finally:
        os.close(log_fd)
        os.close(mark_fd)
    ctx.record_raw(FSYNC_STALLS, counts, "stalls/min",
                   f"syncs of a 20 KB log append plus a 48 B mark taking over {STALL_MS:.0f} ms, alone on the "
                   f"disk, per {window_s:.0f} s window: {pairs} pairs, the slowest {worst:.0f} ms",
                   higher_is_better=False)


@limit(LEVELDB_GET)
def leveldb_get(ctx: Context) -> None:
    """Random point reads/s (plyvel ``get`` with checksums, one thread)."""
    db = plyvel.DB(str(ctx.scratch("raw-leveldb-get")), create_if_missing=True)
    keys = 200_000
    try:
        with db.write_batch() as wb:
            for i in range(keys):
                wb.put(b"h\x00" + i.to_bytes(8, "big"), os.urandom(32))
        db.compact_range()
        rng = random.Random(1)
        n = ctx.reps(20_000, 50_000)
        values = []
        for _ in range(ctx.reps(5, 9)):
            order = [b"h\x00" + rng.randrange(keys).to_bytes(8, "big") for _ in range(n)]
            t0 = time.perf_counter()
            for k in order:
                db.get(k, verify_checksums=True)
            values.append(n / (time.perf_counter() - t0))
    finally:
        db.close()
    ctx.record_raw(LEVELDB_GET, values, "gets/s", "random point reads, 200k keys, 32 B values, 1 thread")


def softhsm_rate(context: Pkcs11Context, signer: Pkcs11Signer, pin: str, n: int) -> float:
    """Raw C_Sign calls per second with ``signer``'s key, python-pkcs11 in one session."""
    alg = signer.public_key.alg
    data = hashlib.sha256(MESSAGE).digest() if alg == "p256" else MESSAGE
    mech = Mechanism.ECDSA if alg == "p256" else Mechanism.EDDSA

    def loop(session: Any) -> float:
        key_obj = session.get_key(ObjectClass.PRIVATE_KEY, label=HSM_KEY_LABEL)
        t0 = time.perf_counter()
        for _ in range(n):
            key_obj.sign(data, mechanism=mech)
        return n / (time.perf_counter() - t0)

    return context.with_session(signer.uri, loop, pin=pin)


def _softhsm_limit(ctx: Context, key: str, alg: Algorithm) -> None:
    with softhsm_signer(ctx, f"raw-{alg}", alg) as (context, signer, pin):
        values = [softhsm_rate(context, signer, pin, ctx.reps(300, 1000)) for _ in range(ctx.reps(5, 9))]
    ctx.record_raw(key, values, "signs/s", f"SoftHSM2 {alg}, python-pkcs11 C_Sign loop, 1 session")


@limit(SOFTHSM_ED25519)
def softhsm_ed25519(ctx: Context) -> None:
    """SoftHSM2 Ed25519 signatures/s."""
    _softhsm_limit(ctx, SOFTHSM_ED25519, "ed25519")


@limit(SOFTHSM_P256)
def softhsm_p256(ctx: Context) -> None:
    """SoftHSM2 ECDSA P-256 signatures/s."""
    _softhsm_limit(ctx, SOFTHSM_P256, "p256")


ALL = [
    ED25519_VERIFY_1T,
    ED25519_VERIFY_2T,
    P256_VERIFY_1T,
    P256_VERIFY_2T,
    ED25519_SIGN_1T,
    SHA256_NODE,
    LEVELDB_BATCH,
    LEVELDB_PUT_SYNC,
    LEVELDB_SYNC_TAIL,
    FSYNC_STALLS,
    LEVELDB_GET,
    SOFTHSM_ED25519,
    SOFTHSM_P256,
]


def run(ctx: Context) -> None:
    """Measure every raw limit."""
    for key in ALL:
        ctx.raw(key)


if __name__ == "__main__":
    sys.exit(main(run, "raw"))
