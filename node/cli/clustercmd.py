"""``turtles cluster up --nodes N --dir DIR`` and ``turtles cluster down --dir DIR``.

``up`` starts N nodes on 127.0.0.1, each with its own store and SoftHSM2 token holding its
organisation's root key, all peers of each other, and writes ``DIR/cluster.json``; run on a
directory that already has a cluster, it restarts the nodes that are stopped (they resume
from their stores). ``down`` stops every node (SIGTERM, SIGKILL after ``--timeout``).
``status`` says which nodes run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

_F = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``cluster`` verb group."""
    cluster = sub.add_parser("cluster", help="run a local cluster of nodes on 127.0.0.1")
    cluster_sub = cluster.add_subparsers(dest="cluster_verb", metavar="ACTION", required=True)

    p = cluster_sub.add_parser(
        "up", help="start N nodes (each with its own store and SoftHSM2 token)", formatter_class=_F,
        epilog="examples:\n  turtles cluster up --nodes 3 --dir ./run/cluster\n"
               "  turtles cluster up --nodes 3 --orgs upstream,packager,appvendor --dir ./run/demo\n"
               "  turtles cluster up --nodes 3 --dir ./run/cluster --json   # print cluster.json",
    )
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="number of nodes (default 3)")
    p.add_argument("--orgs", metavar="ORG,ORG,...", help="organisation names, one per node (default org1..orgN)")
    p.add_argument("--dir", required=True, metavar="DIR", help="cluster directory (DIR/cluster.json)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the nodes (default 60)")
    p.add_argument("--interval", type=float, default=1.0, help="replication interval in seconds (default 1)")
    p.add_argument("--pkcs11-module", metavar="PATH", help="SoftHSM2 module (default: found on the system)")
    p.add_argument("--json", action="store_true", help="print cluster.json")
    p.set_defaults(func=run_up)

    p = cluster_sub.add_parser("down", help="stop every node of the cluster in DIR")
    p.add_argument("--dir", required=True, metavar="DIR")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL (default 20)")
    p.set_defaults(func=run_down)

    p = cluster_sub.add_parser("status", help="which nodes of the cluster in DIR run")
    p.add_argument("--dir", required=True, metavar="DIR")
    p.add_argument("--json", action="store_true", help="print cluster.json with a running flag")
    p.set_defaults(func=run_status)


def run_up(args: argparse.Namespace) -> int:
    """``turtles cluster up``."""
    from node import cluster  # lazy: the node stack loads only for cluster verbs
    from node.config import ReplicationSection

    replication = ReplicationSection(interval_s=args.interval)
    nodes = cluster.cluster_up(args.dir, args.nodes, timeout=args.timeout, module=args.pkcs11_module,
                               replication=replication, orgs=args.orgs.split(",") if args.orgs else None)
    if args.json:
        json.dump({"nodes": [asdict(n) for n in nodes]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for n in nodes:
            print(f"{n.name}  {n.url}  {n.origin}  pid {n.pid}  root {n.root_key} ({n.root_key_id[:19]}...)")
        print(f"wrote {Path(args.dir) / cluster.CLUSTER_FILE}; stop with: turtles cluster down --dir {args.dir}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    """``turtles cluster down``."""
    from node import cluster

    for n in cluster.cluster_down(args.dir, timeout=args.timeout):
        print(f"{n.name}  stopped")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """``turtles cluster status``: exit 0 when every node runs, 1 otherwise."""
    from node import cluster

    nodes = cluster.read_cluster(Path(args.dir).resolve())
    running = {n.name: cluster.is_running(n) for n in nodes}
    if args.json:
        json.dump({"nodes": [{**asdict(n), "running": running[n.name]} for n in nodes]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for n in nodes:
            print(f"{n.name}  {n.url}  {'running' if running[n.name] else 'stopped'}")
    return 0 if all(running.values()) else 1


__all__ = ["register", "run_down", "run_status", "run_up"]
