"""``turtles node init DIR`` and ``turtles node start --config FILE``.

``init`` writes a commented ``DIR/node.toml`` and nothing secret unless asked: with
``--generate-log-key`` it also writes a fresh Ed25519 log key ``DIR/keys/log.pem``
(mode 0600). ``start`` runs the node in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ledger.errors import InputError
from ledger.keys import SoftwareSigner
from node.config import CONFIG_NAME, load_config, parse_config, render_template

_F = argparse.RawDescriptionHelpFormatter
_ORG_CHARS = re.compile(r"[^a-z0-9._-]+")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``node`` verb group."""
    node = sub.add_parser("node", help="configure and run a turtles node")
    node_sub = node.add_subparsers(dest="node_verb", metavar="ACTION", required=True)

    p = node_sub.add_parser(
        "init", help="write a commented node config into DIR", formatter_class=_F,
        epilog="examples:\n  turtles node init ./acme --org acme --origin ledger.acme.example/log --generate-log-key\n"
               "  turtles node init ./acme --org acme --log-key 'pkcs11:token=acme;object=log'",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--org", help="this organisation's name (default: from DIR)")
    p.add_argument("--origin", help="the log's origin line (default: ORG.turtles.local/log)")
    p.add_argument("--log-key", metavar="KEYREF", help="KEYREF of the Ed25519 log key (default: keys/log.pem)")
    p.add_argument("--generate-log-key", action="store_true", help="write a new Ed25519 key to DIR/keys/log.pem")
    p.add_argument("--port", type=int, default=0, help="listen port (default 0: ephemeral)")
    p.add_argument("--force", action="store_true", help="overwrite an existing node.toml")
    p.set_defaults(func=run_init)

    p = node_sub.add_parser(
        "start", help="run a node in the foreground (SIGTERM/SIGINT stop it gracefully)", formatter_class=_F,
        epilog="example:\n  turtles node start --config ./acme/node.toml --ready-file ./acme/ready.json",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    p.add_argument("--ready-file", metavar="FILE", help="write {url, pid, origin, vkey} here once listening")
    p.set_defaults(func=run_start)


def _default_org(directory: Path) -> str:
    org = _ORG_CHARS.sub("-", directory.resolve().name.lower()).strip("-._")
    return org[:63] or "org"


def run_init(args: argparse.Namespace) -> int:
    """``turtles node init``."""
    directory = Path(args.dir)
    path = directory / CONFIG_NAME
    if path.exists() and not args.force:
        raise InputError(f"{path} already exists", hint="pass --force to overwrite it")
    if args.log_key and args.generate_log_key:
        raise InputError("--log-key and --generate-log-key exclude each other")
    org = args.org or _default_org(directory)
    origin = args.origin or f"{org}.turtles.local/log"
    log_key = args.log_key or "keys/log.pem"
    text = render_template(origin=origin, org=org, log_key=log_key, port=args.port)
    parse_config(text, base_dir=directory.resolve())  # refuse to write a config that would not load
    directory.mkdir(parents=True, exist_ok=True)
    if args.generate_log_key:
        key_path = directory / "keys" / "log.pem"
        if key_path.exists():
            raise InputError(f"{key_path} already exists", hint="remove it, or pass --log-key keys/log.pem")
        key_path.parent.mkdir(parents=True, exist_ok=True)
        signer = SoftwareSigner.generate("ed25519")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.to_pem())
        print(f"wrote log key {key_path} ({signer.key_id})")
    path.write_text(text)
    print(f"wrote {path}")
    if not args.generate_log_key and not args.log_key:
        print(f"next: put the Ed25519 log key at {directory / log_key} "
              f"(turtles keys generate --out {directory / log_key})")
    print(f"start with: turtles node start --config {path}")
    return 0


def run_start(args: argparse.Namespace) -> int:
    """``turtles node start``: runs until SIGTERM/SIGINT."""
    import asyncio  # lazy, as the node's own modules: a CLI start need not load them

    from node.plugins import full_node  # lazy: aiohttp and the store load only when a node starts
    from node.server import run

    config = load_config(args.config)
    asyncio.run(run(config, ready_file=Path(args.ready_file) if args.ready_file else None, **full_node()))
    return 0


__all__ = ["register", "run_init", "run_start"]
