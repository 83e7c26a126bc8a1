"""HTTP appends against a real node process on 127.0.0.1, driven by a separate client process.

* ``bare_get`` (raw limit ``http_bare_get``) -- GET / on a bare aiohttp server, 50
  concurrent connections from the same client program: what aiohttp itself does here.
* ``checkpoint_get`` -- GET /checkpoint on the node (its middleware, no ledger work).
* ``single_post`` -- 50 concurrent clients each POSTing one DSSE envelope at a time to
  ``/v1/entries`` (201 only once durable and checkpointed, with an inclusion proof);
  targets >= 2,000 records/s and p99 <= 50 ms, over 10,000 POSTs a repetition in both
  modes (one stalled sync holds all 50 clients at once; the raw ``fsync_stalls_per_min``
  says how often the disk alone stalls, and the notes give each repetition's p99).
* ``batch_post`` -- ``POST /v1/entries:batch`` with 500 envelopes per request (the canonical
  msgpack body ``NodeClient.submit_batch`` sends), 4 in flight
  (a bulk uploader keeping 2,000 envelopes outstanding, a quarter of ``limits.max_queue``;
  with 2 in flight the same node measured 25-45% fewer records/s, its workers idle while
  one request is answered and the next one parsed);
  target >= 0.7 x the raw two-thread Ed25519 rate measured right before each repetition;
  ``batch_post_{node,workers,client}_cpu``: where its CPU goes, per record.

Both processes share the machine's cores, as they would on one host.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

from bench import raw
from bench._harness import (
    Context,
    limit,
    main,
    median_at_least,
    p99_at_most,
    percentile,
    ratio_at_least,
)
from bench._node import ENV, ROOT, NodeProc, config_text
from bench._world import LOG_KEY, ORIGIN, bootstrap_envelopes, ensure_signed
from bench.bench_append import paired_verify_2t
from node.client import NodeClient
from node.config import CONFIG_NAME

HTTP_GET = "http_bare_get"
CONCURRENCY = 50
TARGET_RATE = 2000.0
TARGET_P99_MS = 50.0
TARGET_BATCH = 0.7
BATCH_IN_FLIGHT = 4


def client(url: str, mode: str, count: int, *, start: int = 0, concurrency: int = CONCURRENCY,
           batch: int = 500, body: str = "msgpack") -> dict[str, Any]:
    """Run the load generator process once and return its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "bench._http_client", "--url", url, "--mode", mode, "--count", str(count),
         "--start", str(start), "--concurrency", str(concurrency), "--batch", str(batch), "--body", body],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator ({mode}, {count} from {start}) exited {done.returncode}: "
                           f"{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"]:
        raise RuntimeError(f"{mode}: {result['errors']} of {result['count']} failed: {result['statuses']}")
    return result


@limit(HTTP_GET)
def bare_get(ctx: Context) -> None:
    """GET requests/s of a bare aiohttp server (50 connections, separate client process)."""
    server = subprocess.Popen([sys.executable, "-m", "bench._http_bare"], stdout=subprocess.PIPE, text=True,
                              env=ENV, cwd=ROOT)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        n = ctx.reps(5000, 20000)
        client(url, "get", 500)
        values = []
        for _ in range(ctx.reps(3, 5)):
            r = client(url, "get", n)
            values.append(r["count"] / r["elapsed_s"])
    finally:
        server.terminate()
        server.wait(30)
    ctx.record_raw(HTTP_GET, values, "requests/s", f"bare aiohttp GET, {CONCURRENCY} connections, client process")


class Node(NodeProc):
    """A node on 127.0.0.1 with the benchmark's log key, rate limits off; or, given
    ``log_key`` (a ``pkcs11:`` KEYREF) and the ``env`` that reaches its token, a log key held
    in a token. ``name``: its scratch directory (each node needs its own: ``ctx.scratch``
    empties the one it names)."""

    START_TIMEOUT_S = 60.0
    STOP_TIMEOUT_S = 60.0

    def __init__(self, ctx: Context, *, name: str = "http-node", log_key: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        d = ctx.scratch(name)
        if log_key is None:
            (d / "keys").mkdir()
            (d / "keys" / "log.pem").write_bytes(LOG_KEY.to_pem())
            (d / CONFIG_NAME).write_text(config_text(ORIGIN))
        else:
            (d / CONFIG_NAME).write_text(config_text(ORIGIN, log_key=log_key))
        super().__init__(d, name="node", env=env)
        self.api = NodeClient(self.url, vkey=self.ready["vkey"])


WARM_UP = 500 + 1000
"""Attestations a node is sent before the timed repetitions (:func:`warm_up`)."""


def warm_up(node: Node) -> int:
    """Warm ``node`` up with attestations ``0 .. WARM_UP``: 500 single POSTs, then a batch of
    1,000. The node starts its verifying workers at its first large batch: started here, every
    repetition measures the same steady state (their start, ~0.25 cpu s, is in the replication
    figures, where a fresh node mirrors). Returns the next attestation index."""
    client(node.url, "single", 500, start=0)
    client(node.url, "batch", 1000, start=500, concurrency=BATCH_IN_FLIGHT)
    return WARM_UP


def run(ctx: Context) -> None:
    """Bare GET, node GET, single POSTs, batch POSTs."""
    ctx.raw(HTTP_GET)
    ctx.raw(raw.ED25519_VERIFY_2T)
    ctx.raw(raw.FSYNC_STALLS)
    reps = ctx.reps(3, 5)
    # 10,000 single POSTs a repetition in both modes: with 50 clients one stalled sync delays
    # ~50 requests at once, so a p99 over a few thousand requests is set by whether a single
    # disk stall (raw fsync_stalls_per_min) falls in the repetition.
    n_single, n_batch = 10000, ctx.reps(10000, 40000)
    ensure_signed(WARM_UP + reps * (n_single + n_batch))
    node = Node(ctx)
    try:
        for env in bootstrap_envelopes():
            node.api.submit(env)
        get = [client(node.url + "/checkpoint", "get", ctx.reps(5000, 20000)) for _ in range(reps)]
        ctx.record("checkpoint_get", [r["count"] / r["elapsed_s"] for r in get], "requests/s", limit=HTTP_GET,
                   notes="GET /checkpoint on the node")
        at = warm_up(node)
        single, lat, batch, node_cpu, client_cpu, paired, rep_p99 = [], [], [], [], [], [], []
        batch_node, batch_workers, batch_client = [], [], []
        for _ in range(reps):
            c0 = node.cpu_s()
            r = client(node.url, "single", n_single, start=at)
            node_cpu.append((node.cpu_s() - c0) / n_single * 1000)
            client_cpu.append(r["cpu_s"] / n_single * 1000)
            at += n_single
            single.append(r["ok"] / r["elapsed_s"])
            lat += r["latencies_ms"]
            rep_p99.append(percentile(r["latencies_ms"], 99))
            paired.append(paired_verify_2t(ctx))
            c0, w0 = node.cpu_s(), node.workers_cpu_s()
            r = client(node.url, "batch", n_batch, start=at, concurrency=BATCH_IN_FLIGHT)
            batch_node.append((node.cpu_s() - c0) / n_batch * 1e6)
            batch_workers.append((node.workers_cpu_s() - w0) / n_batch * 1e6)
            batch_client.append(r["cpu_s"] / n_batch * 1e6)
            at += n_batch
            batch.append(n_batch / r["elapsed_s"])
        ctx.record("single_post", single, "records/s", limit=HTTP_GET,
                   target=(f">= {TARGET_RATE:.0f} records/s", median_at_least(TARGET_RATE)),
                   notes=f"{CONCURRENCY} concurrent clients, one envelope per POST /v1/entries")
        ctx.record("single_post_latency", lat, "ms", higher_is_better=False,
                   target=(f"p99 <= {TARGET_P99_MS:.0f} ms", p99_at_most(TARGET_P99_MS)),
                   notes=f"per request, all {len(lat)} requests (p99 over requests); p99 of each repetition "
                         f"{', '.join(f'{p:.0f}' for p in rep_p99)} ms; {sum(x > TARGET_P99_MS for x in lat)} "
                         f"requests over {TARGET_P99_MS:.0f} ms; the disk alone: "
                         f"{ctx.raw(raw.FSYNC_STALLS):.0f} syncs over 50 ms a minute (raw {raw.FSYNC_STALLS})")
        share = statistics.median(client_cpu) / (statistics.median(client_cpu) + statistics.median(node_cpu))
        ctx.record("single_post_node_cpu", node_cpu, "ms/record", higher_is_better=False,
                   notes="CPU time of the node process (all threads, user + system) per single POST")
        ctx.record("single_post_client_cpu", client_cpu, "ms/record", higher_is_better=False,
                   notes=f"CPU time of the load generator per single POST: {share:.0%} of the CPU both use")
        ctx.record_raw(f"{raw.ED25519_VERIFY_2T}_paired_http", paired, "verifies/s",
                       "Ed25519, 2 threads, cryptography, measured right before each batch repetition")
        ctx.record("batch_post", batch, "records/s", limit=f"{raw.ED25519_VERIFY_2T}_paired_http", paired=True,
                   target=(f">= {TARGET_BATCH} x raw 2-thread Ed25519 verify", ratio_at_least(TARGET_BATCH)),
                   notes=f"POST /v1/entries:batch, 500 envelopes per request, {BATCH_IN_FLIGHT} in flight; "
                         "verified by the node's worker processes")
        for name, values, what in (("node", batch_node, "the node process (all threads)"),
                                    ("workers", batch_workers, "the node's verifying worker processes"),
                                    ("client", batch_client, "the load generator")):
            ctx.record(f"batch_post_{name}_cpu", values, "us/record", higher_is_better=False,
                       notes=f"CPU time of {what} per batched record")
        ctx.record("log_size", [float(node.api.log_info()["size"])], "entries")
        print(f"  single_post median {statistics.median(single):.0f}/s", flush=True)
    finally:
        node.stop()


if __name__ == "__main__":
    sys.exit(main(run, "http"))
