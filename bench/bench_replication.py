"""Replication: a fresh node mirrors a peer's log over HTTP, every entry re-verified.

A peer log of ``N`` entries (the benchmark world: a root, a delegation, ``N - 2``
attestations) is built once in-process with :meth:`Log.append_many` and kept under the
benchmark cache (``$TURTLES_BENCH_CACHE``, default ``~/.cache/turtles-bench``); each run
serves a copy of it (LevelDB table files hard-linked) from a real node process
(``python -m node.server``) on 127.0.0.1. A second node process with that peer in its
``[[peer]]`` list and an empty store then mirrors it through its replicator -- the code path
every node runs. The benchmark watches the mirroring node's ``/metrics`` (the stored tip,
the entries it verified) and both processes' CPU time in ``/proc``:

* ``mirror_rate`` -- entries mirrored per second, from the node being up to its stored tip
  reaching ``N``; ratio to the raw two-thread Ed25519 verify rate measured right before
  each mirroring (``*_paired_replication``: the machine's speed drifts by up to 2x within
  minutes; one signature per entry must be verified); target >= 0.7.
* ``mirror_cpu`` -- CPU microseconds per entry of the mirroring process (all threads);
  ``mirror_workers_cpu`` -- the same for its worker processes (``[node] verify_processes``:
  parsing and signature checks), started with it; ``peer_cpu`` -- the serving peer. The
  three share the machine's cores: their sum bounds the rate.
* ``resume_*`` -- the mirroring node is killed with SIGKILL half-way and restarted on the
  same store: ``resume_reverified`` is the number of entries it verified after the restart
  beyond the ones it did not hold (target 0: nothing held is verified again),
  ``resume_lost`` the entries it had reported stored before the kill but did not find at
  restart (the page in flight at most), ``resume_rate`` the rate of the second half and
  ``resume_restart`` the seconds from the restart to the node listening (it replays the
  records it holds into its trust state -- parsing, no signature checks).

Sizes: quick 2 x 10^4, full 10^6 (``TURTLES_BENCH_REPL_SIZE`` overrides). Building the 10^6
peer takes several minutes the first time; ``python -m bench.bench_replication --build-only
[--size N]`` builds it without measuring anything (outside any benchmark lock).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench import raw
from bench._harness import Context, main, ratio_at_least
from bench._node import NodeProc, config_text
from bench._world import LOG_KEY, ORIGIN, _cache_dir, _seeded, grow, open_world
from bench.bench_append import paired_verify_2t
from ledger.checkpoint import verifier_key
from ledger.store import Database
from node.config import CONFIG_NAME

MIRROR_ORIGIN = "mirror.bench.turtles/log"
MIRROR_KEY = _seeded("mirror")
TARGET_RATIO = 0.7
PAIRED = f"{raw.ED25519_VERIFY_2T}_paired_replication"
POLL_S = 0.05


def size_of(ctx: Context) -> int:
    """The peer log's size in this mode."""
    env = os.environ.get("TURTLES_BENCH_REPL_SIZE")
    return int(env) if env else (20_000 if ctx.quick else 1_000_000)


# --- the peer's store, built once -----------------------------------------------------------------


def peer_store(size: int) -> Path:
    """A LevelDB holding the benchmark log at ``size`` entries (built on first use, then cached)."""
    path = _cache_dir().parent / f"replication-peer-{size}"
    if (path / "DONE").exists():
        return path
    tmp = path.with_name(path.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    print(f"  building a peer log of {size:,} entries in {tmp} (once)", flush=True)
    t0 = time.perf_counter()
    world = open_world(tmp / "data")
    try:
        grow(world, size)
    finally:
        world.close()
    (tmp / "DONE").write_text(f"{size}\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    print(f"  built in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def clone_store(src: Path, dst: Path) -> None:
    """Copy a closed LevelDB: table files (never rewritten in place) hard-linked, the rest copied."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "LOCK":
            continue
        if f.suffix in (".ldb", ".sst"):
            try:
                os.link(f, dst / f.name)
                continue
            except OSError:
                pass
        shutil.copy2(f, dst / f.name)


# --- node processes -------------------------------------------------------------------------------


def _config(home: Path, *, origin: str, key_pem: bytes, peer: tuple[str, str, str] | None = None) -> None:
    (home / "keys").mkdir(parents=True, exist_ok=True)
    (home / "keys" / "log.pem").write_bytes(key_pem)
    text = config_text(origin).replace("interval_s = 2\n", "interval_s = 0.5\n")
    if peer is not None:
        url, peer_origin, vkey = peer
        text += f'\n[[peer]]\nurl = "{url}"\norigin = "{peer_origin}"\nvkey = "{vkey}"\n'
    (home / CONFIG_NAME).write_text(text)


def start_peer(ctx: Context, size: int) -> NodeProc:
    """The peer node serving a copy of the cached log of ``size`` entries."""
    home = ctx.scratch("peer")
    clone_store(peer_store(size) / "data", home / "data")
    _config(home, origin=ORIGIN, key_pem=LOG_KEY.to_pem())
    peer = NodeProc(home, name="peer")
    try:
        # Once listening, a node reads its stored hashes into memory in the background (~1 s
        # at 10^6): let that finish, or it loads the raw measurement taken right before mirroring.
        peer.wait_for_log("stored-hash cache filled", 120)
    except BaseException:
        peer.stop()
        raise
    return peer


def mirror_home(ctx: Context, peer: NodeProc, name: str) -> Path:
    """A fresh mirroring node's directory (empty store, the peer in ``[[peer]]``)."""
    home = ctx.scratch(name)
    vkey = verifier_key(ORIGIN, LOG_KEY.public_key.raw)
    _config(home, origin=MIRROR_ORIGIN, key_pem=MIRROR_KEY.to_pem(), peer=(peer.url, ORIGIN, vkey))
    return home


TIP = "turtles_replication_tip_entries"
VERIFIED = "turtles_replication_verified_entries_total"


def tip(node: NodeProc) -> int:
    """The stored tip of the peer log on ``node`` (a node without the tip gauge: the served size)."""
    value = node.metric(TIP, ORIGIN)
    if value is not None:
        return int(value)
    try:
        with urllib.request.urlopen(node.url + "/v1/log?origin=" + urllib.parse.quote(ORIGIN), timeout=10) as r:
            return int(json.loads(r.read())["size"])
    except urllib.error.HTTPError:
        return 0


def watch(node: NodeProc, until: int, *, timeout: float) -> tuple[float, int]:
    """Poll the node's stored tip of the peer log until it reaches ``until``; (seconds, tip)."""
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout
    while True:
        held = tip(node)
        if held >= until:
            return time.perf_counter() - t0, held
        if node.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mirroring stalled at {held} of {until}: {node.log_path.read_text()[-3000:]}")
        time.sleep(POLL_S)


def stored_tip(home: Path) -> int:
    """Entries of the peer log the (stopped) mirroring node holds in its store."""
    db = Database(home / "data")
    try:
        return db.log(ORIGIN).head().size
    finally:
        db.close()


def mirror_once(ctx: Context, peer: NodeProc, size: int, name: str) -> tuple[float, float, float, float]:
    """A fresh node mirrors the whole peer log: entries/s, and CPU us/entry of the mirroring
    process, of its worker processes, and of the peer."""
    home = mirror_home(ctx, peer, name)
    node = NodeProc(home, name="mirror")
    try:
        p0, m0, w0 = peer.cpu_s(), node.cpu_s(), node.workers_cpu_s()
        seconds, _ = watch(node, size, timeout=3600 * 4)
        p1, m1, w1 = peer.cpu_s(), node.cpu_s(), node.workers_cpu_s()
    finally:
        node.stop()
    shutil.rmtree(home / "data", ignore_errors=True)
    return size / seconds, (m1 - m0) / size * 1e6, (w1 - w0) / size * 1e6, (p1 - p0) / size * 1e6


def resume_once(ctx: Context, peer: NodeProc, size: int) -> dict[str, float]:
    """Kill a mirroring node half-way, restart it on its store, and count what it verifies."""
    home = mirror_home(ctx, peer, "resume")
    node = NodeProc(home, name="mirror")
    try:
        _, seen = watch(node, size // 2, timeout=3600 * 4)
    finally:
        node.kill()
    held = stored_tip(home)
    again = NodeProc(home, name="mirror")
    try:
        seconds, _ = watch(again, size, timeout=3600 * 4)
        verified = int(again.metric(VERIFIED, ORIGIN) or 0)
    finally:
        again.stop()
    progress = [line for line in again.log_path.read_text().splitlines() if "turtles.replication" in line]
    print("  the mirroring node's log (replication lines):", flush=True)
    for line in progress[-8:]:
        print("    " + line.split(" ", 2)[-1][:160], flush=True)
    return {"seen": seen, "held": held, "verified": verified, "remainder": size - held,
            "rate": (size - held) / seconds, "restart_s": again.start_s}


def run(ctx: Context) -> None:
    """Mirror a peer log from scratch (repeated), then interrupt and resume once."""
    size = size_of(ctx)
    peer_store(size)  # (building is not timed)
    limit = ctx.raw(raw.ED25519_VERIFY_2T)
    print(f"  peer log: {size:,} entries; raw 2-thread verify {limit:,.0f}/s", flush=True)
    peer = start_peer(ctx, size)
    try:
        rates, cpu, workers_cpu, peer_cpu, paired = [], [], [], [], []
        for i in range(ctx.reps(2, 1)):
            paired.append(paired_verify_2t(ctx))  # the machine's speed drifts: measured right before
            rate, m, w, p = mirror_once(ctx, peer, size, f"mirror{i}")
            print(f"  mirrored {size:,} entries at {rate:,.0f}/s, {m:.0f} cpu us/entry (workers {w:.0f}, "
                  f"peer {p:.0f})", flush=True)
            rates.append(rate)
            cpu.append(m)
            workers_cpu.append(w)
            peer_cpu.append(p)
        ctx.record_raw(PAIRED, paired, "verifies/s",
                       "Ed25519, 2 threads, cryptography, measured right before each mirroring")
        ctx.record("mirror_rate", rates, "records/s", limit=PAIRED, paired=True,
                   target=(f">= {TARGET_RATIO} x raw 2-thread Ed25519 verify", ratio_at_least(TARGET_RATIO)),
                   notes=f"fresh node mirrors a {size:,}-entry peer log over HTTP, all re-verified")
        ctx.record("mirror_cpu", cpu, "cpu us/entry", higher_is_better=False,
                   notes="mirroring node process, all threads")
        ctx.record("mirror_workers_cpu", workers_cpu, "cpu us/entry", higher_is_better=False,
                   notes="the mirroring node's worker processes (parsing, signature checks), start included")
        ctx.record("peer_cpu", peer_cpu, "cpu us/entry", higher_is_better=False,
                   notes="serving node process while it is mirrored")
        paired_resume = paired_verify_2t(ctx)
        r = resume_once(ctx, peer, size)
        print(f"  killed with about {r['seen']:,.0f} stored, {r['held']:,.0f} found at restart; verified "
              f"{r['verified']:,.0f} after it (remainder {r['remainder']:,.0f})", flush=True)
        ctx.record("resume_reverified", [r["verified"] - r["remainder"]], "entries", higher_is_better=False,
                   target=("0 (nothing held is verified again)", lambda f: f.median == 0),
                   notes=f"killed (SIGKILL) at ~{r['seen']:,.0f} of {size:,}; {r['held']:,.0f} held at restart")
        ctx.record("resume_lost", [max(0.0, r["seen"] - r["held"])], "entries", higher_is_better=False,
                   notes="reported stored before the kill but not found at restart")
        ctx.record_raw(f"{PAIRED}_resume", [paired_resume], "verifies/s", "the same, right before the resume run")
        ctx.record("resume_rate", [r["rate"]], "records/s", limit=f"{PAIRED}_resume", paired=True,
                   notes="the second half, after the restart")
        ctx.record("resume_restart", [r["restart_s"]], "s", higher_is_better=False,
                   notes=f"spawn to listening, reopening a store holding {r['held']:,.0f} entries (no signature checks)")
    finally:
        peer.stop()


def build_only(argv: list[str]) -> int:
    """``--build-only [--size N]``: build (and cache) the peer log, measure nothing."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_replication --build-only")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--size", type=int, default=1_000_000)
    args = p.parse_args(argv)
    print(peer_store(args.size))
    return 0


if __name__ == "__main__":
    if "--build-only" in sys.argv[1:]:
        sys.exit(build_only(sys.argv[1:]))
    sys.exit(main(run, "replication"))
