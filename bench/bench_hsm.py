"""Checkpoints signed through PKCS#11 (SoftHSM2) versus a software key.

The log signs one checkpoint per group commit, so the token's signing rate should never
limit appends. Figures:

* ``sign_many`` -- :meth:`Pkcs11Signer.sign_many` signatures per second (each checked by
  turtles against the public key), against the raw SoftHSM2 Ed25519 rate.
* ``checkpoint_hsm`` / ``checkpoint_soft`` -- one signed checkpoint note, microseconds.
* ``batch_soft`` / ``batch_hsm`` and ``threads_soft`` / ``threads_hsm`` -- append
  throughput of two logs that differ only in their log key, repetitions interleaved;
  ``*_hsm_vs_soft`` is their ratio. ``batch_hsm_vs_soft`` has the target (>= 0.9: close).
  ``threads_hsm_vs_soft`` (32 threads in this process, each appending one envelope at a
  time) is reported without one: there the sequencer is the bottleneck, and the figure
  reads the token's *latency* on its path (each commit waits ~0.4 ms for a signature, and
  then for the GIL, which python-pkcs11 let go), not its rate, which is busy 14-18% of the
  time. The issue's shape of it -- one-at-a-time appends from many clients -- is measured
  end to end by ``node_single_hsm_vs_soft`` below (docs/performance.md, HSM).
* ``checkpoints_per_s`` -- checkpoints the HSM log signed per second in the threads run,
  and ``hsm_busy`` the share of the token's capacity that used.
* ``node_single_*`` / ``node_batch_*`` -- the same comparison end to end: two node
  processes that differ only in where their log key is (a PEM file, a SoftHSM2 token),
  single POSTs from 50 clients and 500-envelope batches, repetitions interleaved;
  ``*_hsm_vs_soft`` their ratio (target >= 0.9).
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bench import raw
from bench._harness import Context, main, median_at_least
from bench._hsm import node_token, softhsm_signer
from bench._world import (
    LOG_KEY,
    ORIGIN,
    World,
    attestations,
    bootstrap_envelopes,
    ensure_signed,
    open_world,
)
from bench.bench_append import append_batch_pool, append_threads
from bench.bench_http import BATCH_IN_FLIGHT, WARM_UP, Node, client, warm_up
from ledger.checkpoint import Checkpoint, note_signer, sign_note
from ledger.keys import Signer

TARGET_CLOSE = 0.9


def checkpoint_us(signer: Signer, n: int) -> float:
    """Microseconds to sign one checkpoint note with ``signer``."""
    ns = note_signer(ORIGIN, signer)
    t0 = time.perf_counter()
    for i in range(n):
        sign_note(Checkpoint(ORIGIN, i + 1, bytes(32)).to_text(), [ns])
    return (time.perf_counter() - t0) / n * 1e6


def run(ctx: Context) -> None:
    """Compare a SoftHSM2-signed log with a software-signed one."""
    reps, n = ctx.reps(7, 9), ctx.reps(2000, 5000)  # short repetitions, many: the ratio's median is steadier
    threads = 32
    ensure_signed(2 * reps * n + 10)
    with softhsm_signer(ctx, "log", "ed25519") as (context, hsm, pin):
        batch = 200
        values, paired = [], []
        for _ in range(ctx.reps(5, 9)):
            paired.append(raw.softhsm_rate(context, hsm, pin, batch))
            t0 = time.perf_counter()
            hsm.sign_many([raw.MESSAGE] * batch)
            values.append(batch / (time.perf_counter() - t0))
        ctx.record_raw(f"{raw.SOFTHSM_ED25519}_paired", paired, "signs/s",
                       "SoftHSM2 Ed25519 C_Sign loop on the log's token, right before each sign_many")
        ctx.record("sign_many", values, "signs/s", limit=f"{raw.SOFTHSM_ED25519}_paired", paired=True,
                   notes=f"{batch} per call, one worker-thread trip, each signature verified in software")
        cp_hsm = [checkpoint_us(hsm, 100) for _ in range(ctx.reps(5, 9))]
        cp_soft = [checkpoint_us(LOG_KEY, 100) for _ in range(ctx.reps(5, 9))]
        ctx.record("checkpoint_hsm", cp_hsm, "us", higher_is_better=False, notes="one signed note, SoftHSM2 key")
        ctx.record("checkpoint_soft", cp_soft, "us", higher_is_better=False, notes="one signed note, software key")
        soft_w: World = open_world(ctx.scratch("hsm-soft-db"))
        hsm_w: World = open_world(ctx.scratch("hsm-hsm-db"), log_key=hsm)
        try:
            rates: dict[str, list[float]] = {k: [] for k in ("batch_soft", "batch_hsm", "threads_soft", "threads_hsm")}
            cps: list[float] = []
            at = 0
            with ThreadPoolExecutor(2) as pool:
                for _ in range(reps):
                    envs = list(attestations(at, at + n))
                    at += n
                    for name, w in (("batch_soft", soft_w), ("batch_hsm", hsm_w)):
                        t0 = time.perf_counter()
                        append_batch_pool(w.log, envs, pool)
                        rates[name].append(n / (time.perf_counter() - t0))
                    envs = list(attestations(at, at + n))
                    at += n
                    for name, w in (("threads_soft", soft_w), ("threads_hsm", hsm_w)):
                        before = sum(1 for _ in w.log.store.checkpoints())
                        t0 = time.perf_counter()
                        rate, _ = append_threads(w.log, envs, threads)
                        took = time.perf_counter() - t0
                        rates[name].append(rate)
                        if name == "threads_hsm":
                            cps.append((sum(1 for _ in w.log.store.checkpoints()) - before) / took)
        finally:
            soft_w.close()
            hsm_w.close()
    for name, values in rates.items():
        ctx.record(name, values, "records/s", notes="2-thread pool batch" if name.startswith("batch")
                   else f"{threads} threads calling append()")
    for mode in ("batch", "threads"):
        ratio = [h / s for h, s in zip(rates[f"{mode}_hsm"], rates[f"{mode}_soft"], strict=True)]
        judged = mode == "batch"  # threads: the token's latency on a sequencer-bound path (see above)
        ctx.record(f"{mode}_hsm_vs_soft", ratio, "x",
                   target=(f">= {TARGET_CLOSE}", median_at_least(TARGET_CLOSE)) if judged else None,
                   notes="HSM-signed log rate / software-signed log rate, paired repetitions"
                         + ("" if judged else "; no target: see node_single_hsm_vs_soft for the end-to-end one"))
    ctx.record("checkpoints_per_s", cps, "checkpoints/s", notes=f"signed by the HSM log during threads_{threads}")
    busy = [c * statistics.median(cp_hsm) / 1e6 for c in cps]
    ctx.record("hsm_busy", busy, "share", higher_is_better=False,
               notes="checkpoints/s x time per HSM checkpoint: the token's capacity the log used")
    node_rates(ctx)


def node_rates(ctx: Context) -> None:
    """Single POSTs and batches against a software-keyed and a token-keyed node, interleaved."""
    reps, n_single, n_batch = ctx.reps(3, 5), ctx.reps(5000, 10000), ctx.reps(10000, 40000)
    ensure_signed(WARM_UP + reps * (n_single + n_batch))
    keyref, env = node_token(ctx, "node")
    nodes = {"soft": Node(ctx, name="node-soft")}
    try:
        nodes["hsm"] = Node(ctx, name="node-hsm", log_key=keyref, env=env)
    except BaseException:
        nodes["soft"].stop()
        raise
    rates: dict[str, list[float]] = {f"{m}_{k}": [] for m in ("single", "batch") for k in nodes}
    try:
        for node in nodes.values():
            for env_ in bootstrap_envelopes():
                node.api.submit(env_)
            at = warm_up(node)
        for _ in range(reps):
            for kind, node in nodes.items():
                r = client(node.url, "single", n_single, start=at)
                rates[f"single_{kind}"].append(r["ok"] / r["elapsed_s"])
            at += n_single
            for kind, node in nodes.items():
                r = client(node.url, "batch", n_batch, start=at, concurrency=BATCH_IN_FLIGHT)
                rates[f"batch_{kind}"].append(n_batch / r["elapsed_s"])
            at += n_batch
    finally:
        for node in nodes.values():
            node.stop()
    for mode, what in (("single", "50 clients, one envelope per POST"),
                       ("batch", f"500 envelopes per POST, {BATCH_IN_FLIGHT} in flight")):
        for kind in nodes:
            ctx.record(f"node_{mode}_{kind}", rates[f"{mode}_{kind}"], "records/s",
                       notes=f"{what}; log key {'in a SoftHSM2 token' if kind == 'hsm' else 'in a PEM file'}")
        ratio = [h / s for h, s in zip(rates[f"{mode}_hsm"], rates[f"{mode}_soft"], strict=True)]
        ctx.record(f"node_{mode}_hsm_vs_soft", ratio, "x", target=(f">= {TARGET_CLOSE}", median_at_least(TARGET_CLOSE)),
                   notes="token-keyed node / software-keyed node, paired repetitions (node processes over HTTP)")


if __name__ == "__main__":
    sys.exit(main(run, "hsm"))
