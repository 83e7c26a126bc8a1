"""``turtles trust explain`` and ``turtles trust impact``: why a key, org or artefact is
trusted (or not), and what revoking a key would cut.

The node computes the answer (:func:`ledger.trust.explain` / :func:`ledger.trust.impact`)
and this module only renders the returned document: a chain for people, one line per
link, the weakest link highlighted; ``--json`` prints the same document for scripts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.cli._common import format_time_ms
from node.render import hop_text, short

_F = argparse.RawDescriptionHelpFormatter
EXIT_TRUSTED, EXIT_UNTRUSTED = 0, 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``trust`` verb group."""
    trust = sub.add_parser("trust", help="explain trust in a key, org or artefact; revocation impact")
    tsub = trust.add_subparsers(dest="trust_verb", metavar="ACTION", required=True)

    p = tsub.add_parser(
        "explain", help="every path from your anchors, each hop delegated or transitive", formatter_class=_F,
        epilog="examples:\n"
        "  turtles trust explain sha256:<keyid> --policy policy.toml --node http://127.0.0.1:8001\n"
        "  turtles trust explain libfoo-1.2.tar.gz --policy policy.toml --node URL --json\n"
        "exit codes: 0 trusted, 1 not trusted, 2 error",
    )
    p.add_argument("subject", help="a key id, an org name, a file or sha256:HEX of an artefact")
    p.add_argument("--policy", required=True, metavar="POLICY", help="consumer policy file (TOML)")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--purpose", default="release", help="purpose asked about (default release)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=run_explain)

    p = tsub.add_parser(
        "impact", help="what would lose trust if a key were revoked", formatter_class=_F,
        epilog="example:\n  turtles trust impact sha256:<keyid> --node http://127.0.0.1:8001",
    )
    p.add_argument("key", metavar="KEYID")
    p.add_argument("--node", required=True, metavar="URL")
    p.add_argument("--since", metavar="TIME", help="RFC 3339: revoke from this time (default: entirely)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_impact)


def subject_of(text: str) -> str:
    """A file becomes ``sha256:<hex>`` of its bytes; anything else is passed as is."""
    path = Path(text)
    if not text.startswith("sha256:") and path.is_file():
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()
    return text


def run_explain(args: argparse.Namespace) -> int:
    """``turtles trust explain``."""
    from node.client import NodeClient  # lazy: keeps `turtles --help` fast

    policy = Path(args.policy).read_text()
    doc = NodeClient(args.node).explain(subject_of(args.subject), purpose=args.purpose, policy=policy)
    _out(args, doc, explanation_text)
    return EXIT_TRUSTED if doc["trusted"] else EXIT_UNTRUSTED


def run_impact(args: argparse.Namespace) -> int:
    """``turtles trust impact``."""
    from node.client import NodeClient

    doc = NodeClient(args.node).impact(args.key, since=args.since)
    _out(args, doc, impact_text)
    return 0


def _out(args: argparse.Namespace, doc: Mapping[str, Any], render: Any) -> None:
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(doc, colour=_colour()))


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _path_lines(path: Mapping[str, Any], weakest_hop: int | None, colour: bool) -> list[str]:
    lines = []
    for i, hop in enumerate(path["hops"]):
        pos = hop["position"]
        text = f"{'  ' * i}{'└─ ' if i else ''}{hop_text(hop)}"
        if hop.get("join"):
            text += f"   [join: {hop.get('org_from')} → {hop.get('org_to')}]"
        text += f"   ({pos['origin']}#{pos['index']}, {format_time_ms(pos['ts'])})"
        if i == weakest_hop:
            text = _paint(text + "   ◀ weakest link", "1;33", colour)
        lines.append("  " + text)
    return lines


def explanation_text(doc: Mapping[str, Any], *, colour: bool = False) -> str:
    """An Explanation document as a chain of links, root first, for people."""
    verdict = (f"TRUSTED ({doc['trust']} trust)" if doc["trusted"] else "NOT TRUSTED")
    out = [_paint(f"{verdict}: {doc['kind']} {doc['subject']} for {doc.get('purpose') or 'any purpose'}",
                  "1;32" if doc["trusted"] else "1;31", colour),
           f"  as of {doc['time']}"]
    for n, path in enumerate(doc["paths"]):
        weakest = path.get("weakest") or {}
        status = f"accepted, {path['trust']}" if path["accepted"] else "rejected"
        out.append(f"path {n + 1} ({status}):")
        out.extend(_path_lines(path, weakest.get("hop"), colour))
        if weakest:
            out.append(f"  weakest link: {weakest['criterion']}: {weakest['why']}")
        for reason in path["reasons"]:
            ev = reason.get("evidence")
            where = f" (see {ev['origin']}#{ev['index']})" if ev else ""
            out.append(f"  ✗ {reason['code']}: {reason['message']}{where}")
    if not doc["paths"]:
        out.append("no path from any anchor of the policy")
    for r in doc.get("ignored_revocations", []):
        out.append(f"ignored revocation {r['position']['origin']}#{r['position']['index']}: {r['why']}")
    out.extend(f"note: {n}" for n in doc.get("notes", []))
    return "\n".join(out) + "\n"


def impact_text(doc: Mapping[str, Any], *, colour: bool = False) -> str:
    """An Impact document for people: what loses trust, what keeps another path."""
    since = f" from {format_time_ms(doc['since'])}" if doc.get("since") else " entirely"
    out = [f"revoking {doc['key']}{since} would cut:"]
    lost = [i for i in doc["items"] if i["loses_trust"]]
    kept = [i for i in doc["items"] if not i["loses_trust"]]
    for item in lost:
        names = f" ({', '.join(item['names'])})" if item.get("names") else ""
        out.append(_paint(f"  ✗ {item['kind']} {short(item['subject'], 20)}{names} of {item.get('org') or '?'}",
                          "31", colour))
    if not lost:
        out.append("  nothing")
    if kept:
        out.append("keeps trust through another path:")
        for item in kept:
            alt = item.get("alternative") or {}
            via = " ← ".join(hop_text(h) for h in reversed(alt.get("hops", [])))
            out.append(f"  ✓ {item['kind']} {short(item['subject'], 20)} via {via or 'another path'}")
    for org in doc["orgs"]:
        out.append(f"org {org['org']}: {org['keys_lost']} keys and {org['artefacts_lost']} artefacts lose trust, "
                   f"{org['keys_kept']} keys and {org['artefacts_kept']} artefacts keep it")
    if doc.get("truncated"):
        out.append("note: the search stopped at its bound; more may be affected")
    return "\n".join(out) + "\n"


__all__ = ["explanation_text", "impact_text", "register", "subject_of"]
