"""Run :mod:`tests.reliability.fault_child` under ``strace`` and inject a fault at one syscall.

How an injection point is named and hit
---------------------------------------
``strace -e inject=SYSCALL:signal=KILL:when=N`` (or ``error=EIO``) acts on the N-th call of
SYSCALL, and strace counts *per syscall and per thread* ("tracee"). Two things keep that count
about the operation under test only:

* the child does all its imports (and, except in ``open`` mode, opens the store) before it
  prints ``ready``; the tracer attaches with ``strace -p`` only then, and counting starts there;
* ``-P PATH`` for every file of the data directory restricts tracing, counting and injection to
  syscalls on those paths (stdout, Python modules and shared libraries never match).

The files a run touches are found by a *discovery* run (all file syscalls, ``-y``), then a
*recording* run with the same ``-P`` set enumerates the occurrences: for every syscall S, the
points are N = 1 .. the largest per-thread count of S. ``when=N`` fires at the first call that
is the N-th of its thread (with EIO, at the N-th of every thread that gets that far); each
point is described by that first call in the recording. Every run uses the same path (the
slot's world directory is deleted and copied afresh), so ``-P`` paths and LevelDB's file
numbers are the same from run to run. Whether the fault fired is read back from the run's own
trace (``(INJECTED)`` / ``killed by SIGKILL``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.world import ROOT_DIR

# Every file syscall LevelDB (and the ledger around it) could make; only those a recording
# shows on the data directory become injection points.
FILE_SYSCALLS = (
    "openat", "open", "creat", "read", "pread64", "write", "pwrite64", "writev", "fsync",
    "fdatasync", "sync_file_range", "close", "rename", "renameat", "renameat2", "unlink",
    "unlinkat", "ftruncate", "truncate", "fallocate", "fcntl", "flock", "getdents64",
    "mkdir", "rmdir", "link", "linkat",
)  # fmt: skip
_CALL = re.compile(r"^(\d+)\s+(?!<\.\.\.)(\w+)\(")
_PATH = re.compile(r'"(/[^"]+)"|<(/[^>]+)>')
STRACE_TIMEOUT = 90.0


def strace_path() -> str:
    """The strace binary; missing is an error, never a skip."""
    path = shutil.which("strace")
    if path is None:
        raise RuntimeError("strace is not installed: the syscall fault tests need it (apt-get install strace)")
    return path


@dataclass(frozen=True)
class Point:
    """One injection point: the N-th call of ``syscall`` (per thread)."""

    syscall: str
    nth: int
    where: str  # the first call that hits it, as recorded

    def spec(self, fault: str) -> str:
        """The strace ``-e inject=`` argument for ``fault`` ("kill" or "eio")."""
        action = "signal=KILL" if fault == "kill" else "error=EIO"
        return f"{self.syscall}:{action}:when={self.nth}"

    def __str__(self) -> str:
        return f"{self.syscall}#{self.nth} ({self.where})"


@dataclass
class Run:
    """What one child run printed and how it ended."""

    pid: int
    returncode: int | None
    stdout: str
    stderr: str
    trace: str
    seconds: float
    acks: list[tuple[int, str, str]] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def injected(self) -> bool:
        """Whether strace reports that the fault was injected."""
        return "(INJECTED)" in self.trace or "killed by SIGKILL" in self.trace

    @property
    def hung(self) -> bool:
        """The child did not finish within the time limit (and was killed by the harness)."""
        return self.returncode is None


def _parse(run: Run) -> Run:
    for line in run.stdout.splitlines():
        parts = line.split(" ")
        if parts[0] == "ack" and len(parts) == 4 and len(parts[2]) == 64 and len(parts[3]) == 64:
            run.acks.append((int(parts[1]), parts[2], parts[3]))
        elif parts[0] == "note" and len(parts) == 3:
            try:
                note = base64.b64decode(parts[2], validate=True).decode()
                run.notes[int(note.split("\n")[1])] = note  # by the size the note itself states
            except (ValueError, IndexError):
                run.other.append(line)  # a line cut short by the kill
        elif parts[0] == "error":
            run.errors.append(line[6:])
        elif line and line != "ready":
            run.other.append(line)
    return run


def run_child(mode: str, world: Path, strace_args: list[str], *, count: int = 0,
              timeout: float = STRACE_TIMEOUT) -> Run:
    """Start the child, attach strace with ``strace_args`` once it is ready, let it run.

    The trace goes to ``world.parent / "trace"``. A child still running after ``timeout``
    seconds is killed and reported as hung (``returncode`` None).
    """
    trace_file = world.parent / "trace"
    trace_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.fault_child", mode, str(world), str(count)],
        cwd=ROOT_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    tracer: subprocess.Popen[str] | None = None
    try:
        assert child.stdout is not None and child.stdin is not None
        first = child.stdout.readline()
        if first.strip() != "ready":
            out, err = child.communicate(timeout=timeout)
            raise RuntimeError(f"fault child did not start ({first!r}): {err[-3000:]}")
        tracer = subprocess.Popen(
            [strace_path(), "-f", "-y", "-o", str(trace_file), "-p", str(child.pid), *strace_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert tracer.stderr is not None
        attached = tracer.stderr.readline()  # "strace: Process N attached [with K threads]"
        if "attached" not in attached:
            raise RuntimeError(f"strace did not attach: {attached}{tracer.stderr.read()[-2000:]}")
        child.stdin.write("go\n")
        child.stdin.flush()
        try:
            out, err = child.communicate(timeout=timeout)
            code: int | None = child.returncode
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate(timeout=30)
            code = None
        tracer.wait(timeout=30)
    finally:
        for proc in (child, tracer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    trace = trace_file.read_text(errors="replace") if trace_file.exists() else ""
    return _parse(Run(child.pid, code, out, err, trace, time.monotonic() - started))


def discover_paths(mode: str, template: Path, world: Path, *, count: int = 0) -> list[str]:
    """Every path under ``world`` that the operation touches (a run without faults)."""
    fresh_copy(template, world)
    run = run_child(mode, world, ["-e", "trace=" + ",".join(FILE_SYSCALLS)], count=count)
    if run.returncode != 0:
        raise RuntimeError(f"discovery run of {mode} failed ({run.returncode}): {run.stderr[-3000:]}")
    prefix = str(world) + "/"
    paths = {str(world / "db")}
    for m in _PATH.finditer(run.trace):
        path = (m.group(1) or m.group(2)).removesuffix(" (deleted)")
        if path.startswith(prefix):
            paths.add(path)
    return sorted(paths)


def record_points(mode: str, template: Path, world: Path, paths: list[str], *, count: int = 0) -> list[Point]:
    """Enumerate the injection points of ``mode`` (a recording run restricted to ``paths``)."""
    fresh_copy(template, world)
    run = run_child(mode, world, [*path_args(paths), "-e", "trace=" + ",".join(FILE_SYSCALLS)], count=count)
    if run.returncode != 0:
        raise RuntimeError(f"recording run of {mode} failed ({run.returncode}): {run.stderr[-3000:]}")
    return points_of(run.trace, str(world), run.pid)


def points_of(trace: str, world: str, pid: int) -> list[Point]:
    """The injection points of a trace of process ``pid``, in the order they are first reached."""
    seen: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, int], str] = {}
    thread_names: dict[str, str] = {str(pid): "main thread"}
    for line in trace.splitlines():
        m = _CALL.match(line)
        if m is None:
            continue
        tid, name = m.groups()
        thread = thread_names.setdefault(tid, f"thread {len(thread_names) + 1}")
        seen[(tid, name)] += 1
        key = (name, seen[(tid, name)])
        if key not in first:
            found = [(q, a) for q, a in _PATH.findall(line[m.end():])]
            quoted = [q for q, _ in found if q]
            path = quoted[0] if quoted else found[0][1] if found else "?"
            first[key] = f"{path.replace(world + '/', '')}, {thread}"
    return [Point(name, nth, where) for (name, nth), where in first.items()]


def sample(points: list[Point], limit: int) -> list[Point]:
    """At most ``limit`` points, spread evenly over each syscall's occurrences.

    Every syscall keeps its first and last occurrence; the rest of the budget goes to each
    syscall in proportion to its number of points, taken at even steps.
    """
    if len(points) <= limit:
        return points
    by_call: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_call[p.syscall].append(p)
    chosen: list[Point] = []
    for pts in by_call.values():
        share = max(2, round(limit * len(pts) / len(points)))
        if len(pts) <= share:
            chosen += pts
            continue
        step = (len(pts) - 1) / (share - 1)
        chosen += [pts[round(i * step)] for i in range(share)]
    order = {p: i for i, p in enumerate(points)}
    return sorted(set(chosen), key=order.__getitem__)


def path_args(paths: list[str]) -> list[str]:
    """``-P`` arguments restricting tracing and injection to ``paths``."""
    return [arg for p in paths for arg in ("-P", p)]


def inject(mode: str, template: Path, world: Path, paths: list[str], point: Point, fault: str,
           *, count: int = 0) -> Run:
    """One run of ``mode`` on a fresh copy of ``template`` with ``fault`` at ``point``."""
    fresh_copy(template, world)
    args = [*path_args(paths), "-e", "trace=" + ",".join(FILE_SYSCALLS), "-e", "inject=" + point.spec(fault)]
    return run_child(mode, world, args, count=count)


def fresh_copy(template: Path, world: Path) -> None:
    """Replace ``world`` with a copy of ``template``."""
    if world.exists():
        shutil.rmtree(world)
    shutil.copytree(template, world)


__all__ = [
    "FILE_SYSCALLS",
    "Point",
    "Run",
    "discover_paths",
    "fresh_copy",
    "inject",
    "path_args",
    "points_of",
    "record_points",
    "run_child",
    "sample",
    "strace_path",
]
