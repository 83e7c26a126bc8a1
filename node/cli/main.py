"""The ``turtles`` command: parses arguments, dispatches to a verb module, maps errors.

Every verb module exposes ``register(subparsers)``; handlers take the parsed arguments and
return the exit code. All :class:`~ledger.errors.TurtlesError` are caught here and printed
as one line with a hint (tracebacks only with ``--debug``). Exit codes: 0 success or
trusted, 1 not trusted, 2 error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ledger.errors import TurtlesError
from node.cli import clustercmd, completion, keys, logcmd, nodecmd, provenance, records, trustcmd

EXIT_OK, EXIT_UNTRUSTED, EXIT_ERROR = 0, 1, 2

_GROUPS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (  # type: ignore[type-arg]
    keys.register,
    records.register,
    provenance.register,
    trustcmd.register,
    logcmd.register,
    nodecmd.register,
    clustercmd.register,
    completion.register,
)


_OVERVIEW = """\
A distributed trust ledger for software supply-chain provenance.

verbs by task:
  keys and the chain of trust   keys, root, delegate, endorse, revoke, rotate
  releases and provenance       attest, submit, cosign, verify, trace, bundle
  questions about trust         trust explain, trust impact
  logs, nodes, clusters         log, node, cluster
  shell                         completion"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate shell completion)."""
    parser = argparse.ArgumentParser(
        prog="turtles",
        description=_OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `turtles VERB --help` for examples. Exit codes: 0 ok/trusted, 1 not trusted, 2 error.\n"
        "Colour is off when output is not a terminal or NO_COLOR is set; --debug shows tracebacks.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for register in _GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except TurtlesError as e:
        if args.debug:
            raise
        hint = f" (hint: {e.hint})" if e.hint else ""
        print(f"turtles: error: {e.message}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("turtles: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        if args.debug:
            raise
        print(f"turtles: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
