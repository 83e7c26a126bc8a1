"""Timing, repetitions, medians and tails, RSS, and the JSON + markdown output.

Conventions every benchmark follows:

* A *figure* is one quantity measured ``reps`` times; it reports the median and the p99 of
  those repetitions. For a rate (higher is better) the p99 is the slow tail, i.e. the 1st
  percentile of the rates; for a time it is the 99th percentile. With few repetitions the
  p99 is (by linear interpolation) close to the worst repetition, which is what we want.
* A figure may name a *raw limit* (a key of :data:`bench.raw.MEASURES`); the harness
  measures that limit in the same process, the same run, and stores ``ratio`` =
  figure median / limit median. A *paired* figure's limit was measured right before each
  of its repetitions (the machine's speed drifts between them): its ``ratio`` is the
  median of the repetitions' own ratios, each to the limit measured just before it -- as
  the HSM-against-software figures are -- and its notes give every pair's ratio and the
  median over median beside it.
* Nothing here changes what is measured: no retries, no dropping of outliers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")

LIMITS: dict[str, Callable[[Context], None]] = {}
"""Raw limits by key: each measures itself and calls :meth:`Context.record_raw`.

:mod:`bench.raw` fills this with :func:`limit`; a figure names its limit by key.
"""


def limit(key: str) -> Callable[[Callable[[Context], None]], Callable[[Context], None]]:
    """Register a raw-limit measurement under ``key``."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        LIMITS[key] = fn
        return fn

    return register


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dir_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks, like ``du``)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue  # LevelDB removed an obsolete file while we walked
    return total


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has used so far (every thread, user + system, from
    /proc); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM (a node finishes its queued commits) and wait; SIGKILL after ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took (wall clock, perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine() -> dict[str, Any]:
    """The facts a figure means nothing without."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("cryptography", "plyvel", "msgpack", "aiohttp", "pkcs11"):
        try:
            versions[mod] = str(__import__(mod).__version__)
        except (ImportError, AttributeError):
            versions[mod] = "?"
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_bytes": mem,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "versions": versions,
    }


@dataclass
class Figure:
    """One measured quantity over its repetitions."""

    group: str
    name: str
    unit: str
    values: list[float]
    higher_is_better: bool = True
    limit: str | None = None
    limit_median: float | None = None
    ratio: float | None = None
    target: str | None = None
    ok: bool | None = None
    notes: str = ""
    median: float = field(init=False)
    p99: float = field(init=False)

    def __post_init__(self) -> None:
        self.median = statistics.median(self.values) if self.values else math.nan
        self.p99 = percentile(self.values, 1 if self.higher_is_better else 99)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        """Rebuild a figure from :func:`dataclasses.asdict` output (as a child process sends it)."""
        fig = cls(d["group"], d["name"], d["unit"], list(d["values"]), d["higher_is_better"], notes=d["notes"])
        fig.limit, fig.limit_median, fig.ratio = d["limit"], d["limit_median"], d["ratio"]
        fig.target, fig.ok = d["target"], d["ok"]
        return fig

    def line(self) -> str:
        """One printable line: figure, median, tail, and the ratio to its raw limit."""
        s = f"{self.group}.{self.name:<34} {_fmt(self.median):>12} {self.unit:<12} p99 {_fmt(self.p99):>10}"
        if self.ratio is not None:
            s += f"  = {self.ratio:.3f} x {self.limit}"
        if self.ok is not None:
            s += f"  [{'ok' if self.ok else 'MISS'}: {self.target}]"
        return s


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}"
    return f"{x:.4g}"


def median_at_least(value: float) -> Callable[[Figure], bool]:
    """A target: the median is at least ``value``."""
    return lambda f: f.median >= value


def median_at_most(value: float) -> Callable[[Figure], bool]:
    """A target: the median is at most ``value``."""
    return lambda f: f.median <= value


def p99_at_most(value: float) -> Callable[[Figure], bool]:
    """A target: the p99 is at most ``value``."""
    return lambda f: f.p99 <= value


def ratio_at_least(value: float) -> Callable[[Figure], bool]:
    """A target: the ratio to the figure's raw limit is at least ``value``."""
    return lambda f: f.ratio is not None and f.ratio >= value


class Context:
    """What a benchmark module gets: mode, a scratch directory, raw limits, a recorder."""

    def __init__(self, *, quick: bool, workdir: Path, group: str = "") -> None:
        self.quick = quick
        self.workdir = workdir
        self.group = group
        self.figures: list[Figure] = []
        self.raw_figures: dict[str, Figure] = {}
        self.skipped: list[dict[str, str]] = []

    def reps(self, quick: int, full: int) -> int:
        """How many repetitions to run in this mode."""
        return quick if self.quick else full

    def scratch(self, name: str) -> Path:
        """A fresh empty directory under the run's scratch directory."""
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def raw(self, key: str) -> float:
        """Median of the raw limit ``key``, measured now if this run has not measured it."""
        if key not in self.raw_figures:
            if key not in LIMITS:
                raise KeyError(f"no raw limit {key!r} is registered (import bench.raw)")
            LIMITS[key](self)
        return self.raw_figures[key].median

    def record_raw(self, key: str, values: list[float], unit: str, notes: str = "", *,
                   higher_is_better: bool = True) -> Figure:
        """Store a raw limit (used by :mod:`bench.raw`); a latency has ``higher_is_better=False``."""
        fig = Figure("raw", key, unit, values, higher_is_better, notes=notes)
        self.raw_figures[key] = fig
        print(fig.line(), flush=True)
        return fig

    def record(
        self,
        name: str,
        values: Sequence[float],
        unit: str,
        *,
        limit: str | None = None,
        higher_is_better: bool = True,
        target: tuple[str, Callable[[Figure], bool]] | None = None,
        notes: str = "",
        paired: bool = False,
    ) -> Figure:
        """Store and print one figure; ``limit`` names the raw figure to compare with.

        ``target`` is (description, predicate over the figure) when the issue sets one.
        ``paired``: ``limit`` holds one value per repetition, measured right before it
        (see the module's conventions).
        """
        fig = Figure(self.group, name, unit, list(values), higher_is_better, notes=notes)
        if limit is not None:
            fig.limit = limit
            fig.limit_median = self.raw(limit)
            fig.ratio = fig.median / fig.limit_median if fig.limit_median else None
            if paired:
                fig.ratio = self._paired_ratio(fig, self.raw_figures[limit].values)
        if target is not None:
            fig.target = target[0]
            fig.ok = bool(target[1](fig))
        self.figures.append(fig)
        print(fig.line(), flush=True)
        return fig

    @staticmethod
    def _paired_ratio(fig: Figure, limits: list[float]) -> float:
        """The median of ``fig``'s per-repetition ratios to ``limits``; the pairs go in its notes."""
        if len(limits) != len(fig.values) or not all(limits):
            raise ValueError(f"{fig.name}: {len(fig.values)} repetitions but {len(limits)} paired limit values")
        pairs = [v / lim for v, lim in zip(fig.values, limits, strict=True)]
        both = f"paired ratios {', '.join(f'{r:.3f}' for r in pairs)}; median over median {fig.ratio:.3f}"
        fig.notes = f"{fig.notes}; {both}" if fig.notes else both
        return statistics.median(pairs)

    def skip(self, what: str, why: str) -> None:
        """Note a part not measured in this run, and why."""
        self.skipped.append({"group": self.group, "what": what, "why": why})
        print(f"{self.group}.{what}: not measured: {why}", flush=True)


@contextmanager
def scratch_root() -> Iterator[Path]:
    """A temporary directory on the same file system as the repository's runs."""
    base = os.environ.get("TURTLES_BENCH_TMP")
    with tempfile.TemporaryDirectory(prefix="turtles-bench-", dir=base) as d:
        yield Path(d)


def to_json(ctx: Context, meta: dict[str, Any]) -> dict[str, Any]:
    """The whole run as a JSON-ready object."""
    return {
        **meta,
        "machine": machine(),
        "raw": [asdict(f) for f in ctx.raw_figures.values()],
        "figures": [asdict(f) for f in ctx.figures],
        "skipped": ctx.skipped,
    }


def to_markdown(doc: dict[str, Any]) -> str:
    """Markdown tables of a run (what ``bench/results.md`` holds)."""
    m = doc["machine"]
    lines = [
        "# turtles benchmark results",
        "",
        f"Mode: {'quick' if doc.get('quick') else 'full'}; started {doc.get('started', '?')}; "
        f"took {doc.get('duration_s', 0):.0f} s.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['usable_cpus']} usable), {m['cpu_model']}, "
        f"{m['memory_bytes'] / 2**30:.1f} GiB, Linux {m['kernel']}, Python {m['python']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        "Median and p99 over the repetitions (p99 of a rate is its slow tail). "
        "Ratios are to the raw limit measured in the same run.",
        "",
        "## Raw limits",
        "",
        "| limit | median | p99 | unit | reps | notes |",
        "|---|---:|---:|---|---:|---|",
    ]
    for f in doc["raw"]:
        lines.append(
            f"| {f['name']} | {_fmt(f['median'])} | {_fmt(f['p99'])} | {f['unit']} | "
            f"{len(f['values'])} | {f['notes']} |"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in doc["figures"]:
        groups.setdefault(f["group"], []).append(f)
    for group, figs in groups.items():
        lines += [
            "",
            f"## {group}",
            "",
            "| figure | median | p99 | unit | reps | ratio to limit | target | notes |",
            "|---|---:|---:|---|---:|---|---|---|",
        ]
        for f in figs:
            ratio = f"{f['ratio']:.3f} x {f['limit']}" if f["ratio"] is not None else ""
            target = ""
            if f["ok"] is not None:
                target = f"{'ok' if f['ok'] else '**MISS**'}: {f['target']}"
            lines.append(
                f"| {f['name']} | {_fmt(f['median'])} | {_fmt(f['p99'])} | {f['unit']} | "
                f"{len(f['values'])} | {ratio} | {target} | {f['notes']} |"
            )
    if doc["skipped"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {s['group']}.{s['what']}: {s['why']}" for s in doc["skipped"]]
    return "\n".join(lines) + "\n"


def main(run: Callable[[Context], None], group: str, argv: Sequence[str] | None = None) -> int:
    """Run one benchmark module alone: ``python -m bench.bench_x [--quick] [--json FILE]``."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{group}")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    with scratch_root() as tmp:
        ctx = Context(quick=args.quick, workdir=tmp, group=group)
        run(ctx)
    doc = to_json(ctx, {"quick": args.quick, "started": started, "duration_s": time.perf_counter() - t0})
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(to_markdown(doc))
    return 0 if all(f.ok is not False for f in ctx.figures) else 1


if __name__ == "__main__":
    sys.exit("run a benchmark module, e.g. python -m bench.run --quick")
