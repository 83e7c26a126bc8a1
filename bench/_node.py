"""A node process for the benchmarks: ``python -m node.server`` on 127.0.0.1, its config
written by the benchmark, its log in a file beside it (never a pipe nobody reads: a full
one would stall the node), and the CPU it and its worker processes use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._harness import process_cpu_s, stop_process
from node.config import CONFIG_NAME, render_template

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
"""The environment benchmark child processes run in (this tree's code first)."""


def config_text(origin: str, *, log_key: str = "keys/log.pem") -> str:
    """A node's config for ``origin`` (org ``bench``) with its rate limits out of the way:
    the benchmarks measure the node, not its limiter."""
    text = render_template(origin=origin, org="bench", log_key=log_key)
    text = text.replace("rate_per_second = 500", "rate_per_second = 1000000")
    return text.replace("rate_burst = 1000\n", "rate_burst = 1000000\n")


class NodeProc:
    """``python -m node.server`` in ``home``, whose config (:data:`node.config.CONFIG_NAME`)
    the caller wrote; ``env`` is added to :data:`ENV`. Returns once the node listens."""

    START_TIMEOUT_S = 120.0
    STOP_TIMEOUT_S = 120.0

    def __init__(self, home: Path, *, name: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        ready = home / "ready.json"
        ready.unlink(missing_ok=True)
        self.log_path = home / f"{name}.log"
        self._log = self.log_path.open("a")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.server", "--config", str(home / CONFIG_NAME), "--ready-file", str(ready)],
            env={**ENV, **(env or {})}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log,
        )
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"node in {home} did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        self.ready: dict[str, str] = json.loads(ready.read_text())
        """What the node wrote to its ready file (url, pid, origin, vkey)."""
        self.url = self.ready["url"]
        self.start_s = time.perf_counter() - t0
        """Seconds from spawning the process to the node listening (opening the store included)."""

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Wait until the node's log holds ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node in {self.home} never logged {text!r}: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (all its threads)."""
        return process_cpu_s(self.proc.pid)

    def workers_cpu_s(self) -> float:
        """User + system CPU seconds of the processes it started (its verifying workers) that
        still run."""
        return sum(process_cpu_s(pid) for pid in descendants(self.proc.pid))

    def metric(self, name: str, origin: str) -> float | None:
        """A labelled value from ``/metrics`` (None while it is not there)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf'^{re.escape(name)}{{[^}}]*origin="{re.escape(origin)}"[^}}]*}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None

    def kill(self) -> None:
        """SIGKILL: no shutdown at all (what a crash or a power cut leaves)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM and wait (the node finishes its queued commits)."""
        stop_process(self.proc, self.STOP_TIMEOUT_S)
        self._log.close()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


__all__ = ["ENV", "ROOT", "NodeProc", "config_text", "descendants"]
