"""Reads and proofs over one stored log, shared by owned logs and mirrors.

Invariants: reads never go past the durable head this object holds, so a proof or an
entry served is always covered by a checkpoint of at least that size. Stored hashes never
change once written, so the hashes of large subtrees (level >= :data:`CACHED_LEVEL`, the
top of every proof) are kept in a bounded in-memory cache; the levels below it are read
from the store each time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ledger import merkle
from ledger.entry import Entry, LoggedRecord, parse_record
from ledger.errors import CorruptionError, NotFoundError, ProofError
from ledger.keys import KeyId
from ledger.store import Head, LogStore

CACHED_LEVEL = 4
"""Stored hashes of subtrees of 2**4 = 16 leaves and more are cached (1/8 of all hashes): all
but the four lowest hashes of an inclusion proof come from memory."""
MAX_CACHED = 1 << 18
"""At most this many cached hashes (about 20 MiB when full): every level >= 4 hash of a log of
four million entries; beyond that the hashes read first stay cached and the others are read
from the store."""
MAX_RANGES = 1 << 12
"""Right-edge range hashes remembered (:data:`ledger.merkle.RangeMemo`); every proof at one
tree size shares its right edge, so a few dozen serve a whole size. Forgotten all at once
when full (a few hundred KiB at most)."""


class LogReader:
    """Read access to a log's entries, indexes, roots and proofs."""

    def __init__(self, store: LogStore) -> None:
        self.origin = store.origin
        self._store = store
        self._head = store.head()
        self._checkpoint: str | None = None
        # Level CACHED_LEVEL + k: index -> hash, in a list (a list index costs a tenth of a
        # dict lookup on tuple keys, and keeps the hashes of one level together in memory).
        self._cached: list[list[bytes | None]] = []
        self._cached_count = 0
        self._warmed = -1  # tree size at the last filling scan (see _warm_up)
        self._ranges: dict[tuple[int, int], bytes] = {}

    def stored_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        """Stored hashes at ``coords`` (a :data:`ledger.merkle.HashReader`), through the cache."""
        if self._head.size > 2 * self._warmed:
            self._warm_up()
        cached = self._cached
        found: list[bytes | None] = []
        missing: list[int] = []
        for level, idx in coords:
            k = level - CACHED_LEVEL
            h = cached[k][idx] if 0 <= k < len(cached) and idx < len(cached[k]) else None
            if h is None:
                missing.append(len(found))
            found.append(h)
        if missing:
            for pos, h in zip(missing, self._store.hashes([coords[i] for i in missing]), strict=True):
                found[pos] = h
                self._remember(*coords[pos], h)
        return found  # type: ignore[return-value]  # every None was filled

    def _warm_up(self) -> None:
        """Fill the cache with one sequential scan (the lowest cached level first, up to
        :data:`MAX_CACHED`), so that proofs cost the same from the first one on; again
        each time the log has doubled since (the scans cost 1/4 of a read of every hash).
        """
        self._warmed = self._head.size
        for level, idx, h in self._store.hashes_from_level(CACHED_LEVEL, MAX_CACHED):
            self._remember(level, idx, h)

    def _remember(self, level: int, idx: int, h: bytes) -> None:
        k = level - CACHED_LEVEL
        if k < 0 or self._cached_count >= MAX_CACHED:
            return
        cached = self._cached
        while len(cached) <= k:
            cached.append([])
        row = cached[k]
        if idx >= len(row):
            row.extend([None] * max(idx + 1 - len(row), len(row) // 2, 64))
        if row[idx] is None:
            row[idx] = h
            self._cached_count += 1

    def _range_memo(self) -> dict[tuple[int, int], bytes]:
        if len(self._ranges) >= MAX_RANGES:
            self._ranges = {}
        return self._ranges

    # --- reads ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of durable entries."""
        return self._head.size

    @property
    def head(self) -> Head:
        """The durable head."""
        return self._head

    @property
    def store(self) -> LogStore:
        """The underlying key space (read-only use)."""
        return self._store

    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note covering what this reader serves (None: none yet)."""
        return self._checkpoint

    def entry(self, index: int) -> Entry:
        """Entry ``index``; NotFoundError if ``index >= size``."""
        if not 0 <= index < self._head.size:
            raise NotFoundError(f"log {self.origin} has no entry {index} (size {self._head.size})")
        return Entry.from_bytes(self._store.entry(index))

    def entries(self, start: int, stop: int) -> Iterator[Entry]:
        """Entries ``start <= index < min(stop, size)``."""
        for _, raw in self._store.entries(start, min(stop, self._head.size)):
            yield Entry.from_bytes(raw)

    def by_artefact(self, sha256_hex: str) -> list[int]:
        """Indexes of attestations whose subject has this sha256 digest."""
        return self._store.indexed(b"a", bytes.fromhex(sha256_hex))

    def by_key(self, key_id: str) -> list[int]:
        """Indexes of entries signed by, or about, this key id."""
        return self._store.indexed(b"k", key_id.encode())

    def root_at(self, size: int) -> bytes:
        """Merkle root of the first ``size`` entries (0 <= size <= current size)."""
        self._check_size(size)
        return merkle.tree_hash(size, self.stored_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Proof that entry ``index`` is in the tree of ``size``; requires index < size <= current."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"no inclusion proof: index {index} is not below size {size}")
        return merkle.prove_inclusion(index, size, self.stored_hashes, self._range_memo())

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of ``size1`` is a prefix of the tree of ``size2``."""
        self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise ProofError(f"no consistency proof from size {size1} to {size2}")
        return merkle.prove_consistency(size1, size2, self.stored_hashes, self._range_memo())

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._head.size:
            raise ProofError(
                f"size {size} is beyond the log (current size {self._head.size})",
                current_size=self._head.size,
            )

    def logged_records(self, start: int, stop: int) -> Iterator[LoggedRecord]:
        """Records of entries ``start <= index < stop`` with the signers verified at append.

        The signers come from the record-id index written in the same batch as the entry;
        nothing is re-verified here (the audit does that).
        """
        for entry in self.entries(start, stop):
            rid = entry.record_id
            signers = self._store.record_signers(rid, entry.seq)
            if signers is None:
                raise CorruptionError(f"log {self.origin}: entry {entry.seq} has no record-index row")
            yield LoggedRecord(
                self.origin, entry.seq, entry.ts, entry.leaf_hash,
                tuple(KeyId(k) for k in signers), parse_record(entry.envelope), rid,
            )


__all__ = ["LogReader"]
