"""Public keys, key ids, the Signer protocol and the software signer.

Invariants:
* A key id is ``"sha256:" + hex(SHA-256(DER SubjectPublicKeyInfo))``; it is always derived
  from the key, never trusted from input.
* Two algorithms exist: Ed25519 (raw 64-byte signatures) and ECDSA P-256 with SHA-256
  (DER signatures, strictly canonical: a BER or otherwise re-encodable signature is refused,
  so one signature has one byte form).
* Verification never raises anything but :class:`~ledger.errors.SignatureError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, NewType, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ledger._ed25519 import BACKEND as ED25519_BACKEND
from ledger._ed25519 import SIGNATURE_SIZE, ed25519_verify
from ledger.errors import KeyFormatError, SignatureError

KeyId = NewType("KeyId", str)
Algorithm = Literal["ed25519", "p256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "p256")

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_MAX_KEY_BYTES = 4096


def key_id_of(spki_der: bytes) -> KeyId:
    """The key id of a DER SubjectPublicKeyInfo."""
    return KeyId("sha256:" + hashlib.sha256(spki_der).hexdigest())


def parse_key_id(text: str) -> KeyId:
    """Check that ``text`` has the form of a key id and return it.

    Raises:
        KeyFormatError: not ``sha256:`` followed by 64 lowercase hex digits.
    """
    prefix, _, digest = text.partition(":")
    if prefix != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise KeyFormatError(f"not a key id (want sha256:<64 lowercase hex>): {text[:80]!r}")
    return KeyId(text)


@dataclass(frozen=True)
class PublicKey:
    """A public key, held as its DER SubjectPublicKeyInfo.

    Build with :meth:`from_der`, :meth:`from_pem` or :meth:`from_crypto`; these check the
    key kind, so an instance is always one of :data:`ALGORITHMS`.
    """

    alg: Algorithm
    der: bytes
    _crypto: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey = field(
        repr=False, compare=False
    )
    _raw: bytes = field(repr=False, compare=False, default=b"")

    @property
    def key_id(self) -> KeyId:
        """``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo (computed once)."""
        kid: KeyId | None = self.__dict__.get("_key_id")
        if kid is None:
            kid = key_id_of(self.der)
            object.__setattr__(self, "_key_id", kid)  # a cache, not a field
        return kid

    @classmethod
    def from_crypto(cls, key: object) -> PublicKey:
        """Wrap a ``cryptography`` public key object."""
        if isinstance(key, ed25519.Ed25519PublicKey):
            alg: Algorithm = "ed25519"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            alg = "p256"
        else:
            raise KeyFormatError(
                f"unsupported key type {type(key).__name__}: want Ed25519 or ECDSA P-256"
            )
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return cls(alg=alg, der=der, _crypto=key, _raw=raw)

    @classmethod
    def from_der(cls, der: bytes) -> PublicKey:
        """Parse a DER SubjectPublicKeyInfo; the encoding must be canonical."""
        if not isinstance(der, bytes) or not 0 < len(der) <= _MAX_KEY_BYTES:
            raise KeyFormatError("public key: want 1..4096 bytes of DER SubjectPublicKeyInfo")
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(f"public key: not a DER SubjectPublicKeyInfo ({e})") from e
        pub = cls.from_crypto(key)
        if pub.der != der:
            raise KeyFormatError("public key: DER is not in canonical form")
        return pub

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Parse a PEM ``PUBLIC KEY`` block."""
        if len(pem) > 4 * _MAX_KEY_BYTES:
            raise KeyFormatError("public key PEM is too large")
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(f"not a PEM public key ({e})") from e
        return cls.from_crypto(key)

    @classmethod
    def from_raw_ed25519(cls, raw: bytes) -> PublicKey:
        """An Ed25519 key from its 32 raw bytes (as PKCS#11 and signed notes carry it)."""
        try:
            return cls.from_crypto(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        except ValueError as e:
            raise KeyFormatError(f"Ed25519 public key: {e}") from e

    def to_pem(self) -> bytes:
        """The key as a PEM ``PUBLIC KEY`` block."""
        return self._crypto.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def raw(self) -> bytes:
        """Raw key bytes: 32 bytes for Ed25519, the uncompressed point for P-256."""
        return self._raw

    def verify(self, *, signature: bytes, data: bytes) -> None:
        """Verify ``signature`` over ``data``.

        Raises:
            SignatureError: the signature is malformed, non-canonical or does not verify.
        """
        if self.alg == "ed25519":
            if len(signature) != SIGNATURE_SIZE:
                raise SignatureError(
                    f"Ed25519 signature by {self.key_id} has {len(signature)} bytes, want 64"
                )
            if not ed25519_verify(self._raw, signature, data):
                raise SignatureError(f"signature by {self.key_id} does not verify", key_id=self.key_id)
            return
        _check_canonical_ecdsa(signature, self.key_id)
        try:
            self._crypto.verify(signature, data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        except InvalidSignature as e:
            raise SignatureError(
                f"signature by {self.key_id} does not verify", key_id=self.key_id
            ) from e


def _check_canonical_ecdsa(signature: bytes, key_id: KeyId) -> None:
    """Refuse BER, trailing bytes and out-of-range r, s (Wycheproof edge cases)."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError as e:
        raise SignatureError(f"ECDSA signature by {key_id} is not DER", key_id=key_id) from e
    if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
        raise SignatureError(f"ECDSA signature by {key_id} has r or s out of range", key_id=key_id)
    if encode_dss_signature(r, s) != signature:
        raise SignatureError(f"ECDSA signature by {key_id} is not canonical DER", key_id=key_id)


@runtime_checkable
class Signer(Protocol):
    """Anything that signs bytes with one private key (software, PKCS#11, ...)."""

    @property
    def public_key(self) -> PublicKey:
        """The public half of the signing key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``: raw Ed25519 signature, or DER ECDSA-SHA256 for P-256."""
        ...


class SoftwareSigner:
    """A private key held in process memory, loaded from or saved to PEM (PKCS#8)."""

    def __init__(self, private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self._private = private
        self._public = PublicKey.from_crypto(private.public_key())

    @classmethod
    def generate(cls, alg: Algorithm = "ed25519") -> SoftwareSigner:
        """A fresh random key."""
        if alg == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if alg == "p256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise KeyFormatError(f"unknown algorithm {alg!r}: want one of {', '.join(ALGORITHMS)}")

    @classmethod
    def from_pem(cls, pem: bytes, passphrase: bytes | None = None) -> SoftwareSigner:
        """Load a PKCS#8 PEM private key, optionally passphrase-encrypted."""
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except TypeError as e:
            # cryptography says TypeError when a passphrase is missing or superfluous.
            raise KeyFormatError(f"private key: {e}") from e
        except (ValueError, UnsupportedAlgorithm) as e:
            raise KeyFormatError(
                f"private key: not a PEM private key, or wrong passphrase ({e})"
            ) from e
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyFormatError(f"private key: unsupported type {type(key).__name__}")
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError(f"private key: unsupported curve {key.curve.name}")
        return cls(key)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a passphrase is given."""
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    @property
    def public_key(self) -> PublicKey:
        """The public half."""
        return self._public

    @property
    def key_id(self) -> KeyId:
        """Key id of the public half."""
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (Ed25519 raw, or P-256 ECDSA-SHA256 DER)."""
        if isinstance(self._private, ed25519.Ed25519PrivateKey):
            return self._private.sign(data)
        return self._private.sign(data, ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"SoftwareSigner({self._public.alg}, {self.key_id})"


__all__ = [
    "ALGORITHMS",
    "ED25519_BACKEND",
    "Algorithm",
    "KeyId",
    "PublicKey",
    "Signer",
    "SoftwareSigner",
    "key_id_of",
    "parse_key_id",
]
