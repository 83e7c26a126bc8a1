"""Proof serving in-process: inclusion and consistency proofs from stored hashes.

Figures, on a log of ``SIZE`` entries (quick: 20,000; full: 200,000):

* ``inclusion`` -- :meth:`LogReader.inclusion_proof` for random indexes at the current size,
  one thread; target >= 5,000 proofs/s. Compared with random LevelDB point reads (a proof
  is about log2(size) of them).
* ``inclusion_2t`` -- the same from two threads.
* ``consistency`` -- :meth:`LogReader.consistency_proof` from a random older size.
* ``root_at`` -- the root of a random older tree.
* ``verify_inclusion`` -- the client's side: :func:`ledger.merkle.verify_inclusion`.
* ``entry_read`` -- :meth:`LogReader.entry` (read and strictly parse an entry).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable

from bench import raw
from bench._harness import Context, Figure, main, median_at_least
from bench._world import World, grow, open_world
from ledger import merkle
from ledger.reader import LogReader

TARGET_PROOFS = 5000


def rate(n: int, fn: Callable[[int], object], cpu: list[float] | None = None) -> float:
    """Calls per second of ``fn(i)`` for ``i`` in ``range(n)``; appends CPU us per call to ``cpu``.

    The CPU time is this thread's (``thread_time``): LevelDB's background compactions, busy
    after a large append, would otherwise be charged to the proofs.
    """
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(n):
        fn(i)
    if cpu is not None:
        cpu.append((time.thread_time() - c0) / n * 1e6)
    return n / (time.perf_counter() - t0)


def rate_threads(threads: int, n: int, fn: Callable[[int], object]) -> float:
    """Calls per second of ``fn`` from ``threads`` threads, ``n`` calls each."""

    def work(count: int) -> None:
        for i in range(count):
            fn(i)

    return raw.threads_rate(threads, n, work)


def measure_proofs(ctx: Context, log: LogReader, *, prefix: str = "", n: int | None = None) -> dict[str, Figure]:
    """Proof figures on ``log`` at its current size (also used by the growth benchmark)."""
    size = log.size
    rng = random.Random(size)
    n = n or ctx.reps(3000, 10000)
    reps = ctx.reps(5, 9)
    idx = [rng.randrange(size) for _ in range(n)]
    olds = [rng.randrange(1, size) for _ in range(n)]
    root = log.root_at(size)
    leaves = {i: log.entry(i).leaf_hash for i in idx[:200]}
    proofs = {i: log.inclusion_proof(i, size) for i in leaves}
    gets = math.ceil(math.log2(size))
    out: dict[str, Figure] = {}
    cpu: list[float] = []
    out["inclusion"] = ctx.record(
        f"{prefix}inclusion", [rate(n, lambda i: log.inclusion_proof(idx[i], size), cpu) for _ in range(reps)],
        "proofs/s", limit=raw.LEVELDB_GET, target=(f">= {TARGET_PROOFS} proofs/s", median_at_least(TARGET_PROOFS)),
        notes=f"size {size:,}, random index, 1 thread; ~{gets} stored hashes per proof, from the reader's "
              f"hash cache (LevelDB for the levels beyond its budget)",
    )
    out["inclusion_us"] = ctx.record(
        f"{prefix}inclusion_time", [1e6 / v for v in out["inclusion"].values], "us", higher_is_better=False,
        notes="wall time per proof (from the rate)",
    )
    out["inclusion_cpu"] = ctx.record(f"{prefix}inclusion_cpu", cpu, "cpu us", higher_is_better=False,
                                      notes="CPU time of the calling thread per proof")
    if not prefix:
        out["inclusion_2t"] = ctx.record(
            "inclusion_2t", [rate_threads(2, n // 2, lambda i: log.inclusion_proof(idx[i], size)) for _ in range(reps)],
            "proofs/s", limit=raw.LEVELDB_GET, notes="2 threads",
        )
    cpu = []
    out["consistency"] = ctx.record(
        f"{prefix}consistency", [rate(n, lambda i: log.consistency_proof(olds[i], size), cpu) for _ in range(reps)],
        "proofs/s", limit=raw.LEVELDB_GET, notes=f"size {size:,}, from a random older size",
    )
    out["consistency_us"] = ctx.record(
        f"{prefix}consistency_time", [1e6 / v for v in out["consistency"].values], "us", higher_is_better=False,
        notes="wall time per proof (from the rate)",
    )
    out["consistency_cpu"] = ctx.record(f"{prefix}consistency_cpu", cpu, "cpu us", higher_is_better=False,
                                        notes="CPU time of the calling thread per proof")
    if not prefix:
        ctx.record("root_at", [rate(n, lambda i: log.root_at(olds[i])) for _ in range(reps)], "roots/s",
                   limit=raw.LEVELDB_GET, notes="root of a random older tree from stored hashes")
        keys = list(leaves)
        ctx.record(
            "verify_inclusion",
            [rate(n, lambda i: merkle.verify_inclusion(leaves[keys[i % len(keys)]], keys[i % len(keys)], size,
                                                       proofs[keys[i % len(keys)]], root)) for _ in range(reps)],
            "verifies/s", limit=raw.SHA256_NODE, notes=f"client side, ~{gets} node hashes each",
        )
        ctx.record("entry_read", [rate(n, lambda i: log.entry(idx[i])) for _ in range(reps)], "entries/s",
                   limit=raw.LEVELDB_GET, notes="read + strict parse of one entry")
    return out


def run(ctx: Context) -> None:
    """Build a log, then measure proof serving on it."""
    size = ctx.reps(20_000, 200_000)
    world: World = open_world(ctx.scratch("proofs-db"))
    try:
        grow(world, size)
        measure_proofs(ctx, world.log)
    finally:
        world.close()


if __name__ == "__main__":
    sys.exit(main(run, "proofs"))
