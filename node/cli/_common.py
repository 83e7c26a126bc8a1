"""Options and helpers shared by the CLI verbs: key references, sinks, times.

KEYREF is a PEM file or an RFC 7512 ``pkcs11:`` URI (module and PIN from
``--pkcs11-module``/``--pin-file`` or ``TURTLES_PKCS11_MODULE``/``TURTLES_PKCS11_PIN``).
SINK is one of ``--node URL``, ``--log DIR`` or ``-o FILE``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputError
from ledger.keys import Signer

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def now_ms() -> int:
    """Current time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def parse_duration_ms(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (or a sum such as ``1d12h``) in milliseconds."""
    pos, total = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise InputError(f"not a duration: {text!r}", hint="use e.g. 90d, 12h, 30m, 1d12h")
    return total


def parse_time_ms(text: str) -> int:
    """An RFC 3339 time (``2026-01-02T03:04:05Z``) in Unix milliseconds."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"not an RFC 3339 time: {text!r}", hint="use e.g. 2026-01-02T03:04:05Z") from e
    if dt.tzinfo is None:
        raise InputError(f"time {text!r} has no time zone", hint="add Z or an offset such as +02:00")
    return int(dt.timestamp() * 1000)


def format_time_ms(ms: int | None) -> str:
    """RFC 3339 UTC form of a Unix-millisecond time (``never`` for None)."""
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """``--pkcs11-module`` and ``--pin-file`` (for pkcs11: KEYREFs)."""
    parser.add_argument("--pkcs11-module", metavar="PATH", help="PKCS#11 module (default $TURTLES_PKCS11_MODULE)")
    parser.add_argument("--pin-file", metavar="FILE", help="file holding the token PIN (default $TURTLES_PKCS11_PIN)")


def add_sink_options(parser: argparse.ArgumentParser) -> None:
    """Where a record goes: exactly one of --node, --log, -o."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--node", metavar="URL", help="submit to a turtles node")
    group.add_argument("--log", metavar="DIR", help="append to a local log directory")
    group.add_argument("-o", "--output", metavar="FILE", help="write the DSSE envelope as JSON")
    add_key_options(parser)


def signer_from(args: argparse.Namespace, keyref: str) -> Signer:
    """Load the signer a KEYREF names, with the PKCS#11 options of ``args``."""
    from ledger.keyref import load_signer  # lazy: keeps CLI start-up fast (issue 7)

    return load_signer(keyref, pkcs11_module=args.pkcs11_module, pin_file=args.pin_file)


def emit(args: argparse.Namespace, envelope: Envelope) -> int:
    """Send ``envelope`` to the sink of ``args`` and print where it went."""
    if args.output:
        Path(args.output).write_bytes(envelope.to_json() + b"\n")
        print(f"wrote {args.output}")
        return 0
    if args.node:
        from node.client import NodeClient  # lazy: keeps `turtles --help` fast

        result = NodeClient(args.node).submit(envelope)
    else:
        from node.locallog import open_local_log

        with open_local_log(args.log) as local:
            result = local.append(envelope)
    print_json_or_line(args, result, f"appended at index {result['index']} (tree size {result['size']})")
    return 0


def print_json_or_line(args: argparse.Namespace, obj: Any, line: str) -> None:
    """``--json`` output when asked for, else one human line."""
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(line)


def read_input_file(path: str, *, limit: int = 64 << 20) -> bytes:
    """Read a whole (bounded) input file."""
    p = Path(path)
    size = p.stat().st_size
    if size > limit:
        raise InputError(f"{path} has {size} bytes, more than {limit}")
    return p.read_bytes()
