"""``turtles cluster up/down``: real node processes, real SoftHSM2 tokens, restart, safe stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from dataclasses import replace
from pathlib import Path

from node.cluster import ClusterNode, free_ports, is_running, read_cluster, stop_node

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"url", "origin", "org", "vkey", "pid", "config", "root_key_id", "root_key", "pkcs11_module",
          "pin_file", "softhsm2_conf"}


def turtles(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def health(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
        doc: dict[str, object] = json.loads(resp.read())
        return doc


ROOT_KEY_CHECK = textwrap.dedent("""
    import sys
    from pkcs11 import Attribute, ObjectClass
    from ledger.hsm import Pkcs11Context, parse_pkcs11_uri
    uri, module, pin = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().strip()
    def attrs(session):
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="root")
        return key[Attribute.EXTRACTABLE], key[Attribute.SENSITIVE], key[Attribute.TOKEN]
    with Pkcs11Context(module) as ctx:
        print(*ctx.with_session(parse_pkcs11_uri(uri), attrs, pin=pin))
""")


def test_cluster_up_status_down_and_restart(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    up = turtles("cluster", "up", "--nodes", "3", "--dir", str(directory), "--json", "--interval", "0.3")
    try:
        assert up.returncode == 0, up.stderr
        doc = json.loads(up.stdout)
        assert doc == json.loads((directory / "cluster.json").read_text())
        nodes = read_cluster(directory)
        assert len(nodes) == 3 and all(set(item) >= FIELDS for item in doc["nodes"])
        assert len({n.url for n in nodes}) == len({n.origin for n in nodes}) == len({n.softhsm2_conf for n in nodes}) == 3
        for node in nodes:
            assert health(node.url)["status"] == "ok"
            assert node.root_key.startswith("pkcs11:") and Path(node.softhsm2_conf).is_file()
            assert oct(Path(node.pin_file).stat().st_mode & 0o777) == "0o600"
            check = subprocess.run(
                [sys.executable, "-c", ROOT_KEY_CHECK, node.root_key, node.pkcs11_module, node.pin_file],
                env=node.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
            assert check.stdout.split() == ["False", "True", "True"], check.stderr  # never leaves the token
        status = turtles("cluster", "status", "--dir", str(directory))
        assert status.returncode == 0 and status.stdout.count("running") == 3

        down = turtles("cluster", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stderr
        assert not any(is_running(n) for n in nodes)
        assert turtles("cluster", "status", "--dir", str(directory)).returncode == 1

        again = turtles("cluster", "up", "--nodes", "3", "--dir", str(directory))
        assert again.returncode == 0, again.stderr
        restarted = read_cluster(directory)
        assert [n.origin for n in restarted] == [n.origin for n in nodes]
        for node in restarted:
            assert health(node.url)["size"] == 2  # the root and the delegation, kept from before
    finally:
        turtles("cluster", "down", "--dir", str(directory))
    assert not any(is_running(n) for n in read_cluster(directory))


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    # A process that is not our child (as nodes are not for `cluster down`): orphaned at once.
    spawn = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    pid = int(spawn.stdout.strip())
    try:
        fake = ClusterNode(
            name="node1", url="http://127.0.0.1:9", origin="o", org="o", vkey="v", pid=pid,
            config=str(tmp_path / "node.toml"), dir=str(tmp_path), log=str(tmp_path / "node.log"),
            root_key_id="k", root_key="pkcs11:token=o;object=root", pkcs11_module="m", pin_file="p",
            softhsm2_conf="c",
        )
        assert not is_running(fake)
        assert stop_node(fake).pid is None
        os.kill(pid, 0)  # still alive: its command line names no node config
        assert is_running(replace(fake, config="import time; time.sleep(60)"))
    finally:
        os.kill(pid, signal.SIGKILL)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(16)
    assert len(set(ports)) == 16 and all(1024 <= p < 65536 for p in ports)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    assert turtles("cluster", "down", "--dir", str(tmp_path / "none")).returncode == 2
    assert turtles("cluster", "up", "--nodes", "0", "--dir", str(tmp_path / "zero")).returncode == 2


def test_a_single_node_cluster_runs(tmp_path: Path) -> None:
    up = turtles("cluster", "up", "--nodes", "1", "--dir", str(tmp_path / "one"))
    try:
        assert up.returncode == 0, up.stderr
        (node,) = read_cluster(tmp_path / "one")
        assert health(node.url)["mirrors"] == 0
    finally:
        turtles("cluster", "down", "--dir", str(tmp_path / "one"))
