"""A model of the ``turtles`` command line, read from its live argparse parser.

:func:`describe` walks the parser and returns one :class:`Command` per verb and sub-verb,
with its options, the kind of value each takes (choices, a file, a directory, free text)
and its first positional argument; the shell script generators
(:mod:`node.cli._completion_scripts`) work from this model only.

Invariants:
* Deterministic: the model depends only on the parser (registration order, no clock, no
  environment); parents come before their children.
* Every name that reaches the model (verbs, flags, choices) is a plain word (letters,
  digits, ``-``, ``_``, ``.``), checked by :func:`check_word`, so no name can inject shell
  code; help texts are folded to one line but are not quoted here (each shell quotes them).
* Suppressed options (``help=SUPPRESS``) are left out.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ledger.errors import InputError

ValueKind = Literal["none", "text", "choice", "file", "dir"]

_WORD = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]*")
_DIR_HINT = re.compile(r"\bDIR\b")
_FILE_HINT = re.compile(r"FILE|PATH|OUT|POLICY|KEYREF|\.json|ENVELOPE", re.IGNORECASE)


@dataclass(frozen=True)
class Option:
    """One option of a command: its flags, whether it takes a value and what kind."""

    flags: tuple[str, ...]
    help: str
    kind: ValueKind
    choices: tuple[str, ...] = ()

    @property
    def takes_value(self) -> bool:
        """Whether the next word is this option's value."""
        return self.kind != "none"


@dataclass(frozen=True)
class Command:
    """A command at some path (``()`` is ``turtles`` itself; ``("keys", "generate")``)."""

    path: tuple[str, ...]
    help: str
    options: tuple[Option, ...]
    subcommands: tuple[tuple[str, str], ...]
    positional: ValueKind
    positional_choices: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The path as the scripts spell it: words joined by one space."""
        return " ".join(self.path)


# --- reading the parser --------------------------------------------------------------------------


def describe(parser: argparse.ArgumentParser) -> list[Command]:
    """Every command of ``parser``, parents before children, in registration order."""
    return _walk(parser._actions, (), "")


def _walk(actions: Sequence[argparse.Action], path: tuple[str, ...], help_text: str) -> list[Command]:
    options: list[Option] = []
    subs: list[tuple[str, str]] = []
    children: list[Command] = []
    positional: ValueKind = "none"
    positional_choices: tuple[str, ...] = ()
    for action in actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                check_word(name)
                subs.append((name, _one_line(helps.get(name, ""))))
                children.extend(_walk(sub._actions, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                check_word(flag)
            options.append(_option(action))
        elif positional == "none":
            positional = _value_kind(action)
            if positional == "choice":
                positional_choices = _choices(action)
    command = Command(path, _one_line(help_text), tuple(options), tuple(subs), positional, positional_choices)
    return [command, *children]


def _option(action: argparse.Action) -> Option:
    kind = "none" if action.nargs == 0 else _value_kind(action)
    choices = _choices(action) if kind == "choice" else ()
    return Option(tuple(action.option_strings), _one_line(action.help or ""), kind, choices)


def _choices(action: argparse.Action) -> tuple[str, ...]:
    choices = tuple(str(c) for c in action.choices or ())
    for choice in choices:
        check_word(choice)
    return choices


def _value_kind(action: argparse.Action) -> ValueKind:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "choice"
    hint = str(action.metavar or action.dest or "")
    if _DIR_HINT.search(hint):
        return "dir"
    if _FILE_HINT.search(hint) or "file" in (action.help or "").lower():
        return "file"
    return "text"


def check_word(word: str) -> None:
    """Refuse ``word`` unless it is a plain word (safe to write unquoted into a shell script).

    Raises:
        InputError: ``word`` is not a plain word.
    """
    if not _WORD.fullmatch(word):
        raise InputError(f"cannot generate completion for {word!r}: not a plain word")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text.replace("%%", "%")  # argparse help strings escape % as %%


__all__ = ["Command", "Option", "ValueKind", "check_word", "describe"]
