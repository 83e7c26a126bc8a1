"""Verbs that create key records: ``root init``, ``delegate``, ``endorse``, ``revoke``, ``rotate``.

Each builds one record, signs it with the KEYREF given (software PEM or pkcs11: URI) and
sends it to the SINK (``--node URL``, ``--log DIR`` or ``-o FILE``).
"""

from __future__ import annotations

import argparse

from ledger.entry import sign_record
from ledger.keys import parse_key_id
from ledger.records import PURPOSES, Delegation, Endorsement, Revocation, RootRecord, Rotation
from node.cli._common import (
    add_sink_options,
    emit,
    now_ms,
    parse_duration_ms,
    parse_time_ms,
    signer_from,
)

_F = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the key-record verbs."""
    root = sub.add_parser("root", help="declare an organisation's root key (the bottom turtle)")
    root_sub = root.add_subparsers(dest="root_verb", metavar="ACTION", required=True)
    p = root_sub.add_parser(
        "init", help="publish a self-signed root record", formatter_class=_F,
        epilog="example:\n  turtles root init --key 'pkcs11:token=acme;object=root' --org acme --node http://127.0.0.1:8001",
    )
    p.add_argument("--key", required=True, metavar="KEYREF", help="the root key (PEM file or pkcs11: URI)")
    p.add_argument("--org", required=True, help="organisation name (lowercase)")
    add_sink_options(p)
    p.set_defaults(func=run_root_init)

    p = sub.add_parser(
        "delegate", help="authorise a key for a scope", formatter_class=_F,
        epilog="example:\n  turtles delegate --key root.pem --to alice.pub --name alice --artefacts 'libfoo*' \\\n"
        "      --purpose release --max-depth 0 --expires 90d --log ./acme-log",
    )
    p.add_argument("--key", required=True, metavar="ISSUER_KEYREF", help="the issuing key")
    p.add_argument("--to", required=True, metavar="PUBKEY_FILE", help="PEM public (or private) key of the subject")
    p.add_argument("--name", required=True, help="who the subject is (e.g. a maintainer's name)")
    p.add_argument("--org", help="organisation the subject acts for (default: the issuer's)")
    p.add_argument("--artefacts", required=True, nargs="+", metavar="GLOB", help="artefact name globs")
    p.add_argument("--purpose", required=True, nargs="+", choices=PURPOSES, help="what the subject may do")
    p.add_argument("--max-depth", type=int, default=0, help="further delegation levels allowed (default 0)")
    p.add_argument("--expires", metavar="DURATION", help="validity from now, e.g. 90d (default: no expiry)")
    add_sink_options(p)
    p.set_defaults(func=run_delegate)

    p = sub.add_parser(
        "endorse", help="state trust in another organisation's root (transitive trust)", formatter_class=_F,
        epilog="example:\n  turtles endorse --key acme-root.pem --org globex --root sha256:... --purpose release --log ./acme-log",
    )
    p.add_argument("--key", required=True, metavar="KEYREF", help="the endorsing key")
    p.add_argument("--org", required=True, help="the endorsed organisation")
    p.add_argument("--root", required=True, metavar="KEYID", help="the endorsed root key id")
    p.add_argument("--purpose", required=True, nargs="+", choices=PURPOSES)
    p.add_argument("--expires", metavar="DURATION", help="validity from now (default: no expiry)")
    add_sink_options(p)
    p.set_defaults(func=run_endorse)

    p = sub.add_parser(
        "revoke", help="revoke a key, from a time or entirely", formatter_class=_F,
        epilog="example:\n  turtles revoke --key root.pem --target sha256:... --since 2026-11-01T00:00:00Z \\\n"
        "      --reason 'laptop stolen' --node http://127.0.0.1:8001",
    )
    p.add_argument("--key", required=True, metavar="KEYREF", help="the revoking key (issuer or above)")
    p.add_argument("--target", required=True, metavar="KEYID", help="the key to revoke")
    p.add_argument("--since", metavar="TIME", help="RFC 3339; records logged before stay valid (default: all)")
    p.add_argument("--reason", required=True, help="why (kept in the log)")
    add_sink_options(p)
    p.set_defaults(func=run_revoke)

    p = sub.add_parser(
        "rotate", help="hand a key's position over to a new key (signed by both)", formatter_class=_F,
        epilog="example:\n  turtles rotate --key old.pem --new-key new.pem --log ./acme-log",
    )
    p.add_argument("--key", required=True, metavar="OLD_KEYREF")
    p.add_argument("--new-key", required=True, metavar="NEW_KEYREF")
    add_sink_options(p)
    p.set_defaults(func=run_rotate)


def run_root_init(args: argparse.Namespace) -> int:
    """``turtles root init``."""
    signer = signer_from(args, args.key)
    record = RootRecord(args.org, signer.public_key, args.key.startswith("pkcs11:"), now_ms())
    print(f"root {record.key.key_id} for org {args.org} (hsm: {str(record.hsm).lower()})")
    return emit(args, sign_record(record, [signer]))


def run_delegate(args: argparse.Namespace) -> int:
    """``turtles delegate``."""
    signer = signer_from(args, args.key)
    from ledger.keyref import load_public_key  # lazy: keeps CLI start-up fast (issue 7)

    subject = load_public_key(args.to)
    now = now_ms()
    record = Delegation(
        issuer=signer.public_key.key_id, subject=subject, name=args.name, org=args.org,
        artefacts=tuple(sorted(set(args.artefacts))), purposes=tuple(sorted(set(args.purpose))),
        max_depth=args.max_depth, not_before=now,
        not_after=now + parse_duration_ms(args.expires) if args.expires else None, created=now,
    )
    print(f"delegation {signer.public_key.key_id} -> {subject.key_id} ({args.name})")
    return emit(args, sign_record(record, [signer]))


def run_endorse(args: argparse.Namespace) -> int:
    """``turtles endorse``."""
    signer = signer_from(args, args.key)
    now = now_ms()
    record = Endorsement(
        endorser=signer.public_key.key_id, org=args.org, root=parse_key_id(args.root),
        purposes=tuple(sorted(set(args.purpose))), not_before=now,
        not_after=now + parse_duration_ms(args.expires) if args.expires else None, created=now,
    )
    return emit(args, sign_record(record, [signer]))


def run_revoke(args: argparse.Namespace) -> int:
    """``turtles revoke``."""
    signer = signer_from(args, args.key)
    record = Revocation(
        issuer=signer.public_key.key_id, target=parse_key_id(args.target),
        since=parse_time_ms(args.since) if args.since else None, reason=args.reason, created=now_ms(),
    )
    return emit(args, sign_record(record, [signer]))


def run_rotate(args: argparse.Namespace) -> int:
    """``turtles rotate``."""
    old, new = signer_from(args, args.key), signer_from(args, args.new_key)
    record = Rotation(old=old.public_key.key_id, new=new.public_key, created=now_ms())
    print(f"rotation {old.public_key.key_id} -> {new.public_key.key_id}")
    return emit(args, sign_record(record, [old, new]))


__all__ = ["register"]
