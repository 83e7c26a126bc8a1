"""Reads and proofs over one stored log, shared by owned logs and mirrors.

Invariants: reads never go past the durable head this object holds, so a proof or an
entry served is always covered by a checkpoint of at least that size. Stored hashes never
change once written, so the tree's levels are kept in memory (:mod:`ledger._hash_cache`),
from the top down to the lowest level a byte budget allows, and brought up to the head's
size when a read needs them; the levels below are read from the store each time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ledger import merkle
from ledger._hash_cache import HashCache, cached_bytes
from ledger.entry import Entry, LoggedRecord, parse_record
from ledger.errors import CorruptionError, NotFoundError, ProofError
from ledger.keys import KeyId
from ledger.store import Head, LogStore

HASH_CACHE_BYTES = 128 << 20
"""Default budget of the stored-hash cache of one log: every level of a log of up to two
million entries (32 bytes a hash, two hashes an entry); above that the lowest levels that
do not fit are read from the store (at 10^7 entries, the three lowest)."""
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
        self._hashes = HashCache(HASH_CACHE_BYTES)
        self._ranges: dict[tuple[int, int], bytes] = {}

    def set_hash_cache_bytes(self, budget: int) -> None:
        """Bound the memory of the stored-hash cache to ``budget`` bytes (0: no cache): the
        levels that no longer fit are dropped now, those that fit again are read now."""
        self._hashes.set_budget(self._store, budget)

    def warm_hash_cache(self) -> int:
        """Bring the stored-hash cache up to the head now, rather than in the first proof that
        needs it (~0.7 s of reading at 10^6 entries; a node does it in the background as it
        starts); returns :attr:`hash_cache_bytes`."""
        self._synced()
        return self.hash_cache_bytes

    @property
    def hash_cache_budget(self) -> int:
        """The stored-hash cache's byte budget (:meth:`set_hash_cache_bytes`)."""
        return self._hashes.budget

    @property
    def hash_cache_bytes(self) -> int:
        """Bytes of stored hashes held in memory."""
        cache = self._hashes
        return cached_bytes(cache.size, cache.floor)

    def stored_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        """Stored hashes at ``coords`` (a :data:`ledger.merkle.HashReader`): from the cache,
        brought up to the head first if it lags behind it, else from the store."""
        cache = self._hashes
        found: list[bytes | None] = [None] * len(coords)
        missing = cache.get(coords, found)
        if missing and cache.size < self._head.size:
            cache.sync(self._store, self._head.size)
            missing = cache.get(coords, found)
        if missing:
            for pos, h in zip(missing, self._store.hashes([coords[i] for i in missing]), strict=True):
                found[pos] = h
        return found  # type: ignore[return-value]  # every None was filled

    def _synced(self) -> HashCache:
        """The hash cache, brought up to the head: the precondition of its proof readers
        (:meth:`_proof_hashes` and :meth:`HashCache.path`) for trees up to the head."""
        cache = self._hashes
        if cache.size < self._head.size:
            cache.sync(self._store, self._head.size)
        return cache

    def _proof_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        """:meth:`stored_hashes` for the proof planners, after :meth:`_synced`: one list
        comprehension over the cache when it holds every level."""
        found = self._hashes.get_all(coords)
        return found if found is not None else self.stored_hashes(coords)

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
        self._synced()
        return merkle.tree_hash(size, self._proof_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Proof that entry ``index`` is in the tree of ``size``; requires index < size <= current."""
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"no inclusion proof: index {index} is not below size {size}")
        return merkle.prove_inclusion(index, size, self._proof_hashes, self._range_memo(), self._synced().path)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of ``size1`` is a prefix of the tree of ``size2``."""
        self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise ProofError(f"no consistency proof from size {size1} to {size2}")
        return merkle.prove_consistency(size1, size2, self._proof_hashes, self._range_memo(), self._synced().path)

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
