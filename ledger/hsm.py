"""PKCS#11 signing through python-pkcs11: token keys, signers, key generation.

The RFC 7512 URIs and PINs live in :mod:`ledger.pkcs11uri` and the worker-thread context in
:mod:`ledger.pkcs11ctx`; their public names are re-exported here, so ``ledger.hsm`` remains the
one import for PKCS#11 callers.

Invariants:
* Every PKCS#11 call runs on the context's one worker thread (see :mod:`ledger.pkcs11ctx`).
* A PIN never appears in a repr, a str, a log line or an error message.
* Keys generated here are token objects with ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE``
  false. Every signature is checked against the token's public key before it is returned.
* A private key is used only with the scheme of its own public key (C3).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from ledger.errors import DuplicateError, HSMError, KeyFormatError, SignatureError
from ledger.keys import ALGORITHMS, Algorithm, KeyId, PublicKey
from ledger.pkcs11ctx import Pkcs11Context, RetryPolicy, _Session
from ledger.pkcs11uri import Pin, Pkcs11Uri, _describe_key, _TokenKey, as_pin, parse_pkcs11_uri

_PIN_HINT = "give the token PIN: a PIN file, pin-source/pin-value in the URI, or TURTLES_PKCS11_PIN"

# --- keys in a token ----------------------------------------------------------------------------

_CURVES: dict[Algorithm, tuple[KeyType, bytes]] = {
    "ed25519": (KeyType.EC_EDWARDS, encode_named_curve_parameters("1.3.101.112")),
    "p256": (KeyType.EC, encode_named_curve_parameters("1.2.840.10045.3.1.7")),
}
# Some tokens name Ed25519 by the PrintableString "edwards25519" instead of its OID.
_ED25519_NAMED = b"\x13\x0cedwards25519"


def _public_key_of(obj: Any) -> PublicKey:
    """Decode a PKCS#11 public key object (CKA_EC_PARAMS + CKA_EC_POINT)."""
    key_type, params, point = (
        obj[Attribute.KEY_TYPE],
        obj[Attribute.EC_PARAMS],
        obj[Attribute.EC_POINT],
    )
    if key_type == KeyType.EC_EDWARDS and params in (_CURVES["ed25519"][1], _ED25519_NAMED):
        return PublicKey.from_raw_ed25519(_octets(point, 32))
    if key_type == KeyType.EC and params == _CURVES["p256"][1]:
        try:
            return PublicKey.from_crypto(
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _octets(point, 65))
            )
        except ValueError as e:
            raise KeyFormatError(f"token holds an invalid P-256 point ({e})") from e
    raise KeyFormatError(
        f"unsupported token key: type {key_type!r}, EC params {bytes(params).hex()}: want Ed25519 or P-256"
    )


def _octets(point: bytes, size: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING; a few tokens return the bare point instead."""
    point = bytes(point)
    if len(point) == size + 2 and point[0] == 0x04 and point[1] == size:
        return point[2:]
    if len(point) == size:
        return point
    raise KeyFormatError(f"CKA_EC_POINT has {len(point)} bytes, want a {size}-byte point")


class Pkcs11Signer:
    """A :class:`~ledger.keys.Signer` whose private key never leaves a PKCS#11 token.

    The URI names the key by ``object`` (CKA_LABEL) and/or ``id`` (CKA_ID) on the token it
    selects. The public key is read once, when the signer is made.
    """

    def __init__(
        self, context: Pkcs11Context, uri: Pkcs11Uri | str, *, pin: Pin | str | None = None
    ) -> None:
        self._uri = uri if isinstance(uri, Pkcs11Uri) else parse_pkcs11_uri(uri)
        if self._uri.object is None and self._uri.id is None:
            raise KeyFormatError(f"pkcs11 URI {self._uri} names no key: give object= and/or id=")
        if self._uri.type not in (None, "private", "public"):
            raise KeyFormatError(
                f"pkcs11 URI {self._uri} names a {self._uri.type} object, not a key pair"
            )
        self._pin = as_pin(pin)
        if self._pin is None:
            raise HSMError(
                f"no PIN for {_TokenKey.of(self._uri)}: signing needs a logged-in session",
                hint=_PIN_HINT,
            )
        self._context = context
        self._token = _TokenKey.of(self._uri)
        self._public = context._with_state(self._uri, self._open, pin=self._pin)

    def _open(self, state: _Session) -> PublicKey:
        public = _public_key_of(state.find(self._uri, ObjectClass.PUBLIC_KEY, self._token))
        private = state.find(self._uri, ObjectClass.PRIVATE_KEY, self._token)
        want = _CURVES[public.alg][0]
        if private[Attribute.KEY_TYPE] != want:  # C3: never pair a key with another's scheme
            raise KeyFormatError(
                f"private and public key {_describe_key(self._uri)} in {self._token} differ in type"
            )
        return public

    @property
    def public_key(self) -> PublicKey:
        """The token's public key for this signer."""
        return self._public

    @property
    def key_id(self) -> KeyId:
        """Key id of the public key."""
        return self._public.key_id

    @property
    def uri(self) -> Pkcs11Uri:
        """The URI this signer was made from."""
        return self._uri

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``: raw Ed25519, or DER ECDSA over SHA-256 for P-256."""
        return self.sign_many([data])[0]

    def sign_many(self, datas: Sequence[bytes]) -> list[bytes]:
        """Sign each item of ``datas`` in one trip through the worker thread, in order.

        Raises:
            HSMError: the token failed, or produced a signature that does not verify.
        """
        items = [bytes(d) for d in datas]
        if not items:
            return []
        signatures = self._context._with_state(
            self._uri, lambda st: self._sign_all(st, items), pin=self._pin
        )
        for data, signature in zip(items, signatures, strict=True):
            try:
                self._public.verify(signature=signature, data=data)
            except SignatureError as e:  # a faulty token must not publish a bad signature
                raise HSMError(
                    f"{self._token} produced a signature that does not verify ({self.key_id})"
                ) from e
        return signatures

    def _sign_all(self, state: _Session, items: list[bytes]) -> list[bytes]:
        key = state.find(self._uri, ObjectClass.PRIVATE_KEY, self._token)
        if self._public.alg == "ed25519":
            return [bytes(key.sign(d, mechanism=Mechanism.EDDSA)) for d in items]
        # SoftHSM2 lacks CKM_ECDSA_SHA256: hash here, sign the digest, return DER.
        return [
            _der_signature(key.sign(hashlib.sha256(d).digest(), mechanism=Mechanism.ECDSA))
            for d in items
        ]

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self._public.alg}, {self.key_id}, {self._uri})"


def read_public_key(
    context: Pkcs11Context, uri: Pkcs11Uri | str, *, pin: Pin | str | None = None
) -> PublicKey:
    """The public key a URI names (CKA_LABEL ``object`` and/or CKA_ID ``id``); no PIN needed.

    Raises:
        NotFoundError: no such public key object. KeyFormatError: not Ed25519 or P-256.
    """
    parsed = uri if isinstance(uri, Pkcs11Uri) else parse_pkcs11_uri(uri)
    if parsed.object is None and parsed.id is None:
        raise KeyFormatError(f"pkcs11 URI {parsed} names no key: give object= and/or id=")
    token = _TokenKey.of(parsed)
    return context._with_state(
        parsed,
        lambda st: _public_key_of(st.find(parsed, ObjectClass.PUBLIC_KEY, token)),
        pin=as_pin(pin),
    )


def _der_signature(raw: bytes) -> bytes:
    if len(raw) != 64:
        raise HSMError(f"token returned a {len(raw)}-byte ECDSA signature, want 64 (r||s)")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def generate_keypair(
    context: Pkcs11Context,
    *,
    token_label: str,
    label: str,
    alg: Algorithm = "ed25519",
    pin: Pin | str | None = None,
    key_id: bytes | None = None,
) -> PublicKey:
    """Generate a key pair inside the token and return its public key.

    The private key is a token object with CKA_SENSITIVE true and CKA_EXTRACTABLE false. The
    pair gets CKA_LABEL ``label`` and CKA_ID ``key_id`` (16 random bytes by default).

    Raises:
        DuplicateError: the token already holds an object labelled ``label`` (or with id
            ``key_id``, when one is given).
        KeyFormatError: unknown ``alg``.
        HSMError: no PIN, or the token failed.
    """
    if alg not in ALGORITHMS:
        raise KeyFormatError(f"unknown algorithm {alg!r}: want one of {', '.join(ALGORITHMS)}")
    if not label:
        raise KeyFormatError("a token key needs a non-empty label")
    secret = as_pin(pin)
    uri = Pkcs11Uri(token=token_label, object=label)
    if secret is None:
        raise HSMError(
            f"no PIN for {_TokenKey.of(uri)}: generating a key needs a logged-in session",
            hint=_PIN_HINT,
        )
    key_type, params = _CURVES[alg]
    object_id = key_id if key_id is not None else os.urandom(16)

    def generate(state: _Session) -> PublicKey:
        session = state.session
        if list(session.get_objects({Attribute.LABEL: label})):
            raise DuplicateError(
                f"token {token_label!r} already holds a key labelled {label!r}: refusing to create another",
                token=token_label, label=label,
            )  # fmt: skip
        if key_id is not None and list(session.get_objects({Attribute.ID: key_id})):
            raise DuplicateError(
                f"token {token_label!r} already holds a key with id {key_id.hex()}: refusing to create another",
                token=token_label, label=label,
            )  # fmt: skip
        domain = session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: params}, local=True
        )
        public, _ = domain.generate_keypair(
            store=True, label=label, id=object_id,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.TOKEN: True, Attribute.PRIVATE: False},
            private_template={
                Attribute.TOKEN: True, Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
            },
        )  # fmt: skip
        return _public_key_of(public)

    return context._with_state(uri, generate, pin=secret)


__all__ = [
    "Pin",
    "Pkcs11Context",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "RetryPolicy",
    "as_pin",
    "generate_keypair",
    "parse_pkcs11_uri",
    "read_public_key",
]
