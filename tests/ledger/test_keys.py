"""Public keys, key ids, the software signer and the strict signature policy (RELIABILITY C2, C3).

ECDSA policy under test: DER only (no BER, no long-form lengths, no padding or missing leading
zeros, no trailing bytes), 0 < r, s < n. High-S signatures (r, n - s) are ACCEPTED, like
OpenSSL and the Go standard library do: a record's identity is the hash of its payload, never of
its signature bytes, so a malleated signature cannot make a new identity.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import KeyFormatError, SignatureError
from ledger.keys import PublicKey, SoftwareSigner, key_id_of, parse_key_id

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# RFC 8032 section 7.1, TEST 1.
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


@pytest.fixture(scope="module")
def p256() -> SoftwareSigner:
    return SoftwareSigner.generate("p256")


@pytest.fixture(scope="module")
def ed() -> SoftwareSigner:
    return SoftwareSigner.generate("ed25519")


def _der(r: int, s: int) -> bytes:
    return encode_dss_signature(r, s)


def _int(value: bytes) -> bytes:
    return b"\x02" + bytes([len(value)]) + value


def _seq(body: bytes) -> bytes:
    return b"\x30" + bytes([len(body)]) + body


# --- key ids and key parsing -----------------------------------------------------------------


def test_key_id_is_sha256_of_the_spki_der() -> None:
    key = PublicKey.from_raw_ed25519(RFC8032_PUBLIC)
    spki = ED25519_SPKI_PREFIX + RFC8032_PUBLIC
    assert key.der == spki
    assert key.key_id == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert key_id_of(spki) == key.key_id
    assert parse_key_id(key.key_id) == key.key_id


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha512:" + "a" * 64,
        "a" * 64,
        "sha256:" + "g" * 64,
        "",
    ],
)
def test_malformed_key_ids_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError, match="not a key id"):
        parse_key_id(text)


def test_rfc8032_vector_verifies_and_a_changed_message_does_not() -> None:
    key = PublicKey.from_raw_ed25519(RFC8032_PUBLIC)
    key.verify(signature=RFC8032_SIGNATURE, data=b"")
    with pytest.raises(SignatureError, match="does not verify"):
        key.verify(signature=RFC8032_SIGNATURE, data=b"\x00")


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_public_key_der_and_pem_round_trip(alg: str) -> None:
    key = SoftwareSigner.generate(alg).public_key  # type: ignore[arg-type]
    assert key.alg == alg
    assert PublicKey.from_der(key.der) == key
    assert PublicKey.from_pem(key.to_pem()) == key


def test_non_canonical_der_public_keys_are_refused() -> None:
    good = ED25519_SPKI_PREFIX + RFC8032_PUBLIC
    with pytest.raises(KeyFormatError):
        PublicKey.from_der(b"\x30\x81\x2a" + good[2:])  # BER long-form outer length
    with pytest.raises(KeyFormatError):
        PublicKey.from_der(good + b"\x00")  # trailing byte


def test_p256_key_with_a_compressed_point_is_refused() -> None:
    """A compressed point is a second encoding of one key, hence a second key id: refused."""
    key = SoftwareSigner.generate("p256").public_key
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.raw).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    alg_id = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")  # id-ecPublicKey, P-256
    bitstring = b"\x03" + bytes([len(point) + 1]) + b"\x00" + point
    spki = b"\x30" + bytes([len(alg_id) + len(bitstring)]) + alg_id + bitstring
    assert key.der[: len(alg_id) + 2].endswith(alg_id)
    with pytest.raises(KeyFormatError, match="canonical"):
        PublicKey.from_der(spki)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
        lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
    ],
    ids=["rsa", "p384"],
)
def test_unsupported_key_types_are_refused(make: object) -> None:
    key = make()  # type: ignore[operator]
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="unsupported"):
        PublicKey.from_der(der)


def test_garbage_public_keys_are_refused() -> None:
    for bad in (b"", b"\x30\x00", b"x" * 5000):
        with pytest.raises(KeyFormatError):
            PublicKey.from_der(bad)
    with pytest.raises(KeyFormatError):
        PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError):
        PublicKey.from_raw_ed25519(b"\x01" * 31)


# --- PEM private keys --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_private_pem_round_trip_without_passphrase(alg: str) -> None:
    signer = SoftwareSigner.generate(alg)  # type: ignore[arg-type]
    pem = signer.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = SoftwareSigner.from_pem(pem)
    assert again.public_key == signer.public_key
    signer.public_key.verify(signature=again.sign(b"m"), data=b"m")


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_private_pem_round_trip_with_passphrase(alg: str) -> None:
    signer = SoftwareSigner.generate(alg)  # type: ignore[arg-type]
    pem = signer.to_pem(b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert SoftwareSigner.from_pem(pem, b"correct horse").key_id == signer.key_id
    with pytest.raises(KeyFormatError, match="wrong passphrase"):
        SoftwareSigner.from_pem(pem, b"battery staple")
    with pytest.raises(KeyFormatError):
        SoftwareSigner.from_pem(pem)  # passphrase missing


def test_passphrase_for_an_unencrypted_key_is_refused(ed: SoftwareSigner) -> None:
    with pytest.raises(KeyFormatError):
        SoftwareSigner.from_pem(ed.to_pem(), b"unexpected")


def test_unsupported_private_keys_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match="secp384r1"):
        SoftwareSigner.from_pem(p384)
    with pytest.raises(KeyFormatError):
        SoftwareSigner.from_pem(b"not a key")
    with pytest.raises(KeyFormatError, match="unknown algorithm"):
        SoftwareSigner.generate("rsa")  # type: ignore[arg-type]


def test_repr_does_not_show_the_private_key(ed: SoftwareSigner) -> None:
    assert repr(ed) == f"SoftwareSigner(ed25519, {ed.key_id})"


# --- signatures ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=256), flip=st.integers(min_value=0))
def test_signatures_verify_and_any_bit_flip_is_refused(data: bytes, flip: int) -> None:
    for signer in (SoftwareSigner.generate("ed25519"), SoftwareSigner.generate("p256")):
        sig = signer.sign(data)
        signer.public_key.verify(signature=sig, data=data)
        bit = flip % (len(sig) * 8)
        bad = bytearray(sig)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            signer.public_key.verify(signature=bytes(bad), data=data)


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_ed25519_signature_of_wrong_length_is_refused(ed: SoftwareSigner, length: int) -> None:
    sig = (ed.sign(b"m") * 2)[:length]
    with pytest.raises(SignatureError, match=f"has {length} bytes, want 64"):
        ed.public_key.verify(signature=sig, data=b"m")


def test_signature_by_another_key_is_refused(ed: SoftwareSigner, p256: SoftwareSigner) -> None:
    with pytest.raises(SignatureError):
        SoftwareSigner.generate("ed25519").public_key.verify(signature=ed.sign(b"m"), data=b"m")
    with pytest.raises(SignatureError):
        SoftwareSigner.generate("p256").public_key.verify(signature=p256.sign(b"m"), data=b"m")


def test_scheme_confusion_is_refused(ed: SoftwareSigner, p256: SoftwareSigner) -> None:
    """C3: a signature of one scheme never verifies under a key of the other."""
    with pytest.raises(SignatureError):
        p256.public_key.verify(signature=ed.sign(b"m"), data=b"m")
    with pytest.raises(SignatureError):
        ed.public_key.verify(signature=p256.sign(b"m"), data=b"m")


def _ecdsa_cases(sig: bytes) -> dict[str, bytes]:
    r, s = decode_dss_signature(sig)
    rb, sb = r.to_bytes(32, "big"), s.to_bytes(32, "big")
    body = _int(_min(rb)) + _int(_min(sb))
    return {
        "trailing byte": sig + b"\x00",
        "long-form sequence length": b"\x30\x81" + bytes([len(body)]) + body,
        "long-form integer length": _seq(
            b"\x02\x81" + bytes([len(_min(rb))]) + _min(rb) + _int(_min(sb))
        ),
        "padded r (extra leading zero)": _seq(_int(b"\x00" + _min(rb)) + _int(_min(sb))),
        "indefinite length": b"\x30\x80" + body + b"\x00\x00",
        "r = 0": _der(0, s),
        "s = 0": _der(r, 0),
        "r = n": _der(N, s),
        "s = n": _der(r, N),
        "r = n + r": _der(N + r, s),
        "negative r": _seq(_int(_negative(r)) + _int(_min(sb))),
        "truncated": sig[:-1],
        "empty": b"",
    }


def _negative(value: int) -> bytes:
    """Minimal two's-complement DER INTEGER content of -value."""
    raw = (-value).to_bytes(33, "big", signed=True)
    while len(raw) > 1 and raw[0] == 0xFF and raw[1] & 0x80:
        raw = raw[1:]
    return raw


def _min(value: bytes) -> bytes:
    """Minimal DER INTEGER content of an unsigned big-endian number."""
    value = value.lstrip(b"\x00") or b"\x00"
    return b"\x00" + value if value[0] & 0x80 else value


def test_ecdsa_edge_cases_are_refused(p256: SoftwareSigner) -> None:
    sig = p256.sign(b"m")
    p256.public_key.verify(signature=sig, data=b"m")
    for name, bad in _ecdsa_cases(sig).items():
        with pytest.raises(SignatureError):
            p256.public_key.verify(signature=bad, data=b"m")
        assert bad != sig, name


def test_ecdsa_missing_leading_zero_is_refused(p256: SoftwareSigner) -> None:
    """An r with its top bit set must carry a 0x00 pad; without it, r reads as negative."""
    for _ in range(64):
        sig = p256.sign(b"m")
        r, s = decode_dss_signature(sig)
        if r >> 255:
            break
    else:
        pytest.fail("no signature with a high r in 64 tries")
    bad = _seq(_int(r.to_bytes(32, "big")) + _int(_min(s.to_bytes(32, "big"))))
    with pytest.raises(SignatureError):
        p256.public_key.verify(signature=bad, data=b"m")


def test_ecdsa_high_s_is_accepted_consistently(p256: SoftwareSigner) -> None:
    """Documented choice: (r, n - s) verifies too; identity never depends on signature bytes."""
    sig = p256.sign(b"m")
    r, s = decode_dss_signature(sig)
    twin = _der(r, N - s)
    p256.public_key.verify(signature=sig, data=b"m")
    p256.public_key.verify(signature=twin, data=b"m")
    with pytest.raises(SignatureError):
        p256.public_key.verify(signature=twin, data=b"other")
