"""Policy parsing: the DESIGN.md format, defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.errors import PolicyError
from ledger.trust import Anchor, Policy, load_policy, parse_policy

ROOT = "sha256:" + "ab" * 32
ROOT2 = "sha256:" + "cd" * 32
EXAMPLE = f"""
[[anchor]]
org = "acme"
root = "{ROOT}"          # root key id
purposes = ["release"]
[trust]
max_transitive_hops = 0      # 0: delegated trust only
require_hsm_root = true
witness_quorum = 0
"""


def test_design_example_parses() -> None:
    p = parse_policy(EXAMPLE)
    assert p.anchors == (Anchor(org="acme", root=ROOT, purposes=("release",)),)  # type: ignore[arg-type]
    assert (p.max_transitive_hops, p.require_hsm_root, p.witness_quorum) == (0, True, 0)
    assert p.allowed_algorithms == ("ed25519", "p256")
    assert p.max_path_length == 8


def test_defaults_without_trust_table() -> None:
    p = parse_policy(f'[[anchor]]\norg = "acme"\nroot = "{ROOT}"\npurposes = ["release", "build"]\n')
    assert p == Policy(anchors=(Anchor("acme", ROOT, ("build", "release")),))  # type: ignore[arg-type]


def test_every_setting() -> None:
    p = parse_policy(
        f'[[anchor]]\norg = "acme"\nroot = "{ROOT}"\npurposes = ["release"]\n'
        f'[[anchor]]\norg = "libfoo"\nroot = "{ROOT2}"\npurposes = ["build", "release"]\n'
        "[trust]\nmax_transitive_hops = 2\nrequire_hsm_root = false\nwitness_quorum = 3\n"
        'allowed_algorithms = ["ed25519"]\nmax_path_length = 5\n'
    )
    assert [a.org for a in p.anchors] == ["acme", "libfoo"]
    assert (p.max_transitive_hops, p.require_hsm_root, p.witness_quorum) == (2, False, 3)
    assert (p.allowed_algorithms, p.max_path_length) == (("ed25519",), 5)
    assert p.anchor_for(ROOT2) == p.anchors[1]
    assert p.anchor_for("sha256:" + "00" * 32) is None
    assert parse_policy(_toml(p.to_dict())) == p


def test_load_from_path_and_text(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text(EXAMPLE)
    assert load_policy(f) == load_policy(str(f)) == load_policy(EXAMPLE)


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as e:
        load_policy(tmp_path / "missing.toml")
    assert e.value.problem == "unreadable"  # type: ignore[attr-defined]
    assert "missing.toml" in e.value.message


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_bytes(b"\xff\xfe[")
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(f)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[[anchor]\n", "", "syntax"),
        (EXAMPLE + "[extra]\n", "extra", "unknown setting"),
        (EXAMPLE + "colour = 1\n", "trust.colour", "unknown setting"),
        (EXAMPLE.replace("max_transitive_hops = 0", "max_transitive_hops = true"),
         "trust.max_transitive_hops", "want an integer"),
        (EXAMPLE.replace("max_transitive_hops = 0", "max_transitive_hops = -1"),
         "trust.max_transitive_hops", "out of range"),
        (EXAMPLE.replace("max_transitive_hops = 0", 'max_transitive_hops = "1"'),
         "trust.max_transitive_hops", "want an integer"),
        (EXAMPLE.replace("require_hsm_root = true", "require_hsm_root = 1"),
         "trust.require_hsm_root", "true or false"),
        (EXAMPLE.replace("witness_quorum = 0", "witness_quorum = 1.5"), "trust.witness_quorum", "want an integer"),
        (EXAMPLE + 'allowed_algorithms = ["rsa"]\n', "trust.allowed_algorithms[0]", "not one of"),
        (EXAMPLE + "allowed_algorithms = []\n", "trust.allowed_algorithms", "must not be empty"),
        (EXAMPLE + 'allowed_algorithms = "ed25519"\n', "trust.allowed_algorithms", "want a list"),
        (EXAMPLE + 'allowed_algorithms = ["p256", "p256"]\n', "trust.allowed_algorithms", "duplicate"),
        (EXAMPLE + "max_path_length = 0\n", "trust.max_path_length", "out of range"),
        (EXAMPLE + "max_path_length = 65\n", "trust.max_path_length", "out of range"),
        ("[trust]\nwitness_quorum = 1\n", "anchor", "at least one"),
        ("anchor = 3\n", "anchor", "want one or more"),
        ("trust = 3\n" + EXAMPLE.split("[trust]")[0], "trust", "want a [trust] table"),
        (EXAMPLE.replace('org = "acme"', 'org = "ACME"'), "anchor[0].org", "not an org name"),
        (EXAMPLE.replace(f'root = "{ROOT}"', 'root = "sha256:xyz"'), "anchor[0].root", "not a key id"),
        (EXAMPLE.replace(f'root = "{ROOT}"', "root = 7"), "anchor[0].root", "want a key id"),
        (EXAMPLE.replace('purposes = ["release"]', 'purposes = ["publish"]'),
         "anchor[0].purposes[0]", "not one of"),
        (EXAMPLE.replace('purposes = ["release"]', "purposes = []"), "anchor[0].purposes", "must not be empty"),
        (EXAMPLE.replace('purposes = ["release"]', 'purposes = ["release"]\nkey = 1'),
         "anchor[0].key", "unknown setting"),
        (EXAMPLE.replace('purposes = ["release"]\n', ""), "anchor[0].purposes", "missing"),
        (EXAMPLE + f'[[anchor]]\norg = "b"\nroot = "{ROOT}"\npurposes = ["release"]\n',
         "anchor[1].root", "pinned twice"),
    ],
)
def test_errors_name_the_setting(text: str, key: str, problem: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(text)
    assert e.value.key == key  # type: ignore[attr-defined]
    assert problem in e.value.problem  # type: ignore[attr-defined]
    assert e.value.message.startswith(key)


def test_policy_object_validates_too() -> None:
    with pytest.raises(PolicyError, match="at least one"):
        Policy(anchors=())
    a = Anchor("acme", ROOT, ("release",))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"trust\.witness_quorum"):
        Policy(anchors=(a,), witness_quorum=-1)
    with pytest.raises(PolicyError, match=r"trust\.require_hsm_root"):
        Policy(anchors=(a,), require_hsm_root=1)  # type: ignore[arg-type]


def _toml(d: dict[str, object]) -> str:
    """Tiny TOML writer for the policy dict (round-trip check)."""
    lines = []
    for a in d["anchor"]:  # type: ignore[attr-defined]
        lines += ["[[anchor]]", f'org = "{a["org"]}"', f'root = "{a["root"]}"',
                  "purposes = [" + ", ".join(f'"{p}"' for p in a["purposes"]) + "]"]
    lines.append("[trust]")
    for k, v in d["trust"].items():  # type: ignore[attr-defined]
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{k} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"
