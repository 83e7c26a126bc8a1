"""Keys of a log's index rows in the store (the layout table is in :mod:`ledger.store`).

An index row's key is a *head* -- ``kind`` + SHA-256(key), or ``b"r"`` + a record id --
followed by the entry's sequence number (8 bytes, big-endian), so one prefix scan finds
every entry of an artefact digest, a key id or a record. The heads depend only on the
record, so they can be made before the record is sequenced (by the verifying workers, see
:mod:`ledger.procverify`); :func:`row_key` then appends the sequence number.
"""

from __future__ import annotations

import functools
import hashlib
import struct

_U64 = struct.Struct(">Q")


def _u64(n: int) -> bytes:
    return _U64.pack(n)


def index_key(kind: bytes, key: bytes, seq: int) -> bytes:
    """Key of an index row: ``kind`` + SHA-256(key) + seq."""
    return index_head(kind, key) + _u64(seq)


def index_head(kind: bytes, key: bytes) -> bytes:
    """:func:`index_key` without its ``seq`` suffix (the part known before sequencing)."""
    return kind + hashlib.sha256(key).digest()


def key_index_key(key_id: str, seq: int) -> bytes:
    """``index_key(b"k", key_id.encode(), seq)``, hashing each key id once."""
    return key_index_head(key_id) + _u64(seq)


@functools.lru_cache(maxsize=4096)
def key_index_head(key_id: str) -> bytes:
    """:func:`key_index_key` without its ``seq`` suffix (the part known before sequencing)."""
    return b"k" + hashlib.sha256(key_id.encode()).digest()


def row_key(head: bytes, seq: int) -> bytes:
    """The key of an index row whose ``head`` (the key without its ``seq`` suffix:
    ``kind`` + SHA-256(key), or ``b"r"`` + record id) was made before sequencing."""
    return head + _u64(seq)


def record_key(rid: bytes, seq: int) -> bytes:
    """Key of a record-id row."""
    return record_head(rid) + _u64(seq)


def record_head(rid: bytes) -> bytes:
    """:func:`record_key` without its ``seq`` suffix."""
    return b"r" + rid


__all__ = ["index_head", "index_key", "key_index_head", "key_index_key", "record_head", "record_key", "row_key"]
