"""The offline bundle file: its records, its one canonical byte form and its limits.

A bundle holds, for one artefact digest, the exact leaf bytes of the records on the trust
paths of its attestations, an RFC 9162 inclusion proof for each, the signed checkpoint of
each log those proofs lead to, each log's verifier key and the witnesses' cosigner keys.
See ``docs/bundles.md``; building one is :mod:`ledger.bundle_build`, checking one
:mod:`ledger.bundle_check`.

Invariants:
* One byte form: :meth:`Bundle.to_bytes` is canonical JSON (sorted keys, no spaces, ASCII,
  one final newline; canonical base64), and :meth:`Bundle.from_bytes` accepts exactly that
  form, so changing any byte of a bundle either breaks parsing or changes a value that a
  signature or proof covers.
* Parsing is bounded: :data:`MAX_BUNDLE_BYTES` and the count limits are checked before the
  items they bound are decoded; every refusal names the offending field.
* Leaf bytes are kept exactly as the log stored them; nothing is re-encoded to verify.
* Nothing here verifies a signature or a proof: a parsed bundle is well formed, not trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from ledger import merkle
from ledger.checkpoint import ALG_ED25519, NoteVerifier, parse_verifier_key
from ledger.errors import EncodingError, KeyFormatError, NoteError, TooLargeError
from ledger.keys import KeyId, PublicKey
from ledger.strictjson import no_duplicate_keys, refuse_float

BUNDLE_FORMAT = "https://turtles.dev/bundle/v1"
MAX_BUNDLE_BYTES = 64 << 20
MAX_RECORDS = 4096
MAX_LOGS = 256
MAX_WITNESSES = 64
MAX_PROOF_HASHES = 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"artefact", "format", "logs", "records", "witnesses"})
_LOG_FIELDS = frozenset({"checkpoint", "origin", "vkey"})
_RECORD_FIELDS = frozenset({"entry", "index", "origin", "proof"})


@dataclass(frozen=True)
class BundledLog:
    """A log the bundle's proofs lead to: its origin, verifier key and signed checkpoint."""

    origin: str
    vkey: str
    checkpoint: str


@dataclass(frozen=True)
class BundledRecord:
    """One log entry: exact leaf bytes and the proof of its inclusion in its log's checkpoint."""

    origin: str
    index: int
    entry: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Bundle:
    """An offline verification bundle for the artefact ``artefact`` (64 lowercase hex)."""

    artefact: str
    logs: tuple[BundledLog, ...]
    records: tuple[BundledRecord, ...]
    witnesses: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (bytes as canonical standard base64)."""
        return {
            "artefact": "sha256:" + self.artefact,
            "format": BUNDLE_FORMAT,
            "logs": [{"checkpoint": g.checkpoint, "origin": g.origin, "vkey": g.vkey} for g in self.logs],
            "records": [
                {"entry": _b64(r.entry), "index": r.index, "origin": r.origin, "proof": [_b64(p) for p in r.proof]}
                for r in self.records
            ],
            "witnesses": list(self.witnesses),
        }

    def to_bytes(self) -> bytes:
        """The canonical file form."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return text.encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Bundle:
        """Parse a bundle file strictly.

        Raises:
            TooLargeError: over :data:`MAX_BUNDLE_BYTES` or a count limit.
            EncodingError: not canonical bundle JSON (names the offending field).
        """
        if len(data) > MAX_BUNDLE_BYTES:
            raise TooLargeError(f"bundle has {len(data)} bytes, limit {MAX_BUNDLE_BYTES}")
        try:
            obj = json.loads(data, object_pairs_hook=no_duplicate_keys, parse_float=refuse_float, parse_constant=refuse_float)
        except (ValueError, RecursionError) as e:
            raise EncodingError(f"bundle is not valid JSON: {str(e)[:200]}") from e
        bundle = cls._from_obj(obj)
        if bundle.to_bytes() != data:
            raise EncodingError(
                "bundle is not in canonical form (bytes were changed after it was written)",
                hint="bundles are written by `turtles bundle`; do not edit them",
            )
        return bundle

    @classmethod
    def _from_obj(cls, obj: Any) -> Bundle:
        _fields(obj, _FIELDS, "bundle")
        if obj["format"] != BUNDLE_FORMAT:
            raise EncodingError(f"bundle.format: {str(obj['format'])[:80]!r} is not {BUNDLE_FORMAT}")
        artefact = obj["artefact"]
        if not isinstance(artefact, str) or not artefact.startswith("sha256:") or not _HEX64.fullmatch(artefact[7:]):
            raise EncodingError("bundle.artefact: want sha256:<64 lowercase hex>")
        logs = _list(obj["logs"], "bundle.logs", MAX_LOGS)
        records = _list(obj["records"], "bundle.records", MAX_RECORDS)
        witnesses = _list(obj["witnesses"], "bundle.witnesses", MAX_WITNESSES)
        return cls(
            artefact[7:],
            tuple(_log(g, f"bundle.logs[{i}]") for i, g in enumerate(logs)),
            tuple(_record(r, f"bundle.records[{i}]") for i, r in enumerate(records)),
            tuple(_text(w, f"bundle.witnesses[{i}]") for i, w in enumerate(witnesses)),
        )


# --- the keys a bundle names ------------------------------------------------------------------


def typed_verifier(vkey: str, *, alg: int, what: str) -> NoteVerifier:
    """Parse the note verifier key ``vkey`` and require signature type ``alg``.

    ``what`` names the key in error messages (e.g. ``"witness vkey"``).

    Raises:
        NoteError: ``vkey`` is malformed or of another signature type.
    """
    try:
        v = parse_verifier_key(vkey)
    except KeyFormatError as e:
        raise NoteError(f"{what} {vkey[:120]!r}: {e.message}") from e
    if v.alg != alg:
        raise NoteError(f"{what} {vkey[:120]!r} has signature type 0x{v.alg:02x}, want 0x{alg:02x}")
    return v


def log_key_id(vkey: str) -> KeyId:
    """The ledger key id (``sha256:`` of the DER SPKI) of the Ed25519 key behind a log vkey.

    This is the id a ``delegation`` with purpose ``log`` names as its subject.

    Raises:
        NoteError: not an Ed25519 (type 0x01) vkey.
    """
    return PublicKey.from_raw_ed25519(typed_verifier(vkey, alg=ALG_ED25519, what="log vkey").public_raw).key_id


# --- strict JSON parts -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise EncodingError(f"{where}: want a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EncodingError(f"{where}: not base64") from e
    return raw






def _fields(obj: Any, want: frozenset[str], where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != want:
        raise EncodingError(f"{where}: want an object with exactly {', '.join(sorted(want))}")


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise EncodingError(f"{where}: want a list")
    if len(value) > limit:
        raise TooLargeError(f"{where}: {len(value)} items, limit {limit}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise EncodingError(f"{where}: want a non-empty string")
    return value


def _log(obj: Any, where: str) -> BundledLog:
    _fields(obj, _LOG_FIELDS, where)
    return BundledLog(
        _text(obj["origin"], f"{where}.origin"), _text(obj["vkey"], f"{where}.vkey"),
        _text(obj["checkpoint"], f"{where}.checkpoint"),
    )


def _record(obj: Any, where: str) -> BundledRecord:
    _fields(obj, _RECORD_FIELDS, where)
    index = obj["index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= merkle.MAX_TREE_SIZE:
        raise EncodingError(f"{where}.index: want a non-negative integer")
    proof = _list(obj["proof"], f"{where}.proof", MAX_PROOF_HASHES)
    return BundledRecord(
        _text(obj["origin"], f"{where}.origin"), index, _unb64(obj["entry"], f"{where}.entry"),
        tuple(_unb64(p, f"{where}.proof[{j}]") for j, p in enumerate(proof)),
    )


__all__ = [
    "BUNDLE_FORMAT",
    "MAX_BUNDLE_BYTES",
    "MAX_LOGS",
    "MAX_PROOF_HASHES",
    "MAX_RECORDS",
    "MAX_WITNESSES",
    "Bundle",
    "BundledLog",
    "BundledRecord",
    "log_key_id",
    "typed_verifier",
]
