"""``turtles submit`` with many envelopes: a bulk import in batches, to a node or a local log;
refusals are named per file and the exit code is 2 when any envelope was refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.keys import SoftwareSigner
from node.cli import provenance
from node.cli.main import main
from node.client import NodeClient
from tests.node.conftest import LiveNode, attestation, root_envelope


def _files(tmp_path: Path, n: int, signer: SoftwareSigner, bad: SoftwareSigner) -> list[str]:
    paths = []
    for i in range(n):
        env = attestation(bad if i == 3 else signer, f"pkg-{i}", f"content {i}".encode())[1]
        path = tmp_path / f"att-{i:03d}.json"
        path.write_bytes(env.to_json())
        paths.append(str(path))
    return paths


def test_bulk_import_to_a_node_in_batches(live_node: LiveNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(provenance, "BULK_CHUNK", 7)  # several batches
    root, env = root_envelope("acme")
    client = NodeClient(live_node.url)
    client.submit(env)
    stranger = SoftwareSigner.generate()
    paths = _files(tmp_path, 20, root, stranger)
    assert main(["submit", *paths, "--node", live_node.url]) == 2
    out = capsys.readouterr()
    assert "imported 19 of 20 envelopes" in out.out
    assert "att-003.json" in out.err and "unknown_signer" in out.err
    assert client.log_info()["size"] == 1 + 19
    # a second import is idempotent: duplicates are not refusals
    assert main(["submit", paths[0], paths[1], "--node", live_node.url]) == 0
    assert client.log_info()["size"] == 20


def test_bulk_import_to_a_local_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "generate", "--out", "log.pem"]) == 0
    assert main(["log", "init", "acme-log", "--origin", "test.turtles/acme", "--key", "log.pem"]) == 0
    root, env = root_envelope("acme")
    Path("root.json").write_bytes(env.to_json())
    assert main(["submit", "root.json", "--log", "acme-log"]) == 0
    paths = _files(tmp_path, 12, root, SoftwareSigner.generate())
    assert main(["submit", *paths, "--log", "acme-log"]) == 2
    assert "imported 11 of 12 envelopes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["submit", "-o", "x.json"])  # at least one envelope is required
