"""``turtles completion bash|zsh|fish``: a shell completion script generated from the parser.

The script is derived from the live argparse parser (every verb, sub-verb, option, option
choice and help text), so it never drifts from the CLI. Install it with, for example::

    turtles completion bash > /etc/bash_completion.d/turtles        # or: source <(turtles completion bash)
    turtles completion zsh  > "${fpath[1]}/_turtles"                 # or: source <(turtles completion zsh)
    turtles completion fish > ~/.config/fish/completions/turtles.fish

What the scripts complete: verbs and sub-verbs at each level, options of the verb being
typed (``--node``, ``--policy``...), the values of options with fixed choices (``--alg``,
``--purpose``, ``--format``), and file or directory names where an option or positional
argument names one (metavars such as ``FILE``, ``DIR``, ``KEYREF``, ``POLICY``).

Invariants: the generated text depends only on the parser (deterministic, no clock, no
environment), and every name that reaches a shell script is checked to be a plain word
(letters, digits, ``-``, ``_``, ``.``), so no help text or option name can inject shell code;
help texts are quoted for each shell.

Layout: :mod:`node.cli._completion_model` reads the parser into a model of the CLI,
:mod:`node.cli._completion_scripts` writes one script per shell from that model; this module
is the verb, and re-exports the public names of both so existing imports keep working.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Literal

from ledger.errors import InputError
from node.cli._completion_model import Command, Option, ValueKind, describe
from node.cli._completion_scripts import bash_script, fish_script, zsh_script

Shell = Literal["bash", "zsh", "fish"]
SHELLS: tuple[Shell, ...] = ("bash", "zsh", "fish")
_F = argparse.RawDescriptionHelpFormatter


def script(shell: str, parser: argparse.ArgumentParser, prog: str | None = None) -> str:
    """The completion script for ``shell`` generated from ``parser``.

    Raises:
        InputError: an unknown shell, or a name in the parser that is not a plain word.
    """
    commands = describe(parser)
    name = prog or parser.prog
    if shell == "bash":
        return bash_script(commands, name)
    if shell == "zsh":
        return zsh_script(commands, name)
    if shell == "fish":
        return fish_script(commands, name)
    raise InputError(f"no completion for shell {shell!r}", hint=f"choose one of {', '.join(SHELLS)}")


class _RootView(argparse.ArgumentParser):
    """The root parser seen through the sub-verb action it holds (see :func:`register`)."""

    def __init__(self, actions: list[argparse.Action], prog: str) -> None:
        super().__init__(prog=prog, add_help=False)
        self._actions = actions


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``completion`` verb to a ``turtles`` parser.

    The script is generated when the verb runs, from the parser that parsed the command
    line: argparse records the root parser's action list on the sub-verb action
    (``subparsers.container._actions``), so every verb registered before or after this one,
    and the root options (``--debug``), are included without this module importing
    :mod:`node.cli.main`.
    """
    p = subparsers.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)", formatter_class=_F,
        description="Print a completion script for SHELL, generated from turtles' own parser.",
        epilog="examples:\n"
        "  source <(turtles completion bash)                                # this bash session\n"
        "  turtles completion bash > /etc/bash_completion.d/turtles\n"
        "  turtles completion zsh > \"${fpath[1]}/_turtles\"                  # then: compinit\n"
        "  turtles completion fish > ~/.config/fish/completions/turtles.fish",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    container = getattr(subparsers, "container", None)
    actions = getattr(container, "_actions", None)
    if not isinstance(actions, list):
        raise TypeError("argparse no longer records the container of a sub-verb action")
    root_prog = subparsers._prog_prefix.split()[0] if subparsers._prog_prefix else "turtles"

    def run(args: argparse.Namespace) -> int:
        sys.stdout.write(script(args.shell, _RootView(actions, root_prog)))
        return 0

    p.set_defaults(func=run)


__all__ = [
    "SHELLS",
    "Command",
    "Option",
    "Shell",
    "ValueKind",
    "bash_script",
    "describe",
    "fish_script",
    "register",
    "script",
    "zsh_script",
]
