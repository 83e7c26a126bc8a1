"""C2/C3: Wycheproof vectors through ``PublicKey.verify``, malleability, nonce reuse.

Vectors: ``tests/vectors/wycheproof/`` (copied from C2SP/wycheproof ``testvectors_v1/``; see the
SOURCE file there). Every ``valid`` vector must verify, every ``invalid`` one must be refused
with ``SignatureError`` (nothing else may escape). The v1 files hold no ``acceptable`` vectors;
if a later copy does, the test lists them and requires each to be refused, so that one
signature has one byte form (DER only, no BER, no trailing bytes: ``ledger/keys.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.checkpoint import (
    ALG_ED25519,
    Checkpoint,
    key_id,
    note_signer,
    parse_verifier_key,
    sign_note,
    verifier_key,
    verify_note,
)
from ledger.entry import sign_record
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.errors import KeyFormatError, NoteError, SignatureError
from ledger.holdings import Holdings
from ledger.keys import PublicKey, SoftwareSigner
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy
from tests.reliability.nonce import N, repeated_nonces
from tests.reliability.scoreboard import Recorder

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"


def _load(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    doc = json.loads((VECTORS / name).read_text())
    assert doc["numberOfTests"] == sum(len(g["tests"]) for g in doc["testGroups"])
    return [(g, t) for g in doc["testGroups"] for t in g["tests"]]


def _run(name: str, score: Recorder) -> Counter[str]:
    seen: Counter[str] = Counter()
    wrong = []
    for group, test in _load(name):
        where = f"{name} tcId {test['tcId']} ({test['comment'] or ', '.join(test['flags'])})"
        try:
            key = PublicKey.from_der(bytes.fromhex(group["publicKeyDer"]))
        except KeyFormatError:
            wrong.append(f"{where}: public key refused")
            continue
        try:
            key.verify(signature=bytes.fromhex(test["sig"]), data=bytes.fromhex(test["msg"]))
            accepted = True
        except SignatureError:
            accepted = False
        seen[f"{test['result']}:{'accepted' if accepted else 'refused'}"] += 1
        if accepted != (test["result"] == "valid"):
            wrong.append(f"{where}: {test['result']} vector {'accepted' if accepted else 'refused'}")
        else:
            score.tried("C2", "survived" if accepted else "detected",
                        evidence=f"{name}: {test['result']} vector {'accepted' if accepted else 'refused'}")
    assert not wrong, "\n".join(wrong[:40])
    return seen


@pytest.mark.scenario("C2", outcome="detected")
def test_wycheproof_ecdsa_p256_sha256(score: Recorder) -> None:
    seen = _run("ecdsa_secp256r1_sha256_test.json", score)
    assert seen["valid:accepted"] > 100 and seen["invalid:refused"] > 300, seen


@pytest.mark.scenario("C2", outcome="detected")
def test_wycheproof_ed25519(score: Recorder) -> None:
    seen = _run("ed25519_test.json", score)
    assert seen["valid:accepted"] > 50 and seen["invalid:refused"] > 50, seen


def test_vectors_are_the_recorded_copies() -> None:
    """The checked-in files are the ones SOURCE names (a partial copy would pass silently)."""
    source = (VECTORS / "SOURCE").read_text()
    for name in ("ecdsa_secp256r1_sha256_test.json", "ed25519_test.json"):
        digest = hashlib.sha256((VECTORS / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in source, f"{name} changed since it was copied: update SOURCE"


# --- malleability: (r, n - s) and BER never make a second identity -----------------------------


def _der_variants(der: bytes) -> dict[str, bytes]:
    r, s = decode_dss_signature(der)
    body = der[2:]
    return {
        "high-s (r, n - s)": encode_dss_signature(r, N - s),
        "BER long-form length": b"\x30\x81" + bytes([len(body)]) + body,
        "trailing byte": der + b"\x00",
        "r + n": encode_dss_signature(r + N, s),
        "s = 0": encode_dss_signature(r, 0),
        "r = 0": encode_dss_signature(0, s),
        "padded r": b"\x30" + bytes([len(body) + 1]) + b"\x02" + bytes([body[1] + 1]) + b"\x00" + body[2:],
    }


@pytest.mark.scenario("C2", outcome="survived")
def test_malleated_signatures_never_make_a_new_entry(tmp_path: Path, score: Recorder) -> None:
    """A P-256 release signed once, resubmitted with every re-encoding of its signature: the
    mathematically equal (r, n - s) is a duplicate of the same index; every non-DER or
    out-of-range form is refused; the log holds one entry for the statement."""
    log_key, root = SoftwareSigner.generate(), SoftwareSigner.generate()
    maint = SoftwareSigner.generate("p256")
    with Holdings.open(tmp_path / "db", origin="c2.turtles/log", signer=log_key,
                       roots=RootsPolicy.any_self_signed(), create=True) as holdings:
        log = holdings.own
        assert log is not None
        log.append(sign_record(RootRecord("c2", root.public_key, False, 1), [root]))
        log.append(sign_record(Delegation(
            issuer=root.key_id, subject=maint.public_key, name="maint", org="c2", artefacts=("pkg-*",),
            purposes=("release",), max_depth=0, not_before=0, not_after=None, created=1), [root]))
        stmt = make_statement(subject=Artefact("pkg-1", hashlib.sha256(b"pkg-1").hexdigest()))
        env = sign_envelope(INTOTO, stmt, [maint])
        first = log.append(env)
        for name, sig in _der_variants(env.signatures[0].sig).items():
            variant = Envelope(env.payload_type, env.payload, (Signature(maint.key_id, sig),))
            if name.startswith("high-s"):
                res = log.append(variant)
                assert (res.index, res.duplicate) == (first.index, True), name
                score.tried("C2", "survived", evidence=f"{name}: duplicate of index {first.index}")
            else:
                with pytest.raises(SignatureError):
                    log.append(variant)
                score.tried("C2", "detected", evidence=f"{name}: refused")
        assert log.by_artefact(hashlib.sha256(b"pkg-1").hexdigest()) == [first.index]
        assert log.size == first.index + 1


# --- nonce reuse: two signatures sharing r expose the key (detected with proof) ----------------


def _sign_with_nonce(key: ec.EllipticCurvePrivateKey, data: bytes, k: int) -> bytes:
    """ECDSA P-256/SHA-256 with a chosen nonce: what a broken HSM or RNG would do."""
    r = ec.derive_private_key(k, ec.SECP256R1()).public_key().public_numbers().x % N
    z = int.from_bytes(hashlib.sha256(data).digest(), "big") % N
    d = key.private_numbers().private_value
    s = pow(k, -1, N) * (z + r * d) % N
    return encode_dss_signature(r, s)


@pytest.mark.scenario("C2", outcome="detected")
def test_a_repeated_nonce_is_detected_with_the_private_key_as_proof(score: Recorder) -> None:
    signer = SoftwareSigner.generate("p256")
    private = signer._private  # the test plays the broken signer
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    honest = [(signer.public_key, f"m{i}".encode(), signer.sign(f"m{i}".encode())) for i in range(50)]
    assert repeated_nonces(honest) == []
    k = 0x1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF1234567890ABCDEF
    bad = [(signer.public_key, m, _sign_with_nonce(private, m, k)) for m in (b"release 1", b"release 2")]
    for _, m, sig in bad:
        signer.public_key.verify(signature=sig, data=m)  # both are valid signatures
    # One of them also malleated: still the same nonce, still detected.
    r, s = decode_dss_signature(bad[1][2])
    bad[1] = (bad[1][0], bad[1][1], encode_dss_signature(r, N - s))
    found = repeated_nonces(honest[:10] + bad + honest[10:])
    assert len(found) == 1 and found[0].proves()
    assert found[0].private_value == private.private_numbers().private_value
    score.tried("C2", "detected", evidence="two signatures sharing r: private key recovered and checked")


# --- C3: key, scheme and id confusion -----------------------------------------------------------


def _colliding_names(key_a: bytes, key_b: bytes) -> tuple[str, str]:
    """Two note key names whose 4-byte key IDs collide, for keys ``a`` and ``b`` (birthday search)."""
    seen: dict[int, str] = {}
    for i in range(1 << 20):
        a = f"a{i}.example"
        seen[key_id(a, ALG_ED25519, key_a)] = a
        b = f"b{i}.example"
        hit = seen.get(key_id(b, ALG_ED25519, key_b))
        if hit is not None:
            return hit, b
    raise AssertionError("no 32-bit collision in 2**20 tries per side (p < 1e-100)")


@pytest.mark.scenario("C3", outcome="detected")
def test_key_scheme_and_id_confusion_is_refused(score: Recorder) -> None:
    ed, p256 = SoftwareSigner.generate("ed25519"), SoftwareSigner.generate("p256")
    data = b"payload"
    # A signature by one key presented under another key's id (wrong key, wrong scheme).
    env = sign_envelope(INTOTO, make_statement(subject=Artefact("x", "ab" * 32)), [ed])
    confused = Envelope(env.payload_type, env.payload, (Signature(p256.key_id, env.signatures[0].sig),))
    with pytest.raises(SignatureError):
        confused.verify({p256.key_id: p256.public_key})
    # An Ed25519 signature checked as ECDSA, and an ECDSA one as Ed25519.
    for key, sig in ((p256.public_key, ed.sign(data)), (ed.public_key, p256.sign(data))):
        with pytest.raises(SignatureError):
            key.verify(signature=sig, data=data)
    # A key on another curve is not a P-256 key.
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyFormatError):
        PublicKey.from_der(p384)
    # Two note keys whose 4-byte IDs collide under different names: the other's note is refused.
    k1, k2 = SoftwareSigner.generate(), SoftwareSigner.generate()
    name1, name2 = _colliding_names(k1.public_key.raw, k2.public_key.raw)
    v1, v2 = parse_verifier_key(verifier_key(name1, k1.public_key.raw)), parse_verifier_key(verifier_key(name2, k2.public_key.raw))
    assert v1.key_id == v2.key_id
    note = sign_note(Checkpoint(name1, 1, bytes(32)).to_text(), [note_signer(name1, k1)])
    assert verify_note(note, [v1]).verified_by == (name1,)
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_note(note, [v2])
    score.tried("C3", "detected", evidence=f"keyid/scheme confusion and a colliding note key ID ({v1.key_id:08x}) refused")
