"""A local cluster: N nodes on 127.0.0.1, each with its own LevelDB and its own SoftHSM2 token.

``cluster_up(DIR, n)`` makes, for node k, ``DIR/nodeK/`` holding a SoftHSM2 configuration
and token (``softhsm/``), the token PIN (``pin.txt``), the organisation's root key generated
inside the token (Ed25519, non-extractable), a software log key (``keys/log.pem``), the
node's LevelDB with the org's ``root`` record (hsm = true, self-signed in the token) as
entry 0 and a ``delegation`` from the root to the log key (purposes ``log``) as entry 1,
and ``node.toml`` with every other node as a ``[[peer]]``. It starts the nodes detached
(logs in ``DIR/nodeK/node.log``), waits until each answers ``/healthz``, and writes
``DIR/cluster.json``. ``cluster_up`` on a directory that has a cluster restarts its stopped
nodes with their configs: they resume from their stores. ``cluster_down`` stops them
(SIGTERM, then SIGKILL after a timeout).

Each node's token is set up in a child process whose environment names that node's
``softhsm2.conf`` (SoftHSM2 reads it at ``C_Initialize``), so this process never changes its
own environment and the nodes are prepared in parallel.

Invariants: every wait is bounded; secrets (PINs) are in 0600 files only. Starting,
watching and stopping one node's process is :mod:`node.nodeproc`'s (re-exported here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ledger.checkpoint import verifier_key
from ledger.entry import sign_record
from ledger.envelope import Envelope
from ledger.errors import InputError, NotFoundError, UnavailableError
from ledger.holdings import Holdings
from ledger.hsm import Pkcs11Context, Pkcs11Signer, Pkcs11Uri, generate_keypair
from ledger.keys import SoftwareSigner
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy
from node.config import (
    CONFIG_NAME,
    KeysSection,
    NodeConfig,
    NodeSection,
    PeerConfig,
    ReplicationSection,
    dump_config,
    load_config,
)
from node.nodeproc import ClusterNode, free_ports, is_running, start_node, stop_node, wait_healthy
from node.plugins import full_node
from node.server import run

CLUSTER_FILE = "cluster.json"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)

_ORG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def find_softhsm_module() -> str:
    """Path of libsofthsm2.so (``$TURTLES_PKCS11_MODULE`` or ``$SOFTHSM2_MODULE`` first)."""
    for name in ("TURTLES_PKCS11_MODULE", "SOFTHSM2_MODULE"):
        if os.environ.get(name):
            return os.environ[name]
    for path in MODULE_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise NotFoundError("SoftHSM2 (libsofthsm2.so) is not installed", hint="run `make bootstrap`")


# --- preparing one node (runs in a child process with SOFTHSM2_CONF set) ------------------------


def init_node(directory: Path, *, org: str, origin: str, module: str) -> dict[str, str]:
    """Make a node's token, root key, log key and store; returns what ``cluster.json`` needs.

    Requires ``SOFTHSM2_CONF`` to name ``directory/softhsm/softhsm2.conf`` (written here).
    """
    softhsm = directory / "softhsm"
    (softhsm / "tokens").mkdir(parents=True, exist_ok=True)
    conf = softhsm / "softhsm2.conf"
    if os.environ.get("SOFTHSM2_CONF") != str(conf):
        raise InputError(f"init_node needs SOFTHSM2_CONF={conf}")
    conf.write_text(f"directories.tokendir = {softhsm / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    _secret(directory / "pin.txt", pin)
    _secret(directory / "so-pin.txt", so_pin)
    util = shutil.which("softhsm2-util")
    if util is None:
        raise NotFoundError("softhsm2-util is not installed", hint="run `make bootstrap`")
    done = subprocess.run([util, "--init-token", "--free", "--label", org, "--pin", pin, "--so-pin", so_pin],
                          capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise UnavailableError(f"softhsm2-util --init-token failed: {done.stderr.strip() or done.stdout.strip()}")
    # The log key is a software key: it signs every checkpoint batch and every witness
    # cosignature, the node's hot path, so it avoids a token round trip per signature. It is
    # only as trusted as the delegation below from the HSM-held root, which can revoke it.
    log_key = SoftwareSigner.generate()
    (directory / "keys").mkdir(exist_ok=True)
    _secret(directory / "keys" / "log.pem", log_key.to_pem().decode())
    uri = Pkcs11Uri(token=org, object="root")
    now = time.time_ns() // 1_000_000
    with Pkcs11Context(module) as context:
        root_pub = generate_keypair(context, token_label=org, label="root", alg="ed25519", pin=pin)
        root = Pkcs11Signer(context, uri, pin=pin)
        records = [
            sign_record(RootRecord(org=org, key=root_pub, hsm=True, created=now), [root]),
            sign_record(Delegation(
                issuer=root_pub.key_id, subject=log_key.public_key, name=f"{org} log key", org=org,
                artefacts=("*",), purposes=("log",), max_depth=0, not_before=now, not_after=None,
                created=now,
            ), [root]),
        ]
    _append(directory / "data", origin, log_key, records)
    return {"vkey": verifier_key(origin, log_key.public_key.raw), "root_key_id": root_pub.key_id,
            "root_key": uri.format()}


def _append(data_dir: Path, origin: str, log_key: SoftwareSigner, envelopes: Sequence[Envelope]) -> None:
    with Holdings.open(data_dir, origin=origin, signer=log_key, roots=RootsPolicy.any_self_signed(),
                       create=True) as holdings:
        assert holdings.own is not None
        for env in envelopes:
            holdings.own.append(env)


def _secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


# --- the cluster ----------------------------------------------------------------------------------


def cluster_up(
    directory: str | os.PathLike[str], n: int = 3, *, timeout: float = 60.0, module: str | None = None,
    replication: ReplicationSection | None = None, extra_peers: Sequence[PeerConfig] = (),
    orgs: Sequence[str] | None = None,
) -> list[ClusterNode]:
    """Create (or restart) a cluster of ``n`` nodes in ``directory`` and wait until healthy.

    ``orgs`` names the nodes' organisations (default ``org1`` .. ``orgN``); each node's
    token, root record and origin (``<org>.turtles.local/log``) carry its name.

    Raises:
        InputError: ``n`` out of range, ``orgs`` not ``n`` distinct org names, or
            ``directory`` holds a cluster of another size.
        UnavailableError: a node did not come up within ``timeout`` seconds (its log tail says why).
    """
    root = Path(directory).resolve()
    existing = read_cluster(root) if (root / CLUSTER_FILE).exists() else None
    if existing is not None:
        if len(existing) != n:
            raise InputError(f"{root} holds a cluster of {len(existing)} nodes, not {n}")
        nodes = existing
    else:
        if not 1 <= n <= 64:
            raise InputError(f"a local cluster has 1..64 nodes, not {n}")
        names = list(orgs) if orgs else [f"org{k}" for k in range(1, n + 1)]
        if len(names) != n or len(set(names)) != n:
            raise InputError(f"want {n} distinct organisation names, got {', '.join(names)}")
        for org in names:
            _check_org(org)
        root.mkdir(parents=True, exist_ok=True)
        nodes = _create(root, names, timeout=timeout, module=module or find_softhsm_module(),
                        replication=replication or ReplicationSection(interval_s=1.0),
                        extra_peers=extra_peers)
    deadline = time.monotonic() + timeout
    started = [n_ if is_running(n_) else start_node(n_) for n_ in nodes]
    write_cluster(root, started)
    for node in started:
        wait_healthy(node, timeout=max(1.0, deadline - time.monotonic()))
    return started


def _check_org(org: str) -> None:
    if not _ORG.fullmatch(org):
        raise InputError(f"{org!r} is not an organisation name (lowercase letters, digits, . _ -)")


def _create(root: Path, orgs: Sequence[str], *, timeout: float, module: str, replication: ReplicationSection,
            extra_peers: Sequence[PeerConfig]) -> list[ClusterNode]:
    n = len(orgs)
    names = [f"node{k}" for k in range(1, n + 1)]
    origins = [f"{org}.turtles.local/log" for org in orgs]
    children = []
    for name, org, origin in zip(names, orgs, origins, strict=True):
        d = root / name
        d.mkdir(exist_ok=True)
        env = {**os.environ, "SOFTHSM2_CONF": str(d / "softhsm" / "softhsm2.conf")}
        children.append(subprocess.Popen(
            [sys.executable, "-m", "node.cluster", "init-node", "--dir", str(d), "--org", org,
             "--origin", origin, "--module", module],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    infos = []
    for name, child in zip(names, children, strict=True):
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            child.kill()
            raise UnavailableError(f"preparing {name} took longer than {timeout:g} s") from e
        if child.returncode != 0:
            raise UnavailableError(f"preparing {name} failed: {err.strip()[-2000:]}")
        infos.append(json.loads(out))
    ports = free_ports(n)
    nodes = []
    for k, (name, org, origin, info, port) in enumerate(zip(names, orgs, origins, infos, ports, strict=True)):
        d = root / name
        peers = [PeerConfig(f"http://127.0.0.1:{ports[j]}", origins[j], infos[j]["vkey"])
                 for j in range(n) if j != k] + list(extra_peers)
        config = NodeConfig(
            node=NodeSection(origin=origin, org=org, data_dir=d / "data", port=port),
            keys=KeysSection(log_key=str(d / "keys" / "log.pem"), root_key=info["root_key"],
                             pkcs11_module=module, pin_file=d / "pin.txt"),
            peers=tuple(peers), replication=replication,
        )
        (d / CONFIG_NAME).write_text(dump_config(config))
        nodes.append(ClusterNode(
            name=name, url=f"http://127.0.0.1:{port}", origin=origin, org=org, vkey=info["vkey"], pid=None,
            config=str(d / CONFIG_NAME), dir=str(d), log=str(d / "node.log"), root_key_id=info["root_key_id"],
            root_key=info["root_key"], pkcs11_module=module, pin_file=str(d / "pin.txt"),
            softhsm2_conf=str(d / "softhsm" / "softhsm2.conf"),
        ))
    return nodes


def cluster_down(directory: str | os.PathLike[str], *, timeout: float = 20.0) -> list[ClusterNode]:
    """Stop every node of the cluster in ``directory``."""
    root = Path(directory).resolve()
    nodes = [stop_node(node, timeout=timeout) for node in read_cluster(root)]
    write_cluster(root, nodes)
    return nodes


def read_cluster(directory: Path) -> list[ClusterNode]:
    """The nodes ``directory/cluster.json`` lists."""
    path = directory / CLUSTER_FILE
    try:
        doc = json.loads(path.read_text())
        return [ClusterNode(**item) for item in doc["nodes"]]
    except FileNotFoundError as e:
        raise NotFoundError(f"no cluster in {directory} ({CLUSTER_FILE} is missing)") from e
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not a cluster description: {e}") from e


def write_cluster(directory: Path, nodes: Sequence[ClusterNode]) -> None:
    """Write ``directory/cluster.json`` atomically."""
    tmp = directory / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps({"nodes": [asdict(n) for n in nodes]}, indent=2) + "\n")
    os.replace(tmp, directory / CLUSTER_FILE)


# --- child entry points: ``python -m node.cluster init-node|serve`` ---------------------------------


def _serve(config_path: str, ready_file: str | None) -> None:
    """Run a node with replication and witnessing (the plug-ins the app factory leaves out)."""
    config = load_config(config_path)
    asyncio.run(run(config, ready_file=Path(ready_file) if ready_file else None, **full_node()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the cluster's child processes."""
    parser = argparse.ArgumentParser(prog="python -m node.cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init-node")
    p.add_argument("--dir", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--module", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--config", required=True)
    p.add_argument("--ready-file")
    args = parser.parse_args(argv)
    if args.cmd == "init-node":
        print(json.dumps(init_node(Path(args.dir), org=args.org, origin=args.origin, module=args.module)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _serve(args.config, args.ready_file)
    return 0


__all__ = [
    "CLUSTER_FILE",
    "ClusterNode",
    "cluster_down",
    "cluster_up",
    "find_softhsm_module",
    "free_ports",
    "init_node",
    "is_running",
    "read_cluster",
    "start_node",
    "stop_node",
    "wait_healthy",
    "write_cluster",
]

if __name__ == "__main__":
    sys.exit(main())
