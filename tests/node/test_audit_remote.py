"""``turtles log audit --node URL``: a node's log pulled through the verified mirror path
and audited from scratch; a pinned key that does not match is refused."""

from __future__ import annotations

import pytest

from ledger.checkpoint import verifier_key
from ledger.errors import NoteError
from ledger.keys import SoftwareSigner
from node.audit_remote import audit_node
from node.cli.main import main
from node.client import NodeClient
from tests.node.conftest import LiveNode, attestation, root_envelope


def _fill(node: LiveNode, n: int) -> None:
    client = NodeClient(node.url)
    root, env = root_envelope("acme")
    client.submit(env)
    for i in range(n):
        client.submit(attestation(root, f"pkg-{i}", f"content {i}".encode())[1])


def test_remote_audit_of_a_live_node(live_node: LiveNode, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(live_node, 300)  # more than one page
    seen: list[tuple[int, int]] = []
    report = audit_node(live_node.url, progress=lambda done, total: seen.append((done, total)))
    assert report.size == report.entries == 301
    assert report.kinds == {"root": 1, "attestation": 300}
    assert seen[-1] == (301, 301)
    assert main(["log", "audit", "--node", live_node.url]) == 0
    assert "audit ok" in capsys.readouterr().out


def test_a_pinned_key_that_does_not_match_is_refused(live_node: LiveNode) -> None:
    _fill(live_node, 1)
    other = SoftwareSigner.generate()
    with pytest.raises(NoteError, match="not the pinned"):
        audit_node(live_node.url, vkey=verifier_key("test.turtles.local/log", other.public_key.raw))
