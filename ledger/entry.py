"""Log entries: the hash-chained leaves of a log, and the records they carry.

An entry is the canonical msgpack map ``{v, seq, prev, ts, env}``:

* ``v`` -- format version, 1.
* ``seq`` -- its index in the log (so an entry cannot be moved).
* ``prev`` -- the leaf hash of entry ``seq - 1`` (32 zero bytes for entry 0): the hash chain.
* ``ts`` -- when the log integrated it, Unix milliseconds (trust decisions use this time).
* ``env`` -- the DSSE envelope in binary form, exactly as received.

Invariants: every field a verifier relies on is inside the leaf bytes, so changing any of
them changes the leaf hash (RELIABILITY L5). The record's identity is the hash of its
PAE (payload type and payload), never of signature bytes (RELIABILITY C2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger.attestation import PAYLOAD_TYPE as INTOTO_PAYLOAD_TYPE
from ledger.attestation import Attestation
from ledger.encoding import MAX_RECORD_BYTES, decode
from ledger.envelope import Envelope, Signature, pae, sign_envelope
from ledger.errors import EncodingError, RecordError, TurtlesError
from ledger.keys import KeyId, Signer
from ledger.merkle import leaf_hash
from ledger.records import KeyRecord, is_key_record_type, parse_key_record

ENTRY_VERSION = 1
ZERO_HASH = bytes(32)
MAX_ENTRY_BYTES = 3 * MAX_RECORD_BYTES
_INT64_MAX = (1 << 63) - 1

Record = KeyRecord | Attestation
_ENV_KEY = b"\x85\xa3env"  # a map of 5, then "env"
_PREV_KEY = b"\xa4prev\xc4\x20"  # "prev", then the header of 32 bytes of bin
_SEQ_KEY = b"\xa3seq"
_TS_KEY = b"\xa2ts"
_V_FIELD = b"\xa1v" + bytes([ENTRY_VERSION])


def record_id(payload_type: str, payload: bytes) -> bytes:
    """SHA-256 of the record's PAE: its identity, independent of signature bytes."""
    return hashlib.sha256(pae(payload_type, payload)).digest()


def parse_record(env: Envelope) -> Record:
    """The record an envelope carries.

    Raises:
        RecordError: unknown payload type or a bad field.
    """
    if is_key_record_type(env.payload_type):
        return parse_key_record(env.payload_type, env.payload)
    if env.payload_type == INTOTO_PAYLOAD_TYPE:
        return Attestation.from_payload(env.payload)
    raise RecordError("payloadType", f"{env.payload_type!r} is not a record type turtles accepts")


@dataclass(frozen=True)
class Entry:
    """One log entry. ``raw`` is its exact canonical bytes; ``leaf_hash`` their leaf hash."""

    seq: int
    prev: bytes
    ts: int
    envelope: Envelope
    raw: bytes
    leaf_hash: bytes

    @classmethod
    def build(cls, *, seq: int, prev: bytes, ts: int, envelope: Envelope) -> Entry:
        """Make a new entry (the log's sequencer does this).

        Raises:
            EncodingError: a field is out of range (the same rules as :meth:`from_bytes`).
        """
        _check_fields(seq, prev, ts)
        # The canonical map {env, prev, seq, ts, v} spelled out (keys in byte order): the
        # envelope's canonical bytes are computed once, in the verifying threads, and this
        # runs on the sequencer. Tests pin it to encode() of the same map.
        raw = b"".join((_ENV_KEY, envelope.to_msgpack(), _PREV_KEY, prev, _SEQ_KEY, _pack_uint(seq),
                        _TS_KEY, _pack_uint(ts), _V_FIELD))
        return cls(seq, prev, ts, envelope, raw, leaf_hash(raw))

    @classmethod
    def chain(cls, seq: int, prev: bytes, ts: int, envelopes: Sequence[Envelope]) -> list[Entry]:
        """The entries :meth:`build` makes for ``envelopes`` at ``seq, seq + 1, ...``, each
        chained to the one before (the first to ``prev``), all at ``ts``: the sequencer's
        batch. The fields are checked once for the batch, and ``ts`` packed once.

        Raises:
            EncodingError: a field is out of range (the same rules as :meth:`build`).
        """
        if not envelopes:
            return []
        _check_fields(seq, prev, ts)
        _check_fields(seq + len(envelopes) - 1, prev, ts)
        tail = _TS_KEY + _pack_uint(ts) + _V_FIELD
        out: list[Entry] = []
        new, setattr_, pack, join = object.__new__, object.__setattr__, _pack_uint, b"".join
        for env in envelopes:
            raw = join((_ENV_KEY, env.to_msgpack(), _PREV_KEY, prev, _SEQ_KEY, pack(seq), tail))
            h = leaf_hash(raw)
            entry: Entry = new(cls)  # the frozen dataclass without its __init__ (one call per field)
            setattr_(entry, "__dict__", {"seq": seq, "prev": prev, "ts": ts, "envelope": env, "raw": raw,
                                         "leaf_hash": h})
            out.append(entry)
            prev, seq = h, seq + 1
        return out

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        """Parse an entry strictly (canonical msgpack, known version, typed fields).

        Raises:
            EncodingError, TooLargeError, EnvelopeError: the bytes are not a valid entry.
        """
        fast = _fast_entry(raw)
        if fast is not None:
            return fast
        obj: Any = decode(raw, max_size=MAX_ENTRY_BYTES)
        if not isinstance(obj, dict) or set(obj) != {"v", "seq", "prev", "ts", "env"}:
            raise EncodingError("entry: want exactly the fields v, seq, prev, ts, env")
        # type() rather than ==: True == 1 in Python, and v=true is another byte form.
        if type(obj["v"]) is not int or obj["v"] != ENTRY_VERSION:
            raise EncodingError(f"entry.v: unsupported version {obj['v']!r}")
        seq, prev, ts = obj["seq"], obj["prev"], obj["ts"]
        _check_fields(seq, prev, ts)
        env = Envelope.from_value(obj["env"])
        return cls(seq, prev, ts, env, bytes(raw), leaf_hash(bytes(raw)))

    @property
    def record_id(self) -> bytes:
        """Identity of the record this entry carries (see :func:`record_id`)."""
        return record_id(self.envelope.payload_type, self.envelope.payload)


_ENTRY_KEYS = ["env", "prev", "seq", "ts", "v"]
_ENVELOPE_KEYS = ["payload", "payloadType", "signatures"]
_SIGNATURE_KEYS = ["keyid", "sig"]


def entry_map(raw: bytes) -> dict[str, Any] | None:
    """The top-level map of ``raw`` decoded by the C msgpack codec, when it has exactly an
    entry's keys in canonical order; None for anything else (too long, not msgpack, another
    shape). The limits keep the decoder from reserving more than the input could hold. The
    fast readers (:func:`_fast_entry`, the mirror workers' lean reader) start from it and
    finish with a re-encoding check."""
    n = len(raw)
    if n > MAX_ENTRY_BYTES:
        return None
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_str_len=n, max_bin_len=n,
                              max_array_len=n, max_map_len=n, max_ext_len=0)
    except Exception:  # any decoding failure: the strict reader says what it is
        return None
    if type(obj) is not dict or list(obj) != _ENTRY_KEYS:
        return None
    return obj


def _fast_entry(raw: bytes) -> Entry | None:
    """:meth:`Entry.from_bytes` of a valid entry through the C msgpack codec; None for
    anything else, which the strict reader then parses (and refuses, naming what is wrong).

    Accepted only when the value has exactly the entry's shape and types, its keys in
    canonical order, and re-encodes to the very bytes given: so shortest forms, no
    duplicate keys, no float, no extension type. The limits keep the C decoder from
    reserving more than the input could hold.
    """
    raw = bytes(raw)
    obj = entry_map(raw)
    if obj is None:
        return None
    env, prev, seq, ts = obj["env"], obj["prev"], obj["seq"], obj["ts"]
    if type(obj["v"]) is not int or obj["v"] != ENTRY_VERSION or type(seq) is not int or type(ts) is not int:
        return None
    if type(env) is not dict or list(env) != _ENVELOPE_KEYS or type(env["signatures"]) is not list:
        return None
    for sig in env["signatures"]:
        if type(sig) is not dict or list(sig) != _SIGNATURE_KEYS or type(sig["keyid"]) is not str:
            return None
        if type(sig["sig"]) is not bytes:
            return None
    if type(env["payload"]) is not bytes or type(env["payloadType"]) is not str or type(prev) is not bytes:
        return None
    if msgpack.packb(obj, use_bin_type=True) != raw:
        return None
    try:
        _check_fields(seq, prev, ts)
        envelope = Envelope(env["payloadType"], env["payload"],
                            tuple(Signature(sig["keyid"], sig["sig"]) for sig in env["signatures"]))
    except TurtlesError:
        return None
    return Entry(seq, prev, ts, envelope, raw, leaf_hash(raw))


def _pack_uint(n: int) -> bytes:
    """``msgpack.packb(n)`` of an integer ``0 <= n < 2**64`` (its shortest form), without
    making a Packer per call (tests pin it to msgpack)."""
    if n < 0x80:
        return _FIXINTS[n]
    if n < 0x100:
        return b"\xcc" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


_FIXINTS = [bytes([i]) for i in range(0x80)]


def _check_fields(seq: object, prev: object, ts: object) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= _INT64_MAX:
        raise EncodingError("entry.seq: want a non-negative 64-bit integer")
    if not isinstance(prev, bytes) or len(prev) != 32:
        raise EncodingError("entry.prev: want 32 bytes")
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= _INT64_MAX:
        raise EncodingError("entry.ts: want a non-negative 64-bit integer")


@dataclass(frozen=True)
class LoggedRecord:
    """A verified record together with where and when a log holds it.

    This is what the trust engine and lineage consume: everything needed to explain a link
    (which log, which index, when integrated, which keys signed).
    """

    origin: str
    index: int
    ts: int
    leaf_hash: bytes
    signers: tuple[KeyId, ...]
    record: Record
    record_id: bytes


def sign_record(record: KeyRecord, signers: Sequence[Signer]) -> Envelope:
    """Wrap a turtles record in a DSSE envelope signed by every signer."""
    return sign_envelope(record.payload_type(), record.to_payload(), signers)


__all__ = [
    "ENTRY_VERSION",
    "ZERO_HASH",
    "Entry",
    "LoggedRecord",
    "Record",
    "parse_record",
    "record_id",
    "sign_record",
]
