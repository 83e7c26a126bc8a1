"""The Ed25519 rule every node applies (ledger._ed25519): RFC 8032 vectors, agreement
with OpenSSL on honest signatures, and the edge cases where turtles is stricter."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger._ed25519 import ed25519_verify
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


def _openssl_accepts(pub: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    msg, sig, pub = bytes.fromhex(message), bytes.fromhex(signature), bytes.fromhex(public)
    assert key.sign(msg) == sig
    assert ed25519_verify(pub, sig, msg)
    bad = bytearray(sig)
    bad[5] ^= 0x10
    assert not ed25519_verify(pub, bytes(bad), msg)
    assert not ed25519_verify(pub, sig, msg + b"x")


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=600),
       flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_agrees_with_openssl_on_honest_and_corrupted_signatures(seed: bytes, msg: bytes, flip: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = PublicKey.from_crypto(key.public_key()).raw
    sig = key.sign(msg)
    assert ed25519_verify(pub, sig, msg) and _openssl_accepts(pub, sig, msg)
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert ed25519_verify(pub, bytes(bad), msg) == _openssl_accepts(pub, bytes(bad), msg) is False


def test_non_canonical_s_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    pub = PublicKey.from_crypto(key.public_key()).raw
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little") + L  # the same scalar mod L, another encoding
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert not ed25519_verify(pub, malleated, b"m")
    assert not _openssl_accepts(pub, malleated, b"m")


def test_small_order_key_is_refused_where_openssl_accepts() -> None:
    # With A and R the identity and S = 0, [S]B = R + [k]A holds for every message: OpenSSL
    # accepts this "signature" of anything; the turtles rule (libsodium) refuses it.
    forged = IDENTITY + bytes(32)
    assert _openssl_accepts(IDENTITY, forged, b"any message")
    assert not ed25519_verify(IDENTITY, forged, b"any message")
    key = PublicKey.from_raw_ed25519(IDENTITY)
    with pytest.raises(SignatureError, match="does not verify"):
        key.verify(signature=forged, data=b"any message")


@pytest.mark.parametrize(("pub", "sig"), [(b"", bytes(64)), (bytes(31), bytes(64)), (bytes(32), bytes(63)),
                                          (b"\xff" * 32, bytes(64))])
def test_malformed_input_is_invalid_not_an_exception(pub: bytes, sig: bytes) -> None:
    assert ed25519_verify(pub, sig, b"m") is False
