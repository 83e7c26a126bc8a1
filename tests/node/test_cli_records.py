"""The key-record and log verbs against a local log directory, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, open_note
from ledger.envelope import Envelope
from ledger.records import Delegation, Revocation
from node.cli.main import main
from node.locallog import open_local_log


def turtles(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("log", "root", "alice", "bob"):
        assert turtles(capsys, "keys", "generate", "--out", f"{name}.pem")[0] == 0
    code, out, err = turtles(capsys, "log", "init", "acme-log", "--origin", "test.turtles/acme", "--key", "log.pem")
    assert code == 0, err
    assert "verifier key: test.turtles/acme+" in out
    return tmp_path


def key_id(path: str) -> str:
    from ledger.keyref import load_public_key

    return load_public_key(path).key_id


def test_a_chain_built_with_the_cli(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert turtles(capsys, "root", "init", "--key", "root.pem", "--org", "acme", "--log", "acme-log")[0] == 0
    code, out, err = turtles(capsys, "delegate", "--key", "root.pem", "--to", "alice.pem.pub", "--name", "alice",
                             "--artefacts", "libfoo*@*", "--purpose", "release", "delegate", "--max-depth", "1",
                             "--expires", "90d", "--log", "acme-log")
    assert code == 0, err
    assert "appended at index 1" in out
    # alice may delegate one level further, to bob, for a narrower scope
    code, _, err = turtles(capsys, "delegate", "--key", "alice.pem", "--to", "bob.pem.pub", "--name", "bob",
                           "--artefacts", "libfoo-doc@*", "--purpose", "release", "--log", "acme-log")
    assert code == 0, err
    Path("libfoo-doc-1.0.tar.gz").write_bytes(b"docs")
    code, _, err = turtles(capsys, "attest", "libfoo-doc-1.0.tar.gz", "--key", "bob.pem", "--name",
                           "libfoo-doc@1.0", "--log", "acme-log")
    assert code == 0, err
    # bob was never given libfoo itself: refused with the reason, nothing appended
    Path("libfoo-1.0.tar.gz").write_bytes(b"lib")
    code, _, err = turtles(capsys, "attest", "libfoo-1.0.tar.gz", "--key", "bob.pem", "--name", "libfoo@1.0",
                           "--log", "acme-log")
    assert code == 2 and err.startswith("turtles: error:") and "libfoo" in err and err.count("\n") == 1
    code, _, err = turtles(capsys, "revoke", "--key", "root.pem", "--target", key_id("alice.pem"),
                           "--since", "2030-01-01T00:00:00Z", "--reason", "leaving", "--log", "acme-log")
    assert code == 0, err
    code, _, err = turtles(capsys, "rotate", "--key", "root.pem", "--new-key", "log.pem", "-o", "rotation.json")
    assert code == 0, err
    assert Envelope.from_json(Path("rotation.json").read_bytes()).key_ids == (key_id("root.pem"), key_id("log.pem"))

    code, out, _ = turtles(capsys, "log", "checkpoint", "acme-log")
    with open_local_log("acme-log") as local:
        assert Checkpoint.parse(open_note(out, local.log.vkey)).size == 5
        records = [e.envelope for e in local.log.entries(0, 5)]
    d = Delegation.from_payload(records[1].payload)
    assert d.artefacts == ("libfoo*@*",) and d.purposes == ("delegate", "release") and d.max_depth == 1
    assert d.not_after is not None and d.not_after - d.not_before == 90 * 86_400_000
    assert Revocation.from_payload(records[4].payload).since == 1_893_456_000_000

    code, out, err = turtles(capsys, "log", "audit", "acme-log", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["size"] == 5 and report["kinds"] == {"attestation": 1, "delegation": 2, "revocation": 1, "root": 1}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("delegate", "--key", "root.pem", "--to", "alice.pem.pub", "--name", "a", "--artefacts", "x",
          "--purpose", "release", "--expires", "90 days", "-o", "x.json"), "not a duration"),
        (("revoke", "--key", "root.pem", "--target", "sha256:1234", "--reason", "r", "-o", "x.json"), "not a key id"),
        (("revoke", "--key", "root.pem", "--target", "sha256:" + "a" * 64, "--since", "yesterday",
          "--reason", "r", "-o", "x.json"), "not an RFC 3339 time"),
        (("root", "init", "--key", "missing.pem", "--org", "acme", "-o", "x.json"), "missing.pem"),
        (("root", "init", "--key", "root.pem", "--org", "Not An Org", "-o", "x.json"), "org"),
        (("log", "checkpoint", "nowhere"), "not a turtles log directory"),
    ],
)
def test_errors_are_one_line_naming_the_problem(ws: Path, capsys: pytest.CaptureFixture[str],
                                                args: tuple[str, ...], words: str) -> None:
    code, _, err = turtles(capsys, *args)
    assert code == 2
    assert err.startswith("turtles: error:") and words in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_log_directory_is_not_created_twice(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = turtles(capsys, "log", "init", "acme-log", "--origin", "x/y", "--key", "log.pem")
    assert code == 2 and "already holds a log" in err
