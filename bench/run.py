"""Run every benchmark: ``python -m bench.run [--quick] [--only append,proofs]``.

The raw limits (:mod:`bench.raw`) are measured first, in this process; then each module
``bench/bench_*.py`` runs in its own child process (so that one module's memory, threads
and PKCS#11 state do not colour the next one's figures), with the raw limits of this run
handed to it. A module that fails is reported under "Not measured" with its error, and the
others still run. Results go to ``bench/results.json`` and ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import bench
from bench import raw
from bench._harness import Context, Figure, scratch_root, to_json, to_markdown

HERE = Path(__file__).resolve().parent
MODULE_TIMEOUT = {True: 900, False: 4 * 3600}


def modules() -> list[str]:
    """Names of the benchmark modules (``bench_*``), in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def group_of(module: str) -> str:
    """``bench_append`` -> ``append``."""
    return module.removeprefix("bench_")


def run_child(argv: Sequence[str]) -> int:
    """The child side: run one module with the parent's raw limits, write its figures."""
    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    ctx = Context(quick=args.quick, workdir=args.workdir, group=group_of(args.child))
    known = {d["name"]: Figure.from_dict(d) for d in json.loads(args.raw.read_text())}
    ctx.raw_figures.update(known)
    mod = importlib.import_module(f"bench.{args.child}")
    try:
        mod.run(ctx)
    finally:
        args.result.write_text(json.dumps({
            "figures": [asdict(f) for f in ctx.figures],
            "raw": [asdict(f) for k, f in ctx.raw_figures.items() if k not in known],
            "skipped": ctx.skipped,
        }))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the raw limits, run every module, write the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        return run_child(argv)
    p = argparse.ArgumentParser(prog="python -m bench.run")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions (make bench)")
    p.add_argument("--only", help="comma-separated module names (append,proofs,...)")
    p.add_argument("--out", type=Path, default=HERE, help="directory for results.json and results.md")
    args = p.parse_args(argv)
    chosen = modules()
    if args.only:
        want = {f"bench_{x.removeprefix('bench_')}" for x in args.only.split(",")}
        chosen = [m for m in chosen if m in want]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    with scratch_root() as tmp:
        ctx = Context(quick=args.quick, workdir=tmp, group="raw")
        print("== raw limits", flush=True)
        raw.run(ctx)
        raw_file = tmp / "raw.json"
        for mod in chosen:
            raw_file.write_text(json.dumps([asdict(f) for f in ctx.raw_figures.values()]))
            result = tmp / f"{mod}.json"
            work = tmp / mod
            work.mkdir()
            print(f"== {mod}", flush=True)
            cmd = [sys.executable, "-m", "bench.run", "--child", mod, "--raw", str(raw_file),
                   "--result", str(result), "--workdir", str(work)] + (["--quick"] if args.quick else [])
            m0 = time.perf_counter()
            try:
                done = subprocess.run(cmd, timeout=MODULE_TIMEOUT[args.quick], check=False,
                                      env={**os.environ, "PYTHONPATH": str(HERE.parent)})
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = -1
            if result.exists():
                out = json.loads(result.read_text())
                ctx.figures += [Figure.from_dict(d) for d in out["figures"]]
                ctx.raw_figures.update({d["name"]: Figure.from_dict(d) for d in out["raw"]})
                ctx.skipped += out["skipped"]
            if code != 0:
                ctx.skipped.append({"group": group_of(mod), "what": "(module)",
                                    "why": "timed out" if code == -1 else f"exited with status {code}"})
            print(f"== {mod}: {time.perf_counter() - m0:.0f} s", flush=True)
    doc = to_json(ctx, {"quick": args.quick, "started": started, "duration_s": time.perf_counter() - t0,
                        "modules": chosen})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "results.md").write_text(to_markdown(doc))
    misses = [f for f in ctx.figures if f.ok is False]
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'results.md'}; "
          f"{len(ctx.figures)} figures, {len(misses)} below target, {len(ctx.skipped)} not measured")
    for f in misses:
        print("  below target:", f.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
