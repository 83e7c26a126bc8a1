"""``turtles log init | checkpoint | audit``: manage and check a log directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ledger.errors import InputError
from node.cli._common import add_key_options, print_json_or_line
from node.cli._progress import progress

_F = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``log`` verb group."""
    log = sub.add_parser("log", help="create, checkpoint and audit a local log")
    log_sub = log.add_subparsers(dest="log_verb", metavar="ACTION", required=True)

    p = log_sub.add_parser(
        "init", help="create an empty log directory", formatter_class=_F,
        epilog="example:\n  turtles log init ./acme-log --origin turtles.example/acme --key 'pkcs11:token=acme;object=log'",
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--origin", required=True, help="the log's C2SP origin line, e.g. turtles.example/acme")
    p.add_argument("--key", required=True, metavar="KEYREF", help="Ed25519 key that signs checkpoints")
    p.add_argument("--roots", nargs="*", metavar="KEYID", help="admit only these root keys (default: any)")
    add_key_options(p)
    p.set_defaults(func=run_init)

    p = log_sub.add_parser("checkpoint", help="print the latest signed checkpoint",
                           epilog="example:\n  turtles log checkpoint ./acme-log", formatter_class=_F)
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=run_checkpoint)

    p = log_sub.add_parser(
        "audit", help="re-verify every entry, signature, the chain, the tree and every checkpoint",
        formatter_class=_F, epilog="examples:\n  turtles log audit ./acme-log\n  turtles log audit --node http://127.0.0.1:8001",
    )
    p.add_argument("dir", metavar="DIR", nargs="?")
    p.add_argument("--node", metavar="URL", help="audit a node's log over HTTP instead")
    p.add_argument("--vkey", metavar="VKEY", help="with --node: the log key to pin (default: the one it announces)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_audit)


def run_init(args: argparse.Namespace) -> int:
    """``turtles log init``."""
    from node.locallog import (  # lazy: keeps CLI start-up fast (issue 7)
        LocalLogConfig,
        init_local_log,
    )

    config = LocalLogConfig(
        origin=args.origin, log_key=args.key, pkcs11_module=args.pkcs11_module, pin_file=args.pin_file,
        roots=tuple(args.roots) if args.roots else "any",
    )
    local = init_local_log(args.dir, config)
    try:
        print(f"created log {args.origin} in {args.dir}")
        print(f"verifier key: {local.log.vkey}")
    finally:
        local.holdings.close()
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    """``turtles log checkpoint``."""
    from node.locallog import open_local_log  # lazy: keeps CLI start-up fast (issue 7)

    with open_local_log(args.dir) as local:
        sys.stdout.write(local.log.checkpoint())
    return 0


def run_audit(args: argparse.Namespace) -> int:
    """``turtles log audit``."""
    from ledger.audit import audit_log  # lazy: keeps CLI start-up fast (issue 7)
    from ledger.holdings import LogGate
    from ledger.log import logged_from_entry
    from node.locallog import load_local_config, open_local_log, roots_policy

    if args.node:
        from node.audit_remote import audit_node  # lazy: pulls in the HTTP client

        report = audit_node(args.node, vkey=args.vkey, progress=_progress_printer())
    else:
        if not args.dir:
            raise InputError("turtles log audit: give DIR or --node URL")
        config = load_local_config(args.dir)
        with open_local_log(args.dir) as local:
            log = local.log
            report = audit_log(
                log.store, vkey=log.vkey,
                new_gate=lambda: LogGate(roots_policy(config.roots)),
                prepare=lambda gate, entry: logged_from_entry(gate, log.origin, entry),
                progress=_progress_printer(),
            )
    d = report.to_dict()
    print_json_or_line(args, d, f"audit ok: {d['origin']} size {d['size']} root {d['root']} "
                       f"({d['signatures']} signatures, {d['checkpoints']} checkpoints verified)")
    return 0


def _progress_printer() -> Callable[[int, int], None]:
    """A progress bar on a TTY (silent otherwise)."""
    return progress(None, "auditing")


__all__ = ["register"]
