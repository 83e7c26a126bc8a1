"""Fixtures for integration tests: real node processes on 127.0.0.1, real SoftHSM2 tokens.

Every wait is bounded (:func:`wait_until`); every process a fixture starts is stopped by it,
by pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ledger.checkpoint import Checkpoint, open_note
from node.cluster import ClusterNode, cluster_down, cluster_up
from node.config import PeerConfig, ReplicationSection

T = TypeVar("T")
FAST = ReplicationSection(interval_s=0.3, page_size=4, timeout_s=3.0, max_backoff_s=2.0)


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last})")


def get(url: str, path: str, **query: object) -> Any:
    """GET JSON (or the text of a note) from a node."""
    q = "?" + urllib.parse.urlencode({k: str(v) for k, v in query.items()}) if query else ""
    with urllib.request.urlopen(url + path + q, timeout=10) as resp:
        body = resp.read()
        return json.loads(body) if resp.headers.get_content_type() == "application/json" else body.decode()


def log_info(node: ClusterNode, origin: str) -> dict[str, Any]:
    """``/v1/log`` of ``origin`` as ``node`` holds it."""
    info: dict[str, Any] = get(node.url, "/v1/log", origin=origin)
    return info


def checkpoint_of(note: str, vkey: str) -> Checkpoint:
    """Open a note with the log's key."""
    return Checkpoint.parse(open_note(note, vkey))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    """Three nodes, all peers of each other, replicating every 0.3 s."""
    directory = tmp_path_factory.mktemp("cluster")
    try:
        yield cluster_up(directory, 3, timeout=90, replication=FAST)
    finally:
        cluster_down(directory, timeout=20)


@dataclass
class BadPeer:
    """A misbehaving peer process and what it announced (url, origin, vkey, size, root)."""

    mode: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def peer(self) -> PeerConfig:
        return PeerConfig(self.info["url"], self.info["origin"], self.info["vkey"])


def start_bad_peer(directory: Path, mode: str, **options: object) -> BadPeer:
    """Start ``tests.integration.malicious_peer`` as a process and wait for its peer.json."""
    directory.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "tests.integration.malicious_peer", "--dir", str(directory),
            "--key", str(directory / "key.pem"), "--mode", mode, "--origin", f"{mode}.mallory.example/log"]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    log = open(directory / "peer.log", "wb")  # noqa: SIM115 -- closed with the process
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[2])
    log.close()
    info_path = directory / "peer.json"

    def ready() -> dict[str, Any] | None:
        assert proc.poll() is None, (directory / "peer.log").read_text()
        return json.loads(info_path.read_text()) if info_path.exists() else None

    return BadPeer(mode, proc, wait_until(f"the {mode} peer to listen", ready, timeout=30))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL; reaps the child."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
