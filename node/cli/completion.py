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
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ledger.errors import InputError

Shell = Literal["bash", "zsh", "fish"]
SHELLS: tuple[Shell, ...] = ("bash", "zsh", "fish")
ValueKind = Literal["none", "text", "choice", "file", "dir"]

_WORD = re.compile(r"-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]*")
_DIR_HINT = re.compile(r"\bDIR\b")
_FILE_HINT = re.compile(r"FILE|PATH|OUT|POLICY|KEYREF|\.json|ENVELOPE", re.IGNORECASE)
_F = argparse.RawDescriptionHelpFormatter


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
                _check_word(name)
                subs.append((name, _one_line(helps.get(name, ""))))
                children.extend(_walk(sub._actions, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                _check_word(flag)
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
        _check_word(choice)
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


def _check_word(word: str) -> None:
    if not _WORD.fullmatch(word):
        raise InputError(f"cannot generate completion for {word!r}: not a plain word")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text.replace("%%", "%")  # argparse help strings escape % as %%


# --- bash ----------------------------------------------------------------------------------------


def _case_lines(entries: Iterable[tuple[str, str]], indent: str = "        ") -> list[str]:
    """``pattern) body ;;`` lines; patterns are quoted, so spaces and ``|`` are literal."""
    return [f"{indent}{_sh_quote(pattern)}) {body} ;;" for pattern, body in entries]


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _value_spec(option: Option) -> str:
    if option.kind == "choice":
        return " ".join(option.choices)
    return {"file": "@file", "dir": "@dir"}.get(option.kind, "")


def _positional_spec(command: Command) -> str:
    if command.positional == "choice":
        return " ".join(command.positional_choices)
    return {"file": "@file", "dir": "@dir"}.get(command.positional, "")


def _tables(commands: Sequence[Command]) -> tuple[list[tuple[str, str]], list[tuple[str, str]],
                                                     list[tuple[str, str]], list[tuple[str, str]]]:
    """(subcommands, options, values, positionals) as (case pattern, words) pairs."""
    subs = [(c.key, " ".join(n for n, _ in c.subcommands)) for c in commands if c.subcommands]
    opts = [(c.key, " ".join(f for o in c.options for f in o.flags)) for c in commands]
    vals = [(f"{c.key}|{flag}", _value_spec(o)) for c in commands for o in c.options if o.takes_value
            for flag in o.flags]
    pos = [(c.key, _positional_spec(c)) for c in commands
           if c.positional in ("file", "dir", "choice") and not c.subcommands]
    return subs, opts, vals, pos


def bash_script(commands: Sequence[Command], prog: str = "turtles") -> str:
    """A bash completion script (``complete -F _turtles turtles``)."""
    _check_word(prog)
    fn = "_" + prog.replace("-", "_")
    subs, opts, vals, pos = _tables(commands)

    def table(name: str, entries: list[tuple[str, str]], key: str) -> list[str]:
        return [f"{fn}_{name}() {{", f'    case "{key}" in',
                *_case_lines((p, f"echo {_sh_quote(w)}") for p, w in entries),
                "    esac", "}"]

    lines = [
        f"# bash completion for {prog}; generated by `{prog} completion bash` from its parser.",
        f"# Install: {prog} completion bash > /etc/bash_completion.d/{prog}   (or: source <({prog} completion bash))",
        "",
        *table("subcommands", subs, "$1"),
        *table("options", opts, "$1"),
        "# An option's value: its choices, @file or @dir (nothing listed: free text; not an option: status 1).",
        f"{fn}_values() {{",
        '    case "$1|$2" in',
        *_case_lines((p, f"echo {_sh_quote(w)}") for p, w in vals),
        "        *) return 1 ;;",
        "    esac",
        "}",
        *table("positionals", pos, "$1"),
        "",
        f"{fn}_reply() {{  # $1: a value spec, $2: the word being completed",
        '    case "$1" in',
        '        @file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$2")) ;;',
        '        @dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$2")) ;;',
        '        *) COMPREPLY=($(compgen -W "$1" -- "$2")) ;;',
        "    esac",
        "}",
        "",
        f"{fn}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" cmd="" w i skip=0 spec',
        "    COMPREPLY=()",
        "    # The command path typed so far: sub-verbs, skipping options and their values.",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        w="${COMP_WORDS[i]}"',
        "        # --opt=value arrives split at '=' (COMP_WORDBREAKS): the word after '=' is a value.",
        '        if [[ "$w" == "=" ]]; then skip=1; continue; fi',
        "        if ((skip)); then skip=0; continue; fi",
        '        case "$w" in',
        "            --*=*) continue ;;",
        f'            -*) if {fn}_values "$cmd" "$w" >/dev/null; then skip=1; fi; continue ;;',
        "        esac",
        f'        if [[ " $({fn}_subcommands "$cmd") " == *" $w "* ]]; then cmd="${{cmd:+$cmd }}$w"; fi',
        "    done",
        '    ((COMP_CWORD > 0)) && prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    if [[ "$prev" == "=" && COMP_CWORD -gt 1 ]]; then prev="${COMP_WORDS[COMP_CWORD-2]}"; fi',
        f'    if [[ "$prev" == -* ]] && spec="$({fn}_values "$cmd" "$prev")"; then',
        f'        {fn}_reply "$spec" "$cur"',
        "        return 0",
        "    fi",
        '    if [[ "$cur" == -* ]]; then',
        f'        COMPREPLY=($(compgen -W "$({fn}_options "$cmd")" -- "$cur"))',
        "        return 0",
        "    fi",
        f'    spec="$({fn}_subcommands "$cmd")"',
        '    if [[ -n "$spec" ]]; then',
        '        COMPREPLY=($(compgen -W "$spec" -- "$cur"))',
        "        return 0",
        "    fi",
        f'    spec="$({fn}_positionals "$cmd")"',
        f'    [[ -n "$spec" ]] && {fn}_reply "$spec" "$cur"',
        "    return 0",
        "}",
        "",
        f"complete -o bashdefault -o default -F {fn} {prog}",
        "",
    ]
    return "\n".join(lines)


# --- zsh -----------------------------------------------------------------------------------------


def _zsh_describe_items(pairs: Iterable[tuple[str, str]]) -> str:
    """A zsh array body of ``name:description`` items, each single-quoted.

    ``_describe`` splits an item at its first unescaped colon; names are plain words (no
    colon), so a colon in a description is left as it is.
    """
    return " ".join(_sh_quote(f"{name}:{text}" if text else name) for name, text in pairs)


def zsh_script(commands: Sequence[Command], prog: str = "turtles") -> str:
    """A zsh completion script: autoloadable as ``_turtles`` from ``$fpath``, or sourced."""
    _check_word(prog)
    fn = "_" + prog.replace("-", "_")
    subs, _, vals, pos = _tables(commands)
    sub_items = [(c.key, _zsh_describe_items(c.subcommands)) for c in commands if c.subcommands]
    opt_items = [(c.key, _zsh_describe_items((f, o.help) for o in c.options for f in o.flags)) for c in commands]

    def table(name: str, entries: list[tuple[str, str]], body: str) -> list[str]:
        return [f"{fn}_{name}() {{", '  case "$1" in',
                *_case_lines(((p, body.format(w)) for p, w in entries), indent="    "),
                "  esac", "}"]

    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}; generated by `{prog} completion zsh` from its parser.",
        f"# Install: {prog} completion zsh > \"${{fpath[1]}}/_{prog}\"   (or: source <({prog} completion zsh))",
        "",
        *table("subcommands", sub_items, "reply=({})"),
        *table("options", opt_items, "reply=({})"),
        f"{fn}_subnames() {{",
        '  case "$1" in',
        *_case_lines(((p, f"echo {_sh_quote(w)}") for p, w in subs), indent="    "),
        "  esac",
        "}",
        f"{fn}_values() {{",
        '  case "$1|$2" in',
        *_case_lines(((p, f"echo {_sh_quote(w)}") for p, w in vals), indent="    "),
        "    (*) return 1 ;;",
        "  esac",
        "}",
        f"{fn}_positionals() {{",
        '  case "$1" in',
        *_case_lines(((p, f"echo {_sh_quote(w)}") for p, w in pos), indent="    "),
        "  esac",
        "}",
        f"{fn}_complete_value() {{",
        '  case "$1" in',
        "    (@file) _files ;;",
        "    (@dir) _files -/ ;;",
        "    ('') _message 'value' ;;",
        "    (*) compadd -- ${=1} ;;",
        "  esac",
        "}",
        "",
        f"{fn}() {{",
        "  local cmd='' w spec i skip=0",
        "  local -a reply",
        "  for ((i = 2; i < CURRENT; i++)); do",
        "    w=${words[i]}",
        "    if ((skip)); then skip=0; continue; fi",
        "    case $w in",
        "      (--*=*) continue ;;",
        f'      (-*) {fn}_values "$cmd" "$w" >/dev/null && skip=1; continue ;;',
        "    esac",
        f'    if [[ " $({fn}_subnames "$cmd") " == *" $w "* ]]; then cmd="${{cmd:+$cmd }}$w"; fi',
        "  done",
        "  local prev=${words[CURRENT-1]} cur=${words[CURRENT]}",
        f'  if [[ $prev == -* ]] && spec=$({fn}_values "$cmd" "$prev"); then',
        f'    {fn}_complete_value "$spec"',
        "    return",
        "  fi",
        "  if [[ $cur == -* ]]; then",
        f'    {fn}_options "$cmd"',
        "    _describe -t options 'option' reply",
        "    return",
        "  fi",
        f'  {fn}_subcommands "$cmd"',
        "  if (( ${#reply} )); then",
        "    _describe -t commands 'command' reply",
        "    return",
        "  fi",
        f'  spec=$({fn}_positionals "$cmd")',
        f'  [[ -n $spec ]] && {fn}_complete_value "$spec"',
        "}",
        "",
        f'if [[ "${{funcstack[1]}}" == "{fn}" ]]; then',
        f'  {fn} "$@"',
        "else",
        f"  compdef {fn} {prog}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# --- fish ----------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(commands: Sequence[Command], prog: str = "turtles") -> str:
    """A fish completion script (``complete -c turtles ...`` lines and two helper functions)."""
    _check_word(prog)
    fn = "__" + prog.replace("-", "_")
    subs, _, vals, _ = _tables(commands)
    takes = sorted({p for p, _ in vals})
    lines = [
        f"# fish completion for {prog}; generated by `{prog} completion fish` from its parser.",
        f"# Install: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        "",
        f"function {fn}_subcommands",
        "    switch $argv[1]",
        *[f"        case {_fish_quote(p)}\n            printf '%s\\n' {' '.join(_fish_quote(w) for w in words.split())}"
          for p, words in subs],
        "    end",
        "end",
        "",
        f"function {fn}_takes_value",
        '    switch "$argv[1]|$argv[2]"',
        *([f"        case {' '.join(_fish_quote(t) for t in takes)}", "            return 0"] if takes else []),
        "    end",
        "    return 1",
        "end",
        "",
        "# The command path typed so far: sub-verbs, skipping options and their values.",
        f"function {fn}_path",
        "    set -l path",
        "    set -l skip 0",
        "    set -l tokens (commandline -opc)",
        "    set -e tokens[1]",
        "    for w in $tokens",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $w",
        "            case '--*=*'",
        "                continue",
        "            case '-*'",
        f'                if {fn}_takes_value "$path" $w',
        "                    set skip 1",
        "                end",
        "                continue",
        "        end",
        f'        if contains -- $w ({fn}_subcommands "$path")',
        "            set path $path $w",
        "        end",
        "    end",
        "    echo $path",
        "end",
        "",
        f"function {fn}_at",
        f"    set -l here ({fn}_path)",
        '    test "$here" = "$argv[1]"',
        "end",
        "",
        f"complete -c {prog} -f",
    ]
    for c in commands:
        cond = f"-n {_fish_quote(f'{fn}_at {_fish_quote(c.key)}')}"
        for name, text in c.subcommands:
            lines.append(f"complete -c {prog} {cond} -a {_fish_quote(name)} -d {_fish_quote(text)}")
        for o in c.options:
            flags = []
            for f in o.flags:
                flags.append(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}" if len(f) == 2 else f"-o {f[1:]}")
            extra = ""
            if o.kind == "choice":
                extra = f" -x -a {_fish_quote(' '.join(o.choices))}"
            elif o.kind == "file":
                extra = " -r -F"
            elif o.kind == "dir":
                extra = " -x -a '(__fish_complete_directories)'"
            elif o.kind == "text":
                extra = " -x"
            lines.append(f"complete -c {prog} {cond} {' '.join(flags)}{extra} -d {_fish_quote(o.help)}")
        if c.positional == "choice" and not c.subcommands:
            lines.append(f"complete -c {prog} {cond} -x -a {_fish_quote(' '.join(c.positional_choices))}")
        elif c.positional == "file" and not c.subcommands:
            lines.append(f"complete -c {prog} {cond} -F")
        elif c.positional == "dir" and not c.subcommands:
            lines.append(f"complete -c {prog} {cond} -x -a '(__fish_complete_directories)'")
    lines.append("")
    return "\n".join(lines)


# --- the verb ------------------------------------------------------------------------------------


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
    "bash_script",
    "describe",
    "fish_script",
    "register",
    "script",
    "zsh_script",
]
