"""A real node process (`python -m node.server`) on 127.0.0.1: it announces its URL,
accepts submissions, refuses a second instance on the same store, and on SIGTERM
finishes in-flight durable commits: nothing acknowledged is lost across the restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ledger.errors import TurtlesError
from ledger.keys import ED25519_BACKEND, SoftwareSigner
from node.client import NodeClient
from node.config import CONFIG_NAME, render_template
from tests.node.conftest import attestation, root_envelope, wait_until

ROOT = Path(__file__).resolve().parents[2]


def node_dir(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "log.pem").write_bytes(SoftwareSigner.generate().to_pem())
    text = render_template(origin="proc.example/log", org="proc").replace(
        "rate_per_second = 500", "rate_per_second = 100000"
    )
    (tmp_path / CONFIG_NAME).write_text(text)
    return tmp_path / CONFIG_NAME


class NodeProcess:
    """``python -m node.server --config FILE --ready-file FILE`` as a child process."""

    def __init__(self, config: Path) -> None:
        self.ready = config.parent / "ready.json"
        self.ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.server", "--config", str(config), "--ready-file", str(self.ready)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def wait_ready(self) -> dict[str, Any]:
        wait_until(lambda: self.ready.exists() or self.proc.poll() is not None, timeout=30)
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited {self.proc.returncode}: {self.proc.stderr.read() if self.proc.stderr else ''}")
        info: dict[str, Any] = json.loads(self.ready.read_text())
        return info

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


def test_process_serves_and_stops_gracefully(tmp_path: Path) -> None:
    config = node_dir(tmp_path)
    node = NodeProcess(config)
    try:
        info = node.wait_ready()
        assert info["url"].startswith("http://127.0.0.1:") and info["pid"] == node.proc.pid
        assert info["origin"] == "proc.example/log" and info["vkey"].startswith("proc.example/log+")
        client = NodeClient(info["url"], vkey=info["vkey"])
        signer, root = root_envelope()
        assert client.submit(root)["index"] == 0
        # A second node on the same store is refused with a clear error (LevelDB lock).
        second = subprocess.run(
            [sys.executable, "-m", "node.server", "--config", str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert second.returncode == 2 and "in use by another process" in second.stderr

        # Writers keep submitting while SIGTERM arrives; record every acknowledgement.
        acked: dict[int, str] = {}
        envs = [attestation(signer, f"p{i}", f"proc {i}".encode())[1] for i in range(400)]
        lock = threading.Lock()

        def writer(chunk: list[Any]) -> None:
            for env in chunk:
                try:
                    result = client.submit(env)
                except TurtlesError:
                    return  # the node stopped accepting: fine, nothing was acknowledged
                with lock:
                    acked[result["index"]] = result["leaf_hash"]

        threads = [threading.Thread(target=writer, args=(envs[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 20, timeout=30)
        code, out, err = node.stop()
        for t in threads:
            t.join(60)
        assert code == 0, err
        assert f"listening on {info['url']}" in out
        assert f"Ed25519 signatures verified by {ED25519_BACKEND}" in err
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    restarted = NodeProcess(config)
    try:
        info = restarted.wait_ready()
        client = NodeClient(info["url"], vkey=info["vkey"])
        size = client.log_info()["size"]
        assert size >= 1 + len(acked)
        page = client.entries(0, 1000)["entries"]
        for index, leaf in acked.items():
            assert page[index]["leaf_hash"] == leaf
        assert client.submit(root)["duplicate"] is True
    finally:
        code, _, err = restarted.stop()
    assert code == 0, err


def test_process_refuses_a_bad_config(tmp_path: Path) -> None:
    config = node_dir(tmp_path)
    config.write_text(config.read_text().replace("[witness]\n", "[witness]\nunknown_knob = 1\n"))
    done = subprocess.run(
        [sys.executable, "-m", "node.server", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert "witness.unknown_knob" in done.stderr


def test_process_refuses_a_missing_key(tmp_path: Path) -> None:
    config = node_dir(tmp_path)
    (tmp_path / "keys" / "log.pem").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "node.server", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and "log.pem" in done.stderr
