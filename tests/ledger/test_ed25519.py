"""The Ed25519 rule every node applies (ledger._ed25519): RFC 8032 vectors, agreement
with OpenSSL on honest signatures, and the edge cases where turtles is stricter -- on each
copy of libsodium a node may use (the system's, PyNaCl's), and through the one in use."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import _ed25519
from ledger._ed25519 import KNOWN_ANSWERS, answers_known, ed25519_verify
from ledger.errors import SignatureError
from ledger.keys import PublicKey

# RFC 8032 section 7.1, TEST 1 and TEST 2.
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]
L = 2**252 + 27742317777372353535851937790883648493
IDENTITY = bytes([1]) + bytes(31)  # the neutral point: order 1, a "small-order" key
WYCHEPROOF = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof" / "ed25519_test.json"

_SYSTEM = _ed25519._system()
COPIES = [pytest.param(_ed25519._pynacl(), id="pynacl"),
          pytest.param(_SYSTEM[0] if _SYSTEM else None, id="system",
                       marks=pytest.mark.skipif(_SYSTEM is None, reason="no system libsodium >= 1.0.18 here"))]


@pytest.fixture(params=COPIES)
def verify(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> _ed25519.Verify:
    """:func:`ed25519_verify` itself, with one copy of libsodium in use for the test."""
    monkeypatch.setattr(_ed25519, "_verify", request.param)
    return ed25519_verify


def _openssl_accepts(pub: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str,
                         verify: _ed25519.Verify) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    msg, sig, pub = bytes.fromhex(message), bytes.fromhex(signature), bytes.fromhex(public)
    assert key.sign(msg) == sig
    assert verify(pub, sig, msg)
    bad = bytearray(sig)
    bad[5] ^= 0x10
    assert not verify(pub, bytes(bad), msg)
    assert not verify(pub, sig, msg + b"x")
    assert ed25519_verify(bytearray(pub), memoryview(sig), bytearray(msg))  # the copy in use, bytes-like input


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=600),
       flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_agrees_with_openssl_on_honest_and_corrupted_signatures(seed: bytes, msg: bytes, flip: int,
                                                               verify: _ed25519.Verify) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = PublicKey.from_crypto(key.public_key()).raw
    sig = key.sign(msg)
    assert verify(pub, sig, msg) and _openssl_accepts(pub, sig, msg)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert verify(pub, bytes(bad), msg) == _openssl_accepts(pub, bytes(bad), msg) is False


def test_non_canonical_s_is_refused(verify: _ed25519.Verify) -> None:
    key = Ed25519PrivateKey.generate()
    pub = PublicKey.from_crypto(key.public_key()).raw
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little") + L  # the same scalar mod L, another encoding
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert not verify(pub, malleated, b"m")
    assert not _openssl_accepts(pub, malleated, b"m")


def test_small_order_key_is_refused_where_openssl_accepts(verify: _ed25519.Verify) -> None:
    # With A and R the identity and S = 0, [S]B = R + [k]A holds for every message: OpenSSL
    # accepts this "signature" of anything; the turtles rule (libsodium) refuses it.
    forged = IDENTITY + bytes(32)
    assert _openssl_accepts(IDENTITY, forged, b"any message")
    assert not verify(IDENTITY, forged, b"any message")
    key = PublicKey.from_raw_ed25519(IDENTITY)
    with pytest.raises(SignatureError, match="does not verify"):
        key.verify(signature=forged, data=b"any message")


@pytest.mark.parametrize(("pub", "sig"), [(b"", bytes(64)), (bytes(31), bytes(64)), (bytes(32), bytes(63)),
                                          (b"\xff" * 32, bytes(64))])
def test_malformed_input_is_invalid_not_an_exception(pub: bytes, sig: bytes) -> None:
    assert ed25519_verify(pub, sig, b"m") is False
    assert ed25519_verify(bytearray(pub), memoryview(sig), bytearray(b"m")) is False
    assert ed25519_verify(bytes(32), bytes(64), "not bytes") is False  # type: ignore[arg-type]


def test_wycheproof_vectors(verify: _ed25519.Verify) -> None:
    """Every Wycheproof Ed25519 vector, on the raw key bytes: valid ones pass, invalid ones
    do not (``tests/reliability/test_crypto_vectors.py`` runs them through ``PublicKey``)."""
    doc = json.loads(WYCHEPROOF.read_text())
    wrong, seen = [], 0
    for group in doc["testGroups"]:
        pub = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            seen += 1
            if verify(pub, bytes.fromhex(t["sig"]), bytes.fromhex(t["msg"])) != (t["result"] == "valid"):
                wrong.append(f"tcId {t['tcId']} ({t['comment']}): {t['result']}")
    assert seen > 100 and not wrong, wrong


def test_known_answers_are_what_they_say(verify: _ed25519.Verify) -> None:
    """Each vector of the import-time check is derived again here, and answered as recorded."""
    by_what = {what: (bytes.fromhex(k), bytes.fromhex(s), bytes.fromhex(m), want) for what, k, s, m, want in KNOWN_ANSWERS}
    pub, sig, msg, want = by_what["RFC 8032 TEST 2"]
    assert (pub.hex(), sig.hex(), msg.hex(), want) == (RFC8032[1][1], RFC8032[1][3], RFC8032[1][2], True)
    s_plus_l = int.from_bytes(sig[32:], "little") + L
    assert by_what["TEST 2 with S + L (non-canonical S)"][1] == sig[:32] + s_plus_l.to_bytes(32, "little")
    flipped = by_what["TEST 2, one bit of S flipped"][1]
    assert sum(bin(a ^ b).count("1") for a, b in zip(flipped, sig, strict=True)) == 1
    assert by_what["the identity as key, R the identity, S = 0 (OpenSSL accepts it)"][:2] == (IDENTITY,
                                                                                              IDENTITY + bytes(32))
    # R = the identity, S = k*a: [S]B = [k]A = R + [k]A, so only R's small order refuses it.
    h = hashlib.sha512(bytes.fromhex(RFC8032[1][0])).digest()
    a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    k = int.from_bytes(hashlib.sha512(IDENTITY + pub + msg).digest(), "little") % L
    assert by_what["TEST 2's key, R the identity, S = k*a: the equation holds (OpenSSL accepts it)"][1] == (
        IDENTITY + (k * a % L).to_bytes(32, "little"))
    for what, (p, s, m, want) in by_what.items():
        assert verify(p, s, m) is want, what
        if what.endswith("(OpenSSL accepts it)"):
            assert _openssl_accepts(p, s, m), what
    assert answers_known(verify)


def test_a_copy_that_answers_otherwise_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def openssl_like(pub: bytes, sig: bytes, msg: bytes) -> bool:  # accepts the small-order cases
        return _openssl_accepts(pub, sig, msg)

    assert not answers_known(openssl_like)
    assert not answers_known(lambda pub, sig, msg: False)
    monkeypatch.delenv(_ed25519.ENV_BACKEND, raising=False)
    monkeypatch.setattr(_ed25519, "_system", lambda: (openssl_like, "system libsodium 9.9.9 (a liar)"))
    verify, backend = _ed25519._choose()
    assert backend == "PyNaCl's bundled libsodium"
    assert not verify(IDENTITY, IDENTITY + bytes(32), b"any message")
    monkeypatch.setattr(_ed25519, "_system", lambda: None)  # no system copy at all
    assert _ed25519._choose()[1] == "PyNaCl's bundled libsodium"


def _backend_in_fresh_interpreter(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", "from ledger._ed25519 import BACKEND; print(BACKEND)"],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2],
                          check=True, timeout=60)
    return done.stdout.strip()


def test_the_system_copy_is_preferred_and_can_be_declined() -> None:
    env = {k: v for k, v in os.environ.items() if k != _ed25519.ENV_BACKEND}
    if _SYSTEM is not None:
        assert _backend_in_fresh_interpreter(env).startswith("system libsodium")
    assert _backend_in_fresh_interpreter({**env, _ed25519.ENV_BACKEND: "pynacl"}) == "PyNaCl's bundled libsodium"
