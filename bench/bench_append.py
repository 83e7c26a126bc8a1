"""In-process append throughput: every record verified, durable and checkpointed before ack.

Figures (each repetition appends fresh, distinct attestations to one growing log):

* ``threads_T`` -- T client threads each calling :meth:`Log.append` one envelope at a time
  (simulated concurrent clients); also their per-call latency.
* ``batch_pool2`` -- the client verifies with :meth:`Log.prepare` in a two-thread pool (in
  chunks) and submits everything: the best a thread pool does under the GIL.
* ``append_many`` -- :meth:`Log.append_many`, the bulk API, with one verifying worker
  process per CPU (``ledger.procverify``); target >= 0.7 x ``ed25519_verify_2t``. Also its
  CPU per entry, the log's process and its workers together.
* ``cpu_per_entry`` -- process CPU time per entry of ``batch_pool2`` (robust to a noisy
  machine), beside the CPU time of one raw Ed25519 verification.
* ``stage_*`` -- where the time goes: each step of the append path run alone, one thread,
  in microseconds per entry.

The raw two-thread verification rate is measured again right before each repetition
(``paired``), so that a noisy neighbour moves both sides of the ratio together.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric import ed25519

from bench import raw
from bench._harness import Context, main, process_cpu_s, ratio_at_least
from bench._world import LOG_KEY, ORIGIN, World, attestations, ensure_signed, open_world
from ledger import merkle
from ledger.checkpoint import Checkpoint, note_signer, sign_note
from ledger.entry import Entry, LoggedRecord, parse_record, record_id
from ledger.envelope import Envelope
from ledger.holdings import LogGate
from ledger.keys import KeyId
from ledger.log import AppendResult, Log, Prepared, index_rows, verify_envelope
from ledger.procverify import VerifierProcesses
from ledger.store import Batch, Database, Head
from ledger.trust import RootsPolicy

TARGET_BATCH = 0.7
CHUNK = 64
MAX_OUTSTANDING = 4096


class Feed:
    """Hands out fresh pre-signed attestations, each once."""

    def __init__(self, total: int) -> None:
        ensure_signed(total)
        self._it: Iterator[Envelope] = attestations(0, total)

    def take(self, n: int) -> list[Envelope]:
        """The next ``n`` envelopes."""
        return [next(self._it) for _ in range(n)]


def append_threads(log: Log, envs: Sequence[Envelope], threads: int) -> tuple[float, list[float]]:
    """Rate of ``threads`` clients each appending its share one by one; and their latencies."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def client(k: int) -> None:
        mine, lat = envs[k::threads], latencies[k]
        barrier.wait()
        for env in mine:
            t0 = time.perf_counter()
            log.append(env)
            lat.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return len(envs) / (time.perf_counter() - t0), [x for lat in latencies for x in lat]


def prepare_chunk(log: Log, envs: Sequence[Envelope]) -> list[Prepared]:
    """Verify a chunk of envelopes (runs in the client's pool)."""
    return [log.prepare(e) for e in envs]


def append_batch_pool(log: Log, envs: Sequence[Envelope], pool: ThreadPoolExecutor) -> None:
    """Verify in ``pool`` (chunks, in order), submit each as soon as it is verified, wait for all."""
    chunks = [envs[i : i + CHUNK] for i in range(0, len(envs), CHUNK)]
    futures: list[Future[AppendResult]] = []
    waited = 0
    for chunk, prepared in zip(chunks, pool.map(lambda c: prepare_chunk(log, c), chunks), strict=True):
        for e, p in zip(chunk, prepared, strict=True):
            while len(futures) - waited >= MAX_OUTSTANDING:  # stay under the log's queue bound
                futures[waited].result()
                waited += 1
            futures.append(log.submit(e, p))
    for f in futures[waited:]:
        f.result()


def paired_verify_2t(ctx: Context) -> float:
    """A short measurement of the raw two-thread Ed25519 rate (interleaved with figures)."""
    key = ed25519.Ed25519PrivateKey.generate()
    sig, pub = key.sign(raw.MESSAGE), key.public_key()

    def work(n: int) -> None:
        for _ in range(n):
            pub.verify(sig, raw.MESSAGE)

    return raw.threads_rate(2, ctx.reps(1500, 3000), work)


def raw_verify_cpu_us(n: int = 2000) -> float:
    """CPU microseconds of one raw Ed25519 verification (one thread)."""
    key = ed25519.Ed25519PrivateKey.generate()
    sig, pub = key.sign(raw.MESSAGE), key.public_key()
    c0 = time.thread_time()
    for _ in range(n):
        pub.verify(sig, raw.MESSAGE)
    return (time.thread_time() - c0) / n * 1e6


def _cpu_with_workers(procs: VerifierProcesses | None) -> float:
    """CPU seconds of this process and of its verifying workers (from /proc)."""
    total = time.process_time()
    pool = procs._pool if procs is not None else None
    # A worker that ended counts 0 (its CPU is lost to this figure).
    return total + sum(process_cpu_s(pid) for pid in list(getattr(pool, "_processes", None) or {}))


def run_throughput(ctx: Context, world: World, feed: Feed) -> None:
    """Threads, pool batch and append_many, with paired raw limits."""
    log = world.log
    reps = ctx.reps(3, 7)
    n = ctx.reps(3000, 8000)
    threads = (32,) if ctx.quick else (8, 32, 128)
    log.append_many(feed.take(500))  # warm up (pool, caches, LevelDB files)
    paired: list[float] = []
    batch, many, cpu, many_cpu = [], [], [], []
    by_threads: dict[int, tuple[list[float], list[float]]] = {t: ([], []) for t in threads}
    with ThreadPoolExecutor(2) as pool:
        log.append_many(feed.take(600))  # start the workers
        for _ in range(reps):
            paired.append(paired_verify_2t(ctx))
            envs = feed.take(n)
            c0, t0 = time.process_time(), time.perf_counter()
            append_batch_pool(log, envs, pool)
            batch.append(n / (time.perf_counter() - t0))
            cpu.append((time.process_time() - c0) / n * 1e6)
            envs = feed.take(n)
            c0, t0 = _cpu_with_workers(world.holdings.procs), time.perf_counter()
            results = log.append_many(envs)
            many.append(n / (time.perf_counter() - t0))
            many_cpu.append((_cpu_with_workers(world.holdings.procs) - c0) / n * 1e6)
            bad = [r for r in results if not isinstance(r, AppendResult)]
            if bad:
                raise RuntimeError(f"append_many refused {len(bad)} fresh records: {bad[0]}")
            for t in threads:
                rate, lat = append_threads(log, feed.take(n), t)
                by_threads[t][0].append(rate)
                by_threads[t][1].extend(lat)
    two = statistics.median(paired)
    ctx.record_raw(f"{raw.ED25519_VERIFY_2T}_paired", paired, "verifies/s",
                   "Ed25519, 2 threads, measured right before each append repetition")
    ctx.record("batch_pool2", batch, "records/s", limit=f"{raw.ED25519_VERIFY_2T}_paired", paired=True,
               notes=f"prepare() in a 2-thread pool ({CHUNK}/task), submit all, wait (threads only)")
    workers = world.holdings.procs.workers if world.holdings.procs is not None else 0
    ctx.record("append_many", many, "records/s", limit=f"{raw.ED25519_VERIFY_2T}_paired", paired=True,
               target=(f">= {TARGET_BATCH} x raw 2-thread Ed25519 verify", ratio_at_least(TARGET_BATCH)),
               notes=f"Log.append_many, {n} per call, verified by {workers} worker processes")
    ctx.record("append_many_cpu", many_cpu, "cpu us", higher_is_better=False,
               notes="CPU per entry of append_many: the log's process and its verifying workers")
    for t, (rates, lat) in by_threads.items():
        ctx.record(f"threads_{t}", rates, "records/s", limit=f"{raw.ED25519_VERIFY_2T}_paired", paired=True,
                   notes=f"{t} threads each calling append() one by one")
        ms = [x * 1000 for x in lat]
        ctx.record(f"threads_{t}_latency", ms, "ms", higher_is_better=False,
                   notes=f"per append() call, all {len(ms)} calls (p99 over calls)")
    verify_us = raw_verify_cpu_us()
    ctx.record("cpu_per_entry", cpu, "cpu us", higher_is_better=False,
               notes=f"process CPU per entry of batch_pool2; one raw Ed25519 verify = {verify_us:.0f} cpu us "
                     f"(CPU efficiency {verify_us / statistics.median(cpu):.2f})")
    if two:
        print(f"  (2 x the 2-thread rate / batch rate: {2 * two / statistics.median(batch):.2f}; "
              f"ceiling from CPU: {verify_us / statistics.median(cpu):.2f})")


def run_stages(ctx: Context, world: World, feed: Feed) -> None:
    """Each step of the append path alone, one thread, microseconds per entry."""
    n = ctx.reps(2000, 5000)
    envs = feed.take(n)
    gate = LogGate(RootsPolicy.any_self_signed())
    for rec in world.log.logged_records(0, 2):
        gate.add(rec)
    kid = KeyId(envs[0].signatures[0].keyid)
    key = gate.public_key(kid)
    assert key is not None
    keys = {kid: key}
    at = int(time.time() * 1000)
    db = Database(ctx.scratch("stages-db"))
    store = db.log(ORIGIN)
    store.create({"origin": ORIGIN, "vkey": world.log.vkey, "kind": "own"})
    signer = note_signer(ORIGIN, LOG_KEY)
    state: dict[str, object] = {}

    def prepared() -> list[Prepared]:
        return state["prepared"]  # type: ignore[return-value]

    def entries() -> list[Entry]:
        return state["entries"]  # type: ignore[return-value]

    def stage_verify() -> None:
        state["prepared"] = [verify_envelope(gate, e) for e in envs]

    def stage_entries() -> None:
        state["entries"] = [Entry.build(seq=i, prev=bytes(32), ts=at, envelope=e) for i, e in enumerate(envs)]

    def admit_all() -> None:
        for p in prepared():
            gate.admit(record=p.record, signers=p.signers, origin=ORIGIN, at=at)

    def add_all() -> None:
        for i, (e, p) in enumerate(zip(entries(), prepared(), strict=True)):
            gate.add(LoggedRecord(ORIGIN, i + 2, at, e.leaf_hash, p.signers, p.record, p.record_id))

    def commit() -> None:
        for lo in range(0, n, 100):
            es = entries()[lo : lo + 100]
            hashes = merkle.stored_hashes_for_leaves(lo, [e.leaf_hash for e in es], store.hashes)
            rows = [r for i, p in enumerate(prepared()[lo : lo + 100], lo) for r in index_rows(i, p)]
            store.commit(Batch([(e.seq, e.raw) for e in es], hashes, rows, Head(lo + len(es), bytes(32), bytes(32))))

    stages: list[tuple[str, Callable[[], object], int]] = [
        ("verify_envelope", stage_verify, n),
        ("  envelope_verify", lambda: [e.verify(keys) for e in envs], n),
        ("  parse_record", lambda: [parse_record(e) for e in envs], n),
        ("  record_id", lambda: [record_id(e.payload_type, e.payload) for e in envs], n),
        ("admit", admit_all, n),
        ("entry_build", stage_entries, n),
        ("index_rows", lambda: [index_rows(i, p) for i, p in enumerate(prepared())], n),
        ("merkle_hashes", lambda: merkle.stored_hashes_for_leaves(0, [e.leaf_hash for e in entries()], lambda c: []), n),
        ("trust_graph_add", add_all, n),
        ("leveldb_commit_100", commit, n),
        ("checkpoint_sign", lambda: [sign_note(Checkpoint(ORIGIN, i + 1, bytes(32)).to_text(), [signer])
                                     for i in range(200)], 200),
    ]
    try:
        for name, fn, count in stages:
            values = []
            for _ in range(ctx.reps(3, 5)):
                c0 = time.thread_time()  # this thread only: not LevelDB's background compactions
                fn()
                values.append((time.thread_time() - c0) / count * 1e6)
            unit = "cpu us/checkpoint" if name == "checkpoint_sign" else "cpu us/entry"
            ctx.record(f"stage_{name.strip()}", values, unit, higher_is_better=False,
                       notes="one thread, alone" + (" (part of verify_envelope)" if name.startswith("  ") else ""))
    finally:
        db.close()


def run(ctx: Context) -> None:
    """Throughput (threads, pool batch, append_many), CPU per entry, and the stage profile."""
    reps, n = ctx.reps(3, 7), ctx.reps(3000, 8000)
    threads = 1 if ctx.quick else 3
    feed = Feed(1100 + reps * n * (2 + threads) + ctx.reps(2000, 5000))
    ctx.raw(raw.ED25519_VERIFY_2T)
    ctx.raw(raw.ED25519_SODIUM_2T)
    world = open_world(ctx.scratch("append-db"), verify_processes=os.cpu_count() or 2)
    try:
        run_throughput(ctx, world, feed)
        run_stages(ctx, world, feed)
        ctx.record("log_size", [float(world.log.size)], "entries", notes="entries appended by this module")
    finally:
        world.close()


__all__ = ["Feed", "append_batch_pool", "append_threads", "paired_verify_2t", "run"]


if __name__ == "__main__":
    sys.exit(main(run, "append"))
