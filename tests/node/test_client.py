"""node.client: the sync CLI client and the async peer client against live nodes, hostile
peers (endless, slow, garbage: RELIABILITY P5) and TLS with a CA made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ledger import merkle
from ledger.checkpoint import Checkpoint, open_note
from ledger.errors import (
    InputError,
    NotAdmittedError,
    NoteError,
    NotFoundError,
    ProofError,
    SignatureError,
    UnavailableError,
)
from ledger.keys import SoftwareSigner
from ledger.tiles import TileId, decode_tile
from node.client import AsyncNodeClient, NodeClient, check_appended
from node.config import TLSSection
from tests.node.conftest import LiveNode, attestation, make_config, root_envelope


def test_sync_client_round_trip(live_node: LiveNode) -> None:
    client = NodeClient(live_node.url, vkey=live_node.info["vkey"])
    assert client.health()["status"] == "ok"
    signer, root = root_envelope()
    first = client.submit(root)
    assert first["index"] == 0 and first["duplicate"] is False and first["size"] == 1
    again = client.submit(root)
    assert again["duplicate"] is True and again["index"] == 0
    digest, att = attestation(signer, "tool@1", b"bits")
    assert client.submit(att)["index"] == 1
    batch = client.submit_batch([attestation(signer, f"t{i}", bytes([i]))[1] for i in range(3)])
    assert [r["index"] for r in batch["results"]] == [2, 3, 4]
    info = client.log_info()
    assert info["size"] == 5 and info["vkey"] == live_node.info["vkey"]
    cp = Checkpoint.parse(open_note(client.checkpoint(), info["vkey"]))
    assert cp.size == 5 and cp.root.hex() == info["root"]
    assert client.entry(1)["record"]["kind"] == "attestation"
    assert len(client.entries(0, 2)["entries"]) == 2
    proof = client.inclusion_proof(1, 5)
    leaf = bytes.fromhex(client.entry(1)["leaf_hash"])
    merkle.verify_inclusion(leaf, 1, 5, [bytes.fromhex(h) for h in proof["proof"]], cp.root)
    cons = client.consistency_proof(2, 5)
    old_root = bytes.fromhex(client.inclusion_proof(0, 2)["root"])
    merkle.verify_consistency(2, 5, [bytes.fromhex(h) for h in cons["proof"]], old_root, cp.root)
    assert client.artefact("sha256:" + digest)["attestations"][0]["index"] == 1
    policy = f'[[anchor]]\norg = "acme"\nroot = "{signer.key_id}"\npurposes = ["release"]\n[trust]\nrequire_hsm_root = false\n'
    assert client.explain("sha256:" + digest, purpose="release", policy=policy)["trusted"] is True
    assert client.impact(signer.key_id)["key"] == signer.key_id
    assert client.equivocations() == []


def test_sync_client_maps_errors(live_node: LiveNode) -> None:
    client = NodeClient(live_node.url)
    with pytest.raises(NotFoundError) as nf:
        client.entry(7)
    assert nf.value.evidence["status"] == 404 and nf.value.evidence["current_size"] == 0
    with pytest.raises(InputError) as bad:
        client.inclusion_proof(0, 3)
    assert bad.value.evidence["current_size"] == 0 and bad.value.http_status == 400
    stranger = SoftwareSigner.generate()
    with pytest.raises((SignatureError, NotAdmittedError)) as refused:
        client.submit(attestation(stranger, "x", b"x")[1])
    assert refused.value.evidence["status"] == 403
    with pytest.raises(UnavailableError, match="larger than"):
        NodeClient(live_node.url, max_bytes=10).log_info()
    with pytest.raises(UnavailableError, match="cannot reach"):
        NodeClient("http://127.0.0.1:9", timeout=2).log_info()


def test_check_appended_catches_lies(live_node: LiveNode) -> None:
    client = NodeClient(live_node.url)
    signer, root = root_envelope()
    client.submit(root)
    result = client.submit(attestation(signer, "a", b"a")[1])
    check_appended(result, vkey=live_node.info["vkey"])
    with pytest.raises(ProofError):
        check_appended({**result, "leaf_hash": "00" * 32})
    with pytest.raises(ProofError):
        check_appended({**result, "index": 0})
    other = SoftwareSigner.generate()
    from ledger.checkpoint import verifier_key

    with pytest.raises(NoteError):
        check_appended(result, vkey=verifier_key("test.turtles.local/log", other.public_key.raw))


async def test_async_client_against_a_live_node(live_node: LiveNode) -> None:
    sync = NodeClient(live_node.url)
    signer, root = root_envelope()
    sync.submit(root)
    sync.submit_batch([attestation(signer, f"t{i}", bytes([i]))[1] for i in range(9)])
    async with AsyncNodeClient(live_node.url) as peer:
        note = await peer.get_checkpoint()
        cp = Checkpoint.parse(open_note(note, live_node.info["vkey"]))
        assert cp.size == 10
        assert (await peer.get_log())["size"] == 10
        page = await peer.get_entries(0, 4)
        assert len(page["entries"]) == 4 and page["next"] == 4
        proof = await peer.get_consistency_proof(4, 10)
        leaves = [bytes.fromhex(e["leaf_hash"]) for e in (await peer.get_entries(0, 10))["entries"]]
        merkle.verify_consistency(4, 10, proof, merkle.root_hash(leaves[:4]), cp.root)
        tile = TileId(0, 0, 10)
        assert decode_tile(tile, await peer.get_tile(tile.path())) == leaves
        reply = await peer.post_add_checkpoint(b"old 0\n\n" + note.encode())
        assert reply.status == 404  # no witness route in this app
        with pytest.raises(NotFoundError):
            await peer.get_tile("tile/0/000")
        with pytest.raises(InputError):
            await peer.get_consistency_proof(5, 11)


async def test_async_client_bounds_hostile_peers(aiohttp_server: Any) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(10_000):
            await resp.write(b"x" * 65536)
        return resp

    async def liar(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 10, headers={"Content-Length": "10"}, status=200)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (2 << 20))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00not json", content_type="application/json", status=500)

    app = web.Application()
    app.router.add_get("/checkpoint", endless)
    app.router.add_get("/v1/log", garbage)
    app.router.add_get("/tile/0/000", big)
    app.router.add_get("/v1/entries", slow)
    app.router.add_get("/tile/0/001", trickle)
    app.router.add_get("/v1/proofs/consistency", liar)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    async with AsyncNodeClient(url, timeout=1.0, read_timeout=0.5) as peer:
        with pytest.raises(UnavailableError, match="larger than"):
            await peer.get_checkpoint()
        with pytest.raises(UnavailableError, match=r"over|larger"):
            await peer.get_tile("tile/0/000", max_bytes=1 << 20)
        with pytest.raises(UnavailableError, match="timed out"):
            await peer.get_entries(0, 10)
        with pytest.raises(UnavailableError, match="timed out"):
            await peer.get_tile("tile/0/001")
        with pytest.raises(UnavailableError):
            await peer.get_log()
        with pytest.raises(UnavailableError):
            await peer.get_consistency_proof(1, 2)
    with pytest.raises(UnavailableError, match="cannot reach"):
        async with AsyncNodeClient("http://127.0.0.1:9", timeout=2) as dead:
            await dead.get_checkpoint()


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turtles test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "node.pem", directory / "node.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return paths


async def test_tls(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    config = make_config(tmp_path / "node")
    config = type(config)(**{**config.__dict__, "tls": TLSSection(cert=cert, key=key, ca=ca)})
    node = LiveNode(config).start()
    try:
        assert node.url.startswith("https://127.0.0.1:")
        client = NodeClient(node.url, ca=ca)
        _, root = root_envelope()
        assert client.submit(root)["index"] == 0
        assert client.log_info()["size"] == 1
        with pytest.raises(UnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await asyncio.to_thread(NodeClient(node.url).log_info)
        (tmp_path / "other").mkdir()
        other_ca = make_ca_and_cert(tmp_path / "other")[0]
        with pytest.raises(UnavailableError):
            NodeClient(node.url, ca=other_ca).log_info()
        with pytest.raises(UnavailableError):
            NodeClient(node.url.replace("https:", "http:"), timeout=5).log_info()
        async with AsyncNodeClient(node.url, ca=ca) as peer:
            assert (await peer.get_log())["size"] == 1
        async with AsyncNodeClient(node.url) as untrusting:
            with pytest.raises(UnavailableError):
                await untrusting.get_log()
    finally:
        node.stop()
