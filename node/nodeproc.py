"""A cluster node's process: what ``cluster.json`` records of it, and starting, watching
and stopping it.

Invariants: every wait is bounded; a pid is signalled only if it is our unreaped child or
its command line names the node's config (a recycled pid is left alone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from ledger.errors import UnavailableError


@dataclass(frozen=True)
class ClusterNode:
    """One node of a cluster, as ``cluster.json`` lists it."""

    name: str
    url: str
    origin: str
    org: str
    vkey: str
    pid: int | None
    config: str
    dir: str
    log: str
    root_key_id: str
    root_key: str
    pkcs11_module: str
    pin_file: str
    softhsm2_conf: str

    @property
    def env(self) -> dict[str, str]:
        """Environment for processes using this node's token."""
        return {**os.environ, "SOFTHSM2_CONF": self.softhsm2_conf}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def start_node(node: ClusterNode) -> ClusterNode:
    """Start a node detached from this process (same config: it resumes from its store)."""
    ready = Path(node.dir) / "ready.json"
    ready.unlink(missing_ok=True)
    with open(node.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cluster", "serve", "--config", node.config, "--ready-file", str(ready)],
            env=node.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=node.dir,
        )
    return replace(node, pid=proc.pid)


def wait_healthy(node: ClusterNode, *, timeout: float = 30.0) -> None:
    """Wait until ``node`` answers ``/healthz`` with 200.

    Raises:
        UnavailableError: not healthy in time, or the process exited (with its log tail).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(node):
            raise UnavailableError(f"{node.name} exited while starting: {_tail(node.log)}")
        try:
            with urllib.request.urlopen(node.url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise UnavailableError(f"{node.name} is not healthy after {timeout:g} s: {_tail(node.log)}")


def is_running(node: ClusterNode) -> bool:
    """Whether the node's recorded pid is alive and is this node's process."""
    if node.pid is None:
        return False
    try:
        if os.waitpid(node.pid, os.WNOHANG)[0] == node.pid:
            return False  # our child, and it has exited (now reaped)
        ours = True  # our unreaped child: its pid cannot have been reused (nor exec'd yet, maybe)
    except ChildProcessError:
        ours = False
    try:
        stat = Path(f"/proc/{node.pid}/stat").read_text()
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and (ours or node.config.encode() in cmdline)


def stop_node(node: ClusterNode, *, timeout: float = 20.0, kill: bool = False) -> ClusterNode:
    """Stop a node: SIGTERM (or SIGKILL at once when ``kill``), SIGKILL after ``timeout``."""
    if not is_running(node):
        return replace(node, pid=None)
    assert node.pid is not None
    os.kill(node.pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_running(node):
        if time.monotonic() > deadline:
            os.kill(node.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)
    return replace(node, pid=None)


def _tail(path: str, limit: int = 2000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-limit:].strip() or "(empty log)"
    except OSError:
        return "(no log)"


__all__ = ["ClusterNode", "free_ports", "is_running", "start_node", "stop_node", "wait_healthy"]
