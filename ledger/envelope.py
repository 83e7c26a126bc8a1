"""DSSE envelopes (Dead Simple Signing Envelope v1), JSON and msgpack forms.

Invariants:
* Signatures are over ``PAE(payloadType, payload)`` of the exact payload bytes received;
  nothing is re-serialised before verification.
* The JSON form is the one other DSSE tools read and write: ``payload`` and ``sig`` are
  standard base64, ``keyid`` a string (may be empty for foreign envelopes).
* One strict verification policy (:meth:`Envelope.verify`): each key counts once; a
  signature by a known key that does not verify rejects the whole envelope; signatures
  by unknown keys are ignored; duplicate key ids are refused.
* Parsing is strict: unknown fields, duplicate JSON keys, floats and JSON constants
  (``NaN``), more than :data:`MAX_SIGNATURES` signatures and any base64 that is not the one
  canonical encoding of its bytes (in the standard or the URL-safe alphabet, padded or not)
  are refused. In the binary form every signature carries its ``keyid`` (possibly empty),
  so a parsed envelope re-encodes to the exact bytes it came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from ledger.encoding import MAX_RECORD_BYTES, decode, encode
from ledger.errors import EnvelopeError, SignatureError, TooLargeError, UnknownSignerError
from ledger.keys import KeyId, PublicKey, Signer
from ledger.strictjson import cached_loads, no_duplicate_keys, refuse_float

MAX_SIGNATURES = 16
MAX_SIG_BYTES = 1024
MAX_KEYID_CHARS = 256
MAX_PAYLOAD_TYPE_CHARS = 256
MAX_ENVELOPE_BYTES = 2 * MAX_RECORD_BYTES
_B64_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64_URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_loads = cached_loads(object_pairs_hook=no_duplicate_keys, parse_float=refuse_float, parse_constant=refuse_float)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding of ``payload_type`` and ``payload``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    """One DSSE signature: who signed (key id) and the signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope. Build with :func:`sign_envelope` or parse with ``from_*``."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        _check_shape(self)

    # --- forms -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (base64 text)."""
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        """The DSSE JSON form other DSSE tools read."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def to_value(self) -> dict[str, Any]:
        """The binary form embedded in log entries (bytes, not base64)."""
        return {
            "payloadType": self.payload_type,
            "payload": self.payload,
            "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
        }

    def to_msgpack(self) -> bytes:
        """Canonical msgpack of :meth:`to_value` (computed once per envelope).

        Raises:
            EncodingError: a string is not valid Unicode (a lone surrogate from JSON).
        """
        # getattr, not self.__dict__: reading __dict__ would make each instance build a dict.
        packed: bytes | None = getattr(self, "_packed", None)
        if packed is None:
            packed = _pack(self)
            object.__setattr__(self, "_packed", packed)  # a cache, not a field: eq/hash ignore it
        return packed

    def adopt_msgpack(self, packed: bytes) -> None:
        """Take ``packed`` as this envelope's :meth:`to_msgpack`.

        For callers that hold those bytes already: a worker process of
        :mod:`ledger.procverify` that packed the envelope it verified from this one's three
        fields, or the node's batch parser that read this envelope from a canonical msgpack
        body (tests pin both to the local encoding).
        """
        if getattr(self, "_packed", None) is None:
            object.__setattr__(self, "_packed", packed)

    def packed(self) -> bytes | None:
        """:meth:`to_msgpack` if it was made (or adopted) already, else None."""
        cached: bytes | None = getattr(self, "_packed", None)
        return cached

    @classmethod
    def from_dict(cls, obj: Any) -> Envelope:
        """Parse the JSON-ready form; raises EnvelopeError naming the bad field."""
        return cls._from_fields(obj, binary=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse DSSE JSON (UTF-8); raises EnvelopeError / TooLargeError."""
        if len(data) > MAX_ENVELOPE_BYTES * 2:
            raise TooLargeError(f"envelope JSON has {len(data)} bytes, limit {MAX_ENVELOPE_BYTES * 2}")
        try:
            text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
            obj = _loads(text)
        except (ValueError, RecursionError) as e:
            raise EnvelopeError(f"envelope is not valid JSON: {e}") from e
        return cls.from_dict(obj)

    @classmethod
    def from_value(cls, obj: Any) -> Envelope:
        """Parse the binary form (as decoded from msgpack)."""
        return cls._from_fields(obj, binary=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Envelope:
        """Parse canonical msgpack."""
        return cls.from_value(decode(data, max_size=MAX_ENVELOPE_BYTES))

    @classmethod
    def _from_fields(cls, obj: Any, *, binary: bool) -> Envelope:
        if not isinstance(obj, dict):
            raise EnvelopeError("envelope: want an object with payloadType, payload, signatures")
        extra = set(obj) - {"payloadType", "payload", "signatures"}
        if extra:
            raise EnvelopeError(f"envelope: unknown field(s) {', '.join(sorted(extra))}")
        ptype = obj.get("payloadType")
        if not isinstance(ptype, str) or not ptype:
            raise EnvelopeError("envelope.payloadType: want a non-empty string")
        payload = _bytes_field(obj.get("payload"), "envelope.payload", binary)
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise EnvelopeError("envelope.signatures: want a non-empty list")
        if len(sigs) > MAX_SIGNATURES:
            raise TooLargeError(f"envelope.signatures: {len(sigs)} signatures, limit {MAX_SIGNATURES}")
        parsed = []
        for i, s in enumerate(sigs):
            where = f"envelope.signatures[{i}]"
            if not isinstance(s, dict) or "sig" not in s or set(s) - {"keyid", "sig"}:
                raise EnvelopeError(f"{where}: want an object with sig and optional keyid")
            if binary and "keyid" not in s:
                # The binary form always carries keyid, so that it has one byte form.
                raise EnvelopeError(f"{where}.keyid: missing")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise EnvelopeError(f"{where}.keyid: want a string")
            parsed.append(Signature(keyid, _bytes_field(s["sig"], f"{where}.sig", binary)))
        return cls(ptype, payload, tuple(parsed))

    # --- signing and verification ------------------------------------------------------

    def pae(self) -> bytes:
        """The bytes every signature covers."""
        return pae(self.payload_type, self.payload)

    def with_signature(self, signer: Signer) -> Envelope:
        """A copy with one more signature by ``signer`` (co-signing).

        Raises:
            EnvelopeError: ``signer`` already signed this envelope.
        """
        kid = signer.public_key.key_id
        if any(s.keyid == kid for s in self.signatures):
            raise EnvelopeError(f"envelope is already signed by {kid}")
        sig = Signature(kid, signer.sign(self.pae()))
        return replace(self, signatures=(*self.signatures, sig))

    def verify(self, keys: Mapping[KeyId, PublicKey]) -> tuple[KeyId, ...]:
        """Verify against the keys the caller knows; return the key ids that signed.

        ``keys`` maps a signature's ``keyid`` (a hint, per DSSE) to the key to check it
        with. Policy: each key id appears at most once in an envelope; a signature from a
        known key that does not verify rejects the envelope; unknown key ids are ignored;
        a key reached through two different hints counts once.

        Returns:
            The ids (``key.key_id``) of the keys whose signatures verified, each once, in
            signature order.

        Raises:
            SignatureError: a known key's signature is bad, or no known key signed.
        """
        data = self.pae()
        verified: list[KeyId] = []
        for s in self.signatures:
            key = keys.get(KeyId(s.keyid))
            if key is None:
                continue
            try:
                key.verify(signature=s.sig, data=data)
            except SignatureError as e:
                raise SignatureError(
                    f"envelope signature by {s.keyid} does not verify", key_id=s.keyid
                ) from e
            if key.key_id not in verified:
                verified.append(key.key_id)
        if not verified:
            raise UnknownSignerError(
                "envelope has no signature by a known key",
                hint="a key may sign only once a root or delegation record in this log introduces it",
                key_ids=[s.keyid for s in self.signatures],
            )
        return tuple(verified)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The key ids the signatures claim (unverified)."""
        return tuple(s.keyid for s in self.signatures)


def sign_envelope(payload_type: str, payload: bytes, signers: Iterable[Signer]) -> Envelope:
    """Sign ``payload`` with every signer (at least one)."""
    data = pae(payload_type, payload)
    sigs = tuple(Signature(s.public_key.key_id, s.sign(data)) for s in signers)
    if not sigs:
        raise EnvelopeError("sign_envelope: need at least one signer")
    return Envelope(payload_type, payload, sigs)


def _pack(env: Envelope) -> bytes:
    """``encode(env.to_value())`` without the generic walk (see :func:`pack_fields`)."""
    return pack_fields(env.payload_type, env.payload, [(s.keyid, s.sig) for s in env.signatures])


def pack_fields(payload_type: str, payload: bytes, signatures: Iterable[tuple[str, bytes]]) -> bytes:
    """:meth:`Envelope.to_msgpack` of the envelope with these fields (``(keyid, sig)``
    pairs), for fields an :class:`Envelope` already checked (``_check_shape``): the shape
    is fixed and the dicts below are built with their keys in canonical (UTF-8 byte) order,
    which msgpack keeps. Tests pin it to the generic encoder.

    Raises:
        EncodingError: a string is not valid Unicode (a lone surrogate from JSON).
    """
    sigs = [{"keyid": k, "sig": s} for k, s in signatures]
    try:
        packed: bytes = msgpack.packb({"payload": payload, "payloadType": payload_type, "signatures": sigs},
                                      use_bin_type=True)
    except UnicodeEncodeError:  # raises the EncodingError that names the string
        return encode({"payloadType": payload_type, "payload": payload, "signatures": sigs})
    return packed


def _check_shape(env: Envelope) -> None:
    if not isinstance(env.payload_type, str):
        raise EnvelopeError("envelope.payloadType: want a string")
    if not env.payload_type or len(env.payload_type) > MAX_PAYLOAD_TYPE_CHARS:
        raise EnvelopeError(f"envelope.payloadType: want 1..{MAX_PAYLOAD_TYPE_CHARS} characters")
    if not isinstance(env.payload, bytes):
        raise EnvelopeError("envelope.payload: want bytes")
    if len(env.payload) > MAX_RECORD_BYTES:
        raise TooLargeError(f"envelope.payload has {len(env.payload)} bytes, limit {MAX_RECORD_BYTES}")
    if not isinstance(env.signatures, tuple) or not env.signatures:
        raise EnvelopeError("envelope.signatures: want a non-empty tuple of signatures")
    if len(env.signatures) > MAX_SIGNATURES:
        # Checked here as well as in parsing, so that co-signing cannot build an envelope
        # that no node would parse.
        raise TooLargeError(
            f"envelope.signatures: {len(env.signatures)} signatures, limit {MAX_SIGNATURES}"
        )
    seen: set[str] = set()
    for i, s in enumerate(env.signatures):
        if not isinstance(s, Signature) or not isinstance(s.keyid, str) or not isinstance(s.sig, bytes):
            raise EnvelopeError(f"envelope.signatures[{i}]: want a Signature(keyid: str, sig: bytes)")
        if not s.sig or len(s.sig) > MAX_SIG_BYTES:
            raise EnvelopeError(f"envelope.signatures[{i}].sig: want 1..{MAX_SIG_BYTES} bytes")
        if len(s.keyid) > MAX_KEYID_CHARS:
            raise EnvelopeError(f"envelope.signatures[{i}].keyid: longer than {MAX_KEYID_CHARS}")
        if s.keyid and s.keyid in seen:
            raise EnvelopeError(f"envelope.signatures[{i}].keyid: duplicate key id {s.keyid}")
        seen.add(s.keyid)


def _bytes_field(value: Any, where: str, binary: bool) -> bytes:
    if binary:
        if not isinstance(value, bytes):
            raise EnvelopeError(f"{where}: want bytes")
        return value
    if not isinstance(value, str):
        raise EnvelopeError(f"{where}: want a base64 string")
    return _b64decode(value, where)


def _b64decode(text: str, where: str) -> bytes:
    """Strict base64: DSSE lets signers use the standard or the URL-safe alphabet (one per
    string), and we take padded and unpadded text; anything else -- whitespace, misplaced or
    excess ``=``, non-zero trailing bits -- is refused, so each byte string has exactly one
    accepted text per alphabet and padding style."""
    url = bool(_B64_URL.fullmatch(text)) and any(c in text for c in "-_")
    if not url and not _B64_STD.fullmatch(text):
        raise EnvelopeError(f"{where}: not base64 (characters outside one base64 alphabet)")
    body = text.rstrip("=")
    padded = len(body) != len(text)
    if len(body) % 4 == 1 or (padded and len(text) % 4):
        raise EnvelopeError(f"{where}: not base64 (bad length or padding)")
    try:
        data = base64.b64decode(
            body + "=" * (-len(body) % 4), altchars=b"-_" if url else None, validate=True
        )
    except (binascii.Error, ValueError) as e:
        raise EnvelopeError(f"{where}: not base64") from e
    again = base64.urlsafe_b64encode(data) if url else base64.b64encode(data)
    if (again.decode() if padded else again.decode().rstrip("=")) != text:
        raise EnvelopeError(f"{where}: not canonical base64 (non-zero trailing bits)")
    return data


__all__ = ["MAX_SIGNATURES", "Envelope", "Signature", "pack_fields", "pae", "sign_envelope"]
