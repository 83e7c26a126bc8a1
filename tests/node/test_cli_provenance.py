"""``turtles attest|submit|cosign|verify|trace|bundle`` against a real node on loopback.

The node is :func:`node.app.create_app` with the provenance routes added (as main wiring
will), served by :class:`tests.node.conftest.LiveNode`; the verbs run through an argparse
parser built here, with main's error mapping (exit 2), so they are tested before main
registers them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from ledger.attestation import SLSA_PROVENANCE_V1, Attestation
from ledger.bundle import Bundle
from ledger.entry import sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.errors import TurtlesError, UnavailableError
from ledger.keyref import load_public_key
from ledger.keys import PublicKey, SoftwareSigner
from ledger.records import Delegation, RootRecord
from node import render
from node.app import create_app
from node.cli import keys as keys_cli
from node.cli import provenance
from node.client import NodeClient
from node.openapi import openapi_document
from node.routes.provenance import OPENAPI_PATHS, routes
from tests.node.conftest import LiveNode, make_config
from tests.node.test_app_openapi import documented_operations, served_operations
from tests.softhsm import SoftHSMToken

ORIGIN = "acme.turtles.local/log"


def run(argv: list[str]) -> int:
    """Parse and run like ``turtles`` does: TurtlesError and OSError are exit 2."""
    parser = argparse.ArgumentParser(prog="turtles")
    sub = parser.add_subparsers(dest="verb", required=True)
    provenance.register(sub)
    keys_cli.register(sub)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except TurtlesError as e:
        print(f"turtles: error: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"turtles: error: {e}", file=sys.stderr)
        return 2


@dataclass
class Net:
    """A live node whose log holds acme's root, its log-key delegation and a maintainer."""

    node: LiveNode
    tmp: Path
    root: SoftwareSigner
    maint: SoftwareSigner
    maint_pem: Path
    policy: Path

    @property
    def url(self) -> str:
        return self.node.url

    def submit(self, env: Envelope) -> dict[str, Any]:
        return NodeClient(self.url).submit(env)

    def delegate(self, subject: PublicKey, *, globs: tuple[str, ...] = ("app*",), purposes: tuple[str, ...] = ("release",)) -> None:
        d = Delegation(self.root.key_id, subject, "k", "acme", globs, purposes, 0, 0, None, 1)
        self.submit(sign_record(d, [self.root]))

    def file(self, name: str, content: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    config = make_config(tmp_path / "node", origin=ORIGIN, rate_per_second=1e6, rate_burst=1_000_000)
    node = LiveNode(config, create_app(config, extra_routes=[routes])).start()
    try:
        root, maint = SoftwareSigner.generate(), SoftwareSigner.generate()
        log_key = load_public_key(config.keys.log_key)
        n = Net(node, tmp_path, root, maint, tmp_path / "maint.pem", tmp_path / "policy.toml")
        n.maint_pem.write_bytes(maint.to_pem())
        n.submit(sign_record(RootRecord("acme", root.public_key, True, 1), [root]))
        n.delegate(log_key, globs=(ORIGIN,), purposes=("log",))
        n.delegate(maint.public_key, globs=("app*", "lib*"))
        n.policy.write_text(f'[[anchor]]\norg = "acme"\nroot = "{root.key_id}"\npurposes = ["release"]\n')
        yield n
    finally:
        node.stop()


def attest_app(net: Net, capsys: pytest.CaptureFixture[str], content: bytes = b"app-1.0 bytes") -> Path:
    app = net.file("app-1.0.tar.gz", content)
    lib = net.file("lib-2.0.tar.gz", b"lib bytes")
    argv = ["attest", str(app), "--key", str(net.maint_pem), "--name", "app@1.0",
            "--material", str(lib), "--material", "zlib@1.3=sha256:" + "ab" * 32, "--node", net.url]
    assert run(argv) == 0
    assert "appended at index" in capsys.readouterr().out
    return app


# --- attest, submit, cosign ---------------------------------------------------------------------


def test_attest_writes_a_slsa_v1_statement_with_the_materials(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    app = net.file("app.tgz", b"app")
    lib = net.file("lib.tgz", b"lib")
    out = net.tmp / "att.json"
    argv = ["attest", str(app), "--key", str(net.maint_pem), "--name", "app@1.0",
            "--material", str(lib), "--material", "sha256:" + "CD" * 32, "-o", str(out)]
    assert run(argv) == 0
    env = Envelope.from_json(out.read_bytes())
    assert env.key_ids == (net.maint.key_id,)
    att = Attestation.from_payload(env.payload)
    assert att.predicate_type == SLSA_PROVENANCE_V1
    assert att.subjects[0].name == "app@1.0" and att.subjects[0].sha256 == hashlib.sha256(b"app").hexdigest()
    assert [(m.name, m.sha256) for m in att.materials] == [
        ("lib.tgz", hashlib.sha256(b"lib").hexdigest()), ("sha256:" + "cd" * 32, "cd" * 32)]
    net.maint.public_key.verify(signature=env.signatures[0].sig, data=env.pae())
    assert run(["attest", str(app), "--key", str(net.maint_pem), "--name", "no-version", "-o", str(out)]) == 2


def test_attest_with_a_given_predicate_keeps_it_and_adds_the_materials(
    net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    predicate = {"buildDefinition": {"buildType": "https://ci.example/v1", "externalParameters": {"ref": "v1"},
                                     "resolvedDependencies": [{"uri": "git+https://x", "digest": {"gitCommit": "1"}}]},
                 "runDetails": {"builder": {"id": "https://ci.example"}}}
    pred = net.file("slsa.json", json.dumps(predicate).encode())
    app, out = net.file("app.tgz", b"app"), net.tmp / "att.json"
    assert run(["attest", str(app), "--key", str(net.maint_pem), "--name", "app@2", "--predicate", str(pred),
                "--material", "lib@1=sha256:" + "ef" * 32, "-o", str(out)]) == 0
    stmt = json.loads(Envelope.from_json(out.read_bytes()).payload)
    deps = stmt["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps == [{"uri": "git+https://x", "digest": {"gitCommit": "1"}}, {"name": "lib@1", "digest": {"sha256": "ef" * 32}}]
    assert stmt["predicate"]["runDetails"]["builder"]["id"] == "https://ci.example"


def test_attest_with_an_hsm_key(net: Net, softhsm_token: SoftHSMToken, capsys: pytest.CaptureFixture[str]) -> None:
    keyref = softhsm_token.uri("release")
    flags = ["--pkcs11-module", softhsm_token.module, "--pin-file", str(softhsm_token.pin_file)]
    assert run(["keys", "generate", "--hsm", keyref, *flags]) == 0
    public = PublicKey.from_pem(capsys.readouterr().out.split("\n", 1)[1].encode())
    net.delegate(public)
    app = net.file("app-hsm.tgz", b"built in CI")
    assert run(["attest", str(app), "--key", keyref, "--name", "app@9", "--node", net.url, *flags]) == 0
    capsys.readouterr()
    assert run(["verify", str(app), "--policy", str(net.policy), "--node", net.url]) == 0
    assert public.key_id[:19] in capsys.readouterr().out


def test_submit_sends_a_third_party_envelope_verbatim(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    digest = hashlib.sha256(b"vendor").hexdigest()
    payload = ('{"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://example/x", '
               f'"subject": [{{"name": "app-vendor@1", "digest": {{"sha256": "{digest}"}}}}]}}').encode()
    env = sign_envelope("application/vnd.in-toto+json", payload, [net.maint])
    path = net.file("vendor.json", json.dumps(env.to_dict(), indent=2).encode())
    assert run(["submit", str(path), "--node", net.url]) == 0
    index = int(capsys.readouterr().out.split("index ")[1].split()[0])
    assert NodeClient(net.url).entry(index)["envelope"]["payload"] == base64.b64encode(payload).decode()
    assert run(["verify", "sha256:" + digest, "--policy", str(net.policy), "--node", net.url]) == 0
    bad = net.file("bad.json", b'{"payloadType": "x", "payload": "", "signatures": []}')
    assert run(["submit", str(bad), "--node", net.url]) == 2


def test_cosign_vouches_for_a_third_party_envelope(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    vendor = SoftwareSigner.generate()
    digest = hashlib.sha256(b"tool").hexdigest()
    stmt = ('{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://example/x",'
            f'"subject":[{{"name":"app-tool@1","digest":{{"sha256":"{digest}"}}}}]}}').encode()
    theirs = net.file("tool.json", sign_envelope("application/vnd.in-toto+json", stmt, [vendor]).to_json())
    assert run(["submit", str(theirs), "--node", net.url]) == 2  # the node knows no signer of it
    ours = net.tmp / "cosigned.json"
    assert run(["cosign", str(theirs), "--key", str(net.maint_pem), "-o", str(ours)]) == 0
    env = Envelope.from_json(ours.read_bytes())
    assert env.key_ids == (vendor.key_id, net.maint.key_id) and env.payload == stmt
    assert run(["submit", str(ours), "--node", net.url]) == 0
    assert run(["verify", "sha256:" + digest, "--policy", str(net.policy), "--node", net.url]) == 0
    assert run(["cosign", str(ours), "--key", str(net.maint_pem), "-o", str(ours)]) == 2  # signed already


# --- verify, online and offline ------------------------------------------------------------------


def test_verify_online_shows_the_explicit_chain(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    app = attest_app(net, capsys)
    assert run(["verify", str(app), "--policy", str(net.policy), "--node", net.url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TRUSTED (delegated trust)")
    assert "attestation of app@1.0" in out and "[delegated]" in out and "root sha256:" in out
    assert "HSM-held" in out and "weakest link" in out and f"{ORIGIN}#" in out and "included in tree of" in out
    assert run(["verify", str(app), "--policy", str(net.policy), "--node", net.url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trusted"] and [h["kind"] for h in doc["path"]] == ["attestation", "delegated", "root"]
    assert all(h["inclusion"]["verified"] for h in doc["path"])
    assert doc["logs"][0]["basis"] == "delegated"
    assert run(["verify", str(app), "--policy", str(net.policy), "--node", net.url, "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph verdict")


def test_verify_exit_codes(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    app = attest_app(net, capsys)
    other = SoftwareSigner.generate()
    wrong = net.file("wrong.toml", f'[[anchor]]\norg = "acme"\nroot = "{other.key_id}"\npurposes = ["release"]\n'.encode())
    assert run(["verify", str(app), "--policy", str(wrong), "--node", net.url]) == 1
    assert "NOT TRUSTED" in capsys.readouterr().out
    unknown = net.file("unknown.bin", b"never attested")
    assert run(["verify", str(unknown), "--policy", str(net.policy), "--node", net.url]) == 1
    assert "no attestation" in capsys.readouterr().out
    bad_policy = net.file("bad.toml", b"[[anchor]]\norg = 1\n")
    assert run(["verify", str(app), "--policy", str(bad_policy), "--node", net.url]) == 2
    assert run(["verify", str(app), "--policy", str(net.policy), "--node", "http://127.0.0.1:9"]) == 2
    assert run(["verify", str(net.tmp / "missing"), "--policy", str(net.policy), "--node", net.url]) == 2


def test_bundle_then_verify_offline_and_every_alteration_fails(
    net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    app = attest_app(net, capsys)
    out = net.tmp / "app.bundle"
    assert run(["bundle", str(app), "--node", net.url, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    bundle = Bundle.from_bytes(out.read_bytes())
    assert bundle.artefact == hashlib.sha256(app.read_bytes()).hexdigest()
    assert run(["verify", str(app), "--policy", str(net.policy), "--bundle", str(out)]) == 0
    assert "TRUSTED" in capsys.readouterr().out

    app.write_bytes(app.read_bytes() + b"!")  # the artefact itself altered
    assert run(["verify", str(app), "--policy", str(net.policy), "--bundle", str(out)]) == 1
    assert "not this artefact" in capsys.readouterr().out
    app.write_bytes(app.read_bytes()[:-1])

    data = out.read_bytes()
    regions = {
        "entry": data.index(b'"entry":"') + 40,
        "proof": data.index(b'"proof":["') + 15,
        "note": data.index(b'"checkpoint":"') + 20,
        "note signature": data.index(b"\\u2014 ") + 30,
        "vkey": data.index(b'"vkey":"') + 60,
        "index": data.index(b'"index":') + 8,
        "artefact": data.index(b'"artefact":"sha256:') + 30,
    }
    for region, offset in regions.items():
        bad = bytearray(data)
        bad[offset] ^= 0x02
        altered = net.file("altered.bundle", bytes(bad))
        assert run(["verify", str(app), "--policy", str(net.policy), "--bundle", str(altered)]) == 1, region
        text = capsys.readouterr().out
        assert "NOT TRUSTED" in text and "reasons:" in text, region


# --- trace and rendering -------------------------------------------------------------------------


def test_trace_renders_a_tree_json_and_dot(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    lib = net.file("lib-2.0.tar.gz", b"lib bytes")
    assert run(["attest", str(lib), "--key", str(net.maint_pem), "--name", "lib@2.0", "--node", net.url]) == 0
    app = attest_app(net, capsys)
    assert run(["trace", str(app), "--node", net.url]) == 0
    tree = capsys.readouterr().out
    lines = tree.splitlines()
    assert lines[0].startswith("✔ app@1.0") and "├── ✔ lib@2.0" in lines[1] and "└── ? zlib@1.3" in lines[2]
    assert "legend:" in tree and "judged structurally" in tree and "missing: zlib@1.3" in tree
    assert run(["trace", "sha256:" + hashlib.sha256(app.read_bytes()).hexdigest(), "--node", net.url,
                "--policy", str(net.policy), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"] is not None and [n["status"] for n in doc["nodes"]] == ["trusted", "trusted", "missing"]
    assert run(["trace", str(app), "--node", net.url, "--format", "dot", "--max-depth", "0"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph lineage") and "#1a7f37" in dot and "(not expanded)" in dot


def test_trace_renders_svg_and_png_with_graphviz(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    assert shutil.which("dot"), "graphviz `dot` is required (make bootstrap installs it)"
    app = attest_app(net, capsys)
    svg, png = net.tmp / "l.svg", net.tmp / "l.png"
    assert run(["trace", str(app), "--node", net.url, "--svg", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()
    assert run(["trace", str(app), "--node", net.url, "--png", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_images_without_graphviz_are_a_clear_error(
    net: Net, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = attest_app(net, capsys)
    monkeypatch.setenv("PATH", str(net.tmp / "empty"))
    assert run(["trace", str(app), "--node", net.url, "--svg", str(net.tmp / "x.svg")]) == 2
    assert "graphviz 'dot' is not installed" in capsys.readouterr().err
    with pytest.raises(UnavailableError):
        render.render_image("digraph {}", net.tmp / "y.svg", "svg")


def test_routes_answer_errors_clearly(net: Net) -> None:
    client = NodeClient(net.url)
    reply = client.request("GET", "/v1/bundle/" + "00" * 32)
    assert reply.status == 404 and reply.json()["error"] == "not_found"
    assert client.request("GET", "/v1/bundle/xyz").status == 400
    assert client.request("GET", f"/v1/trace/{'00' * 32}?max_depth=9999").status == 400
    assert client.request("POST", f"/v1/trace/{'00' * 32}", body=b'{"policy": 1}',
                          content_type="application/json").status == 400
    assert client.request("POST", f"/v1/trace/{'00' * 32}", body=b'{"policy": "x = ["}',
                          content_type="application/json").status == 400
    missing = client.request("GET", f"/v1/trace/{'00' * 32}")
    assert missing.status == 200 and missing.json()["nodes"][0]["status"] == "missing"


def test_the_routes_are_documented_and_never_answer_5xx(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    """The OpenAPI items match the routes; a bounded schemathesis run over them finds no 5xx."""
    attest_app(net, capsys)
    app = create_app(make_config(net.tmp / "doc"), extra_routes=[routes], extra_openapi_paths=OPENAPI_PATHS)
    doc = openapi_document(OPENAPI_PATHS)
    assert served_operations(app) == documented_operations(doc)
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    failures: list[str] = []
    mine = [r.ok() for r in schema.get_all_operations() if r.ok().path in OPENAPI_PATHS]  # type: ignore[union-attr]
    assert len(mine) == 3
    for operation in mine:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(base_url=net.url, session=session, timeout=30)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

            call()
    assert not failures, "\n".join(failures[:10])
