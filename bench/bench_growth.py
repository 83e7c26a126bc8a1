"""Cost growth: how append, proofs, checkpoints, disk and memory scale with the log size.

One log grows through the sizes (quick: 10^4, 10^5; full: also 10^6; ``TURTLES_BENCH_SIZES``
overrides, e.g. ``10000,100000,1000000,10000000`` -- 10^7 takes hours on two cores and ~5
GiB of disk, so it is optional). At each size:

* ``append_rate`` -- :meth:`Log.append_many` of fresh attestations; ``append_ratio``, the
  same as a ratio to the raw two-thread Ed25519 rate measured right before, and
  ``append_cpu``, the process CPU time per entry -- what is compared across sizes, so that
  a noisy neighbour does not read as growth;
* ``append_latency`` -- one :meth:`Log.append` at a time: verify, commit, checkpoint, ack;
* ``inclusion_time`` / ``consistency_time`` -- per proof, random positions;
* ``checkpoint_time`` -- the root from stored hashes plus a signed note over it;
* ``disk_per_entry`` -- bytes on disk per entry over the mean raw entry (leaf) bytes, as
  the store is and after a LevelDB compaction; target <= 1.5;
* ``rss`` -- resident memory of the process (the trust graph holds every record; the reader's
  stored-hash cache, up to 64 bytes an entry, is named in the notes).

``growth.*`` figures divide the value at the largest size by the value at the smallest
(inverted for rates); target <= 1.5 (flat).
"""

from __future__ import annotations

import os
import sys
import time

from bench import raw
from bench._harness import Context, Figure, dir_bytes, main, median_at_most, rss_bytes
from bench._world import LOG_KEY, ORIGIN, World, attestations, ensure_signed, grow, open_world
from bench.bench_append import paired_verify_2t
from bench.bench_proofs import measure_proofs
from ledger.checkpoint import Checkpoint, note_signer, sign_note

TARGET_GROWTH = 1.5
TARGET_DISK = 1.5


def sizes(ctx: Context) -> list[int]:
    """The sizes to measure at, smallest first."""
    env = os.environ.get("TURTLES_BENCH_SIZES")
    if env:
        return sorted(int(x) for x in env.split(","))
    return [10_000, 100_000] if ctx.quick else [10_000, 100_000, 1_000_000]


def label(size: int) -> str:
    """``n1e4`` for 10,000."""
    exp = len(str(size)) - 1
    return f"n1e{exp}" if size == 10**exp else f"n{size}"


def _compact(world: World) -> None:
    # The benchmark reaches into the Database for LevelDB's compaction (not a ledger API).
    world.holdings.db._db.compact_range()


def measure_at(ctx: Context, world: World, size: int) -> dict[str, Figure]:
    """Every figure at the current size (it appends a few thousand entries on the way)."""
    log = world.log
    next_att = log.size - 2  # attestation i is entry i + 2: one contiguous run of records
    tag = label(size)
    figs: dict[str, Figure] = {}
    window, reps = ctx.reps(2000, 5000), ctx.reps(3, 5)
    ensure_signed(next_att + window * reps + 200)
    ratios, rates, cpu = [], [], []
    for _ in range(reps):
        limit = paired_verify_2t(ctx)
        envs = list(attestations(next_att, next_att + window))
        next_att += window
        c0, t0 = time.process_time(), time.perf_counter()
        log.append_many(envs)
        rate = window / (time.perf_counter() - t0)
        cpu.append((time.process_time() - c0) / window * 1e6)
        rates.append(rate)
        ratios.append(rate / limit)
    figs["append_rate"] = ctx.record(f"{tag}.append_rate", rates, "records/s",
                                     notes=f"append_many, {window} per repetition")
    figs["append_ratio"] = ctx.record(f"{tag}.append_ratio", ratios, "x raw",
                                      notes="append_rate / raw 2-thread Ed25519 rate measured just before")
    figs["append_cpu"] = ctx.record(f"{tag}.append_cpu", cpu, "cpu us/entry", higher_is_better=False,
                                    notes="process CPU (all threads, LevelDB's included) per appended entry")
    lat = []
    for env in attestations(next_att, next_att + 200):
        t0 = time.perf_counter()
        log.append(env)
        lat.append((time.perf_counter() - t0) * 1000)
    next_att += 200
    figs["append_latency"] = ctx.record(f"{tag}.append_latency", lat, "ms", higher_is_better=False,
                                        notes="one append() at a time (200 calls): verify, commit, checkpoint")
    proofs = measure_proofs(ctx, log, prefix=f"{tag}.", n=ctx.reps(2000, 5000))
    for key in ("inclusion_us", "consistency_us", "inclusion_cpu", "consistency_cpu"):
        figs[key.replace("_us", "_time")] = proofs[key]
    signer = note_signer(ORIGIN, LOG_KEY)
    current = log.size

    def checkpoint() -> None:
        sign_note(Checkpoint(ORIGIN, current, log.root_at(current)).to_text(), [signer])

    cp, cp_cpu = [], []
    for _ in range(ctx.reps(5, 9)):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(100):
            checkpoint()
        cp.append((time.perf_counter() - t0) / 100 * 1e6)
        cp_cpu.append((time.thread_time() - c0) / 100 * 1e6)
    figs["checkpoint_time"] = ctx.record(f"{tag}.checkpoint_time", cp, "us", higher_is_better=False,
                                         notes="root from stored hashes + signed C2SP note")
    figs["checkpoint_cpu"] = ctx.record(f"{tag}.checkpoint_cpu", cp_cpu, "cpu us", higher_is_better=False,
                                        notes="CPU time of the calling thread")
    raw_bytes = sum(len(e) for _, e in log.store.entries(0, log.size))
    mean_entry = raw_bytes / log.size
    live = dir_bytes(world.path)
    _compact(world)
    compacted = dir_bytes(world.path)
    figs["disk_live"] = ctx.record(f"{tag}.disk_per_entry_live", [live / log.size / mean_entry], "x raw",
                                   notes=f"{live / log.size:.0f} B/entry on disk as written; mean raw entry "
                                         f"{mean_entry:.0f} B")
    figs["disk"] = ctx.record(f"{tag}.disk_per_entry", [compacted / log.size / mean_entry], "x raw",
                              target=(f"<= {TARGET_DISK} x raw entry bytes", median_at_most(TARGET_DISK)),
                              notes=f"{compacted / log.size:.0f} B/entry after compaction "
                                    f"(entries, hashes, indexes, checkpoints)")
    rss = rss_bytes()
    figs["rss"] = ctx.record(f"{tag}.rss", [rss / 2**20], "MiB", higher_is_better=False,
                             notes=f"process RSS; {rss / log.size:.0f} B per entry, of which the stored-hash cache "
                                   f"{log.hash_cache_bytes / log.size:.0f} ({log.hash_cache_bytes / 2**20:.1f} MiB)")
    figs["rss_per_entry"] = ctx.record(f"{tag}.rss_per_entry", [rss / log.size], "B", higher_is_better=False)
    return figs


def run(ctx: Context) -> None:
    """Grow one log through the sizes, measuring at each."""
    ctx.raw(raw.ED25519_VERIFY_2T)
    ctx.raw(raw.LEVELDB_GET)
    world = open_world(ctx.scratch("growth-db"))
    at: dict[int, dict[str, Figure]] = {}
    try:
        for size in sizes(ctx):
            t0 = time.perf_counter()
            grow(world, size)
            built = time.perf_counter() - t0
            print(f"growth: {world.log.size:,} entries ({built:.0f} s to grow)", flush=True)
            at[size] = measure_at(ctx, world, size)
    finally:
        world.close()
    small, big = min(at), max(at)
    if small == big:
        return
    ctx.record("growth.sizes", [float(big / small)], "x", notes=f"{small:,} -> {big:,} entries")
    # Targets on CPU time and bytes: on a shared machine wall-clock ratios between two
    # moments swing by 2-4x with the neighbours' load; they are reported without a target.
    for key, inverse, judged in (
        ("append_cpu", False, True), ("inclusion_cpu", False, True), ("consistency_cpu", False, True),
        ("checkpoint_cpu", False, True), ("disk", False, True), ("rss_per_entry", False, True),
        ("append_ratio", True, False), ("append_latency", False, False), ("inclusion_time", False, False),
        ("consistency_time", False, False), ("checkpoint_time", False, False),
    ):
        a, b = at[small][key].median, at[big][key].median
        g = a / b if inverse else b / a
        ctx.record(f"growth.{key}", [g], "x", higher_is_better=False,
                   target=(f"<= {TARGET_GROWTH}", median_at_most(TARGET_GROWTH)) if judged else None,
                   notes=f"{a:,.4g} at {small:,} -> {b:,.4g} at {big:,}" + ("" if judged else " (wall clock)"))
    rss = [at[s]["rss"].median for s in sorted(at)]
    ctx.record("growth.rss", [rss[-1] / rss[0]], "x", higher_is_better=False,
               notes="absolute RSS: grows with the number of records the trust graph holds")


if __name__ == "__main__":
    sys.exit(main(run, "growth"))
