"""LevelDB layout of the logs a node holds (its own and its mirrors).

One LevelDB directory per node; each log lives under its own key prefix
(``L`` + first 8 bytes of SHA-256(origin)). Within a log's prefix:

=====================  ==============================================================
``M``                  meta: canonical msgpack ``{origin, vkey, kind}``
``e`` seq(8)           entry bytes (exactly the leaf data)
``h`` level(1) idx(8)  stored Merkle hash of the complete subtree (level, idx)
``r`` rid(32) seq(8)   record-id index: value = msgpack list of signer key ids
``a`` sha256(32) seq   artefact-digest index (attestation subjects)
``k`` sha256(kid) seq  key-id index (signers and keys a record is about)
``c`` size(8)          every signed checkpoint note, by tree size
``H``                  head: msgpack ``{size, root, last}``, written in the same batch
=====================  ==============================================================

Invariants:
* Every append is one ``WriteBatch(transaction=True, sync=True)``: entries, hashes, indexes
  and the head change together or not at all; an exception inside the batch leaves the
  store unchanged (RELIABILITY S4).
* A checkpoint is written in the batch that makes its head durable, or after it is durable.
* The database is opened with ``paranoid_checks`` and read with ``verify_checksums``; a
  LevelDB corruption surfaces as :class:`~ledger.errors.CorruptionError`.
* The LevelDB lock makes a second opener fail with :class:`~ledger.errors.StoreLockedError`.

LevelDB options (:data:`LEVELDB_OPTIONS`): no block compression, a 64 MiB write buffer and
16 MiB table files. Measured appending 400,000 attestations (``docs/performance.md``):
with LevelDB's defaults (Snappy, 4 MiB, 2 MiB) its compaction thread took 23 cpu us per
entry at 50,000 entries and 71 at 400,000 -- more than the rest of the append path -- since
each entry is rewritten once per level and recompressed each time; with these options, 0-16
and flat. The price is disk: ~1.45 x the raw entry bytes instead of ~0.72 x (entries are
stored as they are, with their indexes and hashes). A Bloom filter per table (10 bits a key)
and a 32 MiB block cache keep point reads (proofs' stored hashes, duplicate checks) from
probing every level: inclusion proofs at 10^6 entries 35 -> 30 cpu us, consistency 48 ->
34. LevelDB's memory (memtables, cache) is bounded by these and reported by
:meth:`Database.memory_bytes` (``turtles_leveldb_memory_bytes``).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import plyvel

from ledger.encoding import decode, encode
from ledger.errors import CorruptionError, NotFoundError, StorageError, StoreLockedError
from ledger.store_keys import index_head, record_head, record_key

T = TypeVar("T")
_U64 = struct.Struct(">Q")
_HASH_KEY = struct.Struct(">cBQ")


LEVELDB_OPTIONS: dict[str, Any] = {
    "compression": None,
    "write_buffer_size": 64 << 20,
    "max_file_size": 16 << 20,
    "bloom_filter_bits": 10,
    "lru_cache_size": 32 << 20,
}
"""Passed to ``plyvel.DB`` (see the module docstring for why)."""


def _u64(n: int) -> bytes:
    return _U64.pack(n)


@dataclass(frozen=True)
class Head:
    """The durable tip of a log: size, Merkle root, leaf hash of the last entry."""

    size: int
    root: bytes
    last: bytes

    def to_bytes(self) -> bytes:
        """Canonical msgpack form stored under ``H``."""
        return encode({"size": self.size, "root": self.root, "last": self.last})

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        """Parse the stored head; CorruptionError when it is not well-formed."""
        try:
            obj = decode(data)
            head = cls(int(obj["size"]), bytes(obj["root"]), bytes(obj["last"]))
        except Exception as e:
            raise CorruptionError(f"stored head is unreadable: {e}") from e
        if head.size < 0 or len(head.root) != 32 or len(head.last) != 32:
            raise CorruptionError("stored head has out-of-range fields")
        return head


@dataclass
class Batch:
    """What one append commits: entries, hashes, index keys, the new head and, when the log
    signed it before the write, the checkpoint note of that head (stored with them)."""

    entries: list[tuple[int, bytes]]
    hashes: list[tuple[int, int, bytes]]
    index_keys: list[tuple[bytes, bytes]]
    head: Head
    checkpoint: str | None = None


class _Health:
    """A write failure seen by any key space of one database; once set, writes stop.

    LevelDB does not make a failed log ``write()`` sticky: it keeps appending after it with
    its block framing off, and the next open finds "bad record length" and loses what
    followed. So after any failed write this process writes nothing more through the
    handle; reopening (a restart) recovers everything acknowledged before the failure.
    """

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed: str | None = None

    def check(self, origin: str) -> None:
        if self.failed is not None:
            raise StorageError(
                f"log {origin}: the store had a write error ({self.failed}); it takes no more writes",
                hint="restart the node: everything acknowledged before the error is kept",
            )


class Database:
    """A node's LevelDB directory. Close it (or use ``with``) to release the lock."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = os.fspath(path)
        try:
            self._db = plyvel.DB(
                self.path, create_if_missing=create, paranoid_checks=True, max_open_files=256, **LEVELDB_OPTIONS
            )
        except plyvel.IOError as e:
            if "lock" in str(e).lower():
                raise StoreLockedError(
                    f"{self.path} is in use by another process (LevelDB lock held)",
                    hint="stop the other turtles process using this directory",
                    path=self.path,
                ) from e
            raise StorageError(f"cannot open {self.path}: {e}", path=self.path) from e
        except plyvel.CorruptionError as e:
            raise CorruptionError(f"{self.path} is corrupt: {e}", path=self.path) from e
        except plyvel.Error as e:
            raise StorageError(f"cannot open {self.path}: {e}", path=self.path) from e
        self._health = _Health()

    def memory_bytes(self) -> int:
        """What LevelDB itself holds in memory now (memtables and block cache; bounded by
        :data:`LEVELDB_OPTIONS`): LevelDB's ``approximate-memory-usage``."""
        try:
            value = self._db.get_property(b"leveldb.approximate-memory-usage")
        except plyvel.Error:
            return 0
        return int(value) if value else 0

    @property
    def write_error(self) -> str | None:
        """The write failure that stopped all writes, if any (see ``_Health``)."""
        return self._health.failed

    def log(self, origin: str) -> LogStore:
        """The key space of the log named ``origin``."""
        prefix = b"L" + hashlib.sha256(origin.encode()).digest()[:8]
        return LogStore(self._db.prefixed_db(prefix), origin, self._health, directory=self.path)

    def origins(self) -> list[str]:
        """Origins of every log stored here."""
        out = []
        for key, value in _iterate(partial(self._db.iterator, prefix=b"L", verify_checksums=True), self.path):
            if len(key) == 10 and key.endswith(b"M"):
                out.append(str(decode(value)["origin"]))
        return sorted(out)

    def close(self) -> None:
        """Release the LevelDB lock."""
        self._db.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self._db.closed)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogStore:
    """Reads and atomic writes of one log's key space."""

    def __init__(self, db: Any, origin: str, health: _Health | None = None, *, directory: str | None = None) -> None:
        self._db = db
        self.origin = origin
        self._health = health or _Health()
        self.directory = directory
        """The LevelDB directory, for files kept beside it (the high-water mark)."""

    # --- reads ---------------------------------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except plyvel.CorruptionError as e:
            raise CorruptionError(f"log {self.origin}: corrupt block reading {key[:1]!r}") from e
        except plyvel.Error as e:
            raise StorageError(f"log {self.origin}: read failed: {e}") from e
        return value

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(partial(self._db.iterator, prefix=prefix, verify_checksums=True), f"log {self.origin}")

    def meta(self) -> dict[str, Any] | None:
        """The log's meta map, or None for a log never created."""
        raw = self._get(b"M")
        return None if raw is None else dict(decode(raw))

    def head(self) -> Head:
        """The durable head (size 0 and the empty root for a new log)."""
        raw = self._get(b"H")
        if raw is None:
            return Head(0, hashlib.sha256(b"").digest(), bytes(32))
        return Head.from_bytes(raw)

    def entry(self, seq: int) -> bytes:
        """Raw bytes of entry ``seq``; NotFoundError past the end."""
        raw = self._get(b"e" + _u64(seq))
        if raw is None:
            raise NotFoundError(f"log {self.origin} has no entry {seq}")
        return raw

    def entries(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Entries ``start <= seq < stop`` in order."""
        it = partial(self._db.iterator, start=b"e" + _u64(start), stop=b"e" + _u64(stop), verify_checksums=True)
        for key, value in _iterate(it, f"log {self.origin}"):
            yield _U64.unpack(key[1:])[0], value

    def hash_runs(self, level: int, start: int, stop: int, per: int) -> Iterator[bytes]:
        """The stored hashes of ``level`` at ``start <= index < stop``, concatenated, in runs
        that end at multiples of ``per`` (or at ``stop``): one sequential scan.

        Raises:
            CorruptionError: a hash in the range is missing or not 32 bytes (the run holding
                it is not yielded).
        """
        pack = _HASH_KEY.pack
        it = iter(_iterate(partial(self._db.iterator, start=pack(b"h", level, start),
                                   stop=pack(b"h", level, stop), verify_checksums=True, fill_cache=False),
                           f"log {self.origin}"))
        at = start
        while at < stop:
            end = min(stop, (at // per + 1) * per)
            group = list(islice(it, end - at))
            # Keys are distinct and ascending in [at, end): the last one being end - 1 means
            # that none is missing.
            if len(group) != end - at or group[-1][0] != pack(b"h", level, end - 1):
                raise CorruptionError(f"log {self.origin}: a stored hash of level {level} in [{at}, {end}) "
                                      f"is missing", level=level)
            values = [v for _, v in group]
            if any(len(v) != 32 for v in values):
                raise CorruptionError(f"log {self.origin}: a stored hash of level {level} in [{at}, {end}) "
                                      f"is not 32 bytes", level=level)
            yield b"".join(values)
            at = end

    def hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        """Stored hashes at ``(level, index)``; CorruptionError if any is missing."""
        get, pack = self._db.get, _HASH_KEY.pack  # one try for the lot: this is the proof hot path
        try:
            out: list[bytes | None] = [get(pack(b"h", level, idx), verify_checksums=True) for level, idx in coords]
        except plyvel.CorruptionError as e:
            raise CorruptionError(f"log {self.origin}: corrupt block reading {b'h'!r}") from e
        except plyvel.Error as e:
            raise StorageError(f"log {self.origin}: read failed: {e}") from e
        for (level, idx), raw in zip(coords, out, strict=True):
            if raw is None or len(raw) != 32:
                raise CorruptionError(
                    f"log {self.origin}: stored hash ({level}, {idx}) is missing", level=level, index=idx
                )
        return out  # type: ignore[return-value]  # every item was checked above

    def indexed(self, kind: bytes, key: bytes) -> list[int]:
        """Sequence numbers under an index (``a`` artefact, ``k`` key id)."""
        return [_U64.unpack(k[-8:])[0] for k, _ in self._scan(index_head(kind, key))]

    def by_record_id(self, rid: bytes) -> list[tuple[int, list[str]]]:
        """(seq, signer key ids) of every entry carrying the record ``rid``."""
        return [(_U64.unpack(k[-8:])[0], list(decode(v))) for k, v in self._scan(record_head(rid))]

    def record_signers(self, rid: bytes, seq: int) -> list[str] | None:
        """Signer key ids stored with entry ``seq`` for record ``rid`` (None: no such row)."""
        raw = self._get(record_key(rid, seq))
        return None if raw is None else list(decode(raw))

    def record_ids(self) -> Iterator[bytes]:
        """The record id of every entry (keys of the record-id index only; in key order)."""
        it = partial(self._db.iterator, prefix=b"r", include_value=False, verify_checksums=True)
        for key in _iterate(it, f"log {self.origin}"):
            yield key[1:33]

    def checkpoint(self, size: int) -> str | None:
        """The signed note stored for tree size ``size``."""
        raw = self._get(b"c" + _u64(size))
        return None if raw is None else raw.decode()

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every stored signed checkpoint, by increasing size."""
        for key, value in self._scan(b"c"):
            yield _U64.unpack(key[1:])[0], value.decode()

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The signed checkpoint of the largest size, if any."""
        it = partial(self._db.iterator, prefix=b"c", reverse=True, verify_checksums=True)
        for key, value in _iterate(it, f"log {self.origin}"):
            return _U64.unpack(key[1:])[0], value.decode()
        return None

    # --- writes --------------------------------------------------------------------------

    def _write(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        self._health.check(self.origin)
        try:
            with self._db.write_batch(transaction=True, sync=True) as wb:
                for k, v in puts:
                    wb.put(k, v)
        except plyvel.Error as e:
            self._health.failed = str(e)
            raise StorageError(f"log {self.origin}: write failed: {e}") from e

    def create(self, meta: dict[str, Any]) -> None:
        """Write the meta map of a new log."""
        self._write([(b"M", encode(meta))])

    def commit(self, batch: Batch) -> None:
        """Write a batch of entries (and the checkpoint of its head, if given) atomically and
        durably; the head goes in last."""
        pack, u64 = _HASH_KEY.pack, _U64.pack
        self._health.check(self.origin)
        try:
            with self._db.write_batch(transaction=True, sync=True) as wb:
                put = wb.put
                for s, raw in batch.entries:
                    put(b"e" + u64(s), raw)
                for lv, ix, h in batch.hashes:
                    put(pack(b"h", lv, ix), h)
                for k, v in batch.index_keys:
                    put(k, v)
                if batch.checkpoint is not None:
                    put(b"c" + u64(batch.head.size), batch.checkpoint.encode())
                put(b"H", batch.head.to_bytes())
        except plyvel.Error as e:
            self._health.failed = str(e)
            raise StorageError(f"log {self.origin}: write failed: {e}") from e

    def put_checkpoint(self, size: int, note: str) -> None:
        """Store a signed checkpoint note (after the data it covers is durable)."""
        self._write([(b"c" + _u64(size), note.encode())])


def _iterate(make: Callable[[], Iterable[T]], where: str) -> Iterator[T]:
    """Make and run a plyvel iterator (its constructor already reads), turning its errors
    into ledger errors."""
    try:
        yield from make()
    except plyvel.CorruptionError as e:
        raise CorruptionError(f"{where}: corrupt block in a scan: {e}") from e
    except plyvel.Error as e:
        raise StorageError(f"{where}: read failed in a scan: {e}") from e


__all__ = ["Batch", "Database", "Head", "LogStore"]
