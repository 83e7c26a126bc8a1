"""``turtles completion``: scripts generated from the real parser; the bash one is run in bash."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.errors import InputError
from node.cli import completion
from node.cli.main import build_parser

BASH = shutil.which("bash")


def _parser() -> argparse.ArgumentParser:
    """The real ``turtles`` parser, with the completion verb whether main lists it yet or not."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "completion" not in sub.choices:
        completion.register(sub)
    return parser


def _generate(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    parser = _parser()
    args = parser.parse_args(["completion", shell])
    assert args.func(args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "turtles.bash"
    path.write_text(completion.script("bash", _parser(), prog="turtles"))
    return path


def _complete(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end), via the generated function."""
    assert BASH is not None, "bash is needed to test the bash completion"
    words = line.split(" ")
    prog = "\n".join([
        f"source {script}",
        "COMP_WORDS=(" + " ".join(_bash_quote(w) for w in words) + ")",
        f"COMP_CWORD={len(words) - 1}",
        f"COMP_LINE={_bash_quote(line)}",
        f"COMP_POINT={len(line)}",
        "_turtles",
        'printf "%s\\n" "${COMPREPLY[@]}"',
    ])
    done = subprocess.run([BASH, "--norc", "--noprofile", "-c", prog], capture_output=True, text=True,
                          timeout=60, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [w for w in done.stdout.split("\n") if w]


def _bash_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_the_verb_prints_a_script_for_each_shell(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in completion.SHELLS:
        text = _generate(shell, capsys)
        for verb in ("keys", "delegate", "verify", "trust", "cluster", "completion"):
            assert verb in text, (shell, verb)
    assert _generate("zsh", capsys).startswith("#compdef turtles\n")
    assert "complete -c turtles" in _generate("fish", capsys)


def test_an_unknown_shell_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["completion", "tcsh"])
    with pytest.raises(InputError):
        completion.script("tcsh", _parser())


def test_the_description_covers_every_verb_and_option_of_the_parser() -> None:
    commands = {c.key: c for c in completion.describe(_parser())}
    assert {"keys generate", "root init", "delegate", "trust explain", "log audit", "node start",
            "cluster up", "completion"} <= set(commands)
    generate = {f: o for o in commands["keys generate"].options for f in o.flags}
    assert generate["--alg"].choices == ("ed25519", "p256")
    assert generate["--out"].kind == "file" and generate["--hsm"].takes_value
    assert generate["--help"].kind == "none"
    assert "--debug" in {f for o in commands[""].options for f in o.flags}
    assert commands["node init"].positional == "dir"
    assert commands["attest"].positional == "file"


def test_generation_is_deterministic() -> None:
    for shell in completion.SHELLS:
        assert completion.script(shell, _parser()) == completion.script(shell, _parser())


def test_a_name_that_is_not_a_plain_word_is_refused() -> None:
    parser = argparse.ArgumentParser(prog="turtles")
    sub = parser.add_subparsers()
    sub.add_parser("bad;rm -rf")
    with pytest.raises(InputError, match="not a plain word"):
        completion.script("bash", parser)


def test_bash_script_is_valid_syntax(bash_script: Path) -> None:
    assert BASH is not None
    done = subprocess.run([BASH, "-n", str(bash_script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_bash_completes_verbs(bash_script: Path) -> None:
    verbs = _complete(bash_script, "turtles ")
    assert {"keys", "root", "delegate", "verify", "trust", "log", "node", "cluster", "completion"} <= set(verbs)
    assert _complete(bash_script, "turtles de") == ["delegate"]
    assert sorted(_complete(bash_script, "turtles tr")) == ["trace", "trust"]
    assert sorted(_complete(bash_script, "turtles trust ")) == ["explain", "impact"]
    assert _complete(bash_script, "turtles cluster u") == ["up"]


def test_bash_completes_options_of_the_verb_being_typed(bash_script: Path) -> None:
    options = _complete(bash_script, "turtles keys generate --")
    assert {"--out", "--hsm", "--alg", "--pkcs11-module", "--pin-file"} <= set(options)
    assert "--debug" not in options  # a root option, not one of keys generate
    assert _complete(bash_script, "turtles verify x --pol") == ["--policy"]
    assert "--debug" in _complete(bash_script, "turtles --d")


def test_bash_completes_option_values(bash_script: Path) -> None:
    assert sorted(_complete(bash_script, "turtles keys generate --alg ")) == ["ed25519", "p256"]
    assert _complete(bash_script, "turtles keys generate --alg e") == ["ed25519"]
    assert _complete(bash_script, "turtles keys generate --alg = p") == ["p256"]  # --alg=p, split at '='
    assert sorted(_complete(bash_script, "turtles delegate --purpose ")) == ["build", "delegate", "log", "release"]
    assert sorted(_complete(bash_script, "turtles completion ")) == ["bash", "fish", "zsh"]


def test_bash_skips_option_values_when_finding_the_verb(bash_script: Path) -> None:
    # "keys" is the value of --node here, not the verb group: trust explain's options follow.
    assert "--policy" in _complete(bash_script, "turtles trust explain --node keys --")
    assert sorted(_complete(bash_script, "turtles --debug trust ")) == ["explain", "impact"]


def test_bash_completes_file_names_where_a_file_is_expected(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("")
    (tmp_path / "pubkeys").mkdir()
    assert _complete(bash_script, "turtles verify app.tgz --policy pol", cwd=tmp_path) == ["policy.toml"]
    assert _complete(bash_script, "turtles node init pub", cwd=tmp_path) == ["pubkeys"]
    assert _complete(bash_script, "turtles attest pol", cwd=tmp_path) == ["policy.toml"]
