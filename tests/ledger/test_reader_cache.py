"""Tests for the stored-hash cache behind LogReader (ledger._hash_cache): proofs and roots read
through it equal the list-based reference in ledger.merkle for random sizes and indexes, as
the log grows, on both sides of the byte budget, and after reopening; a damaged store is
refused without caching anything wrong; proofs from other threads stay right while it grows."""

from __future__ import annotations

import hashlib
import random
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger._hash_cache import HashCache, cached_bytes, floor_for
from ledger.errors import CorruptionError
from ledger.reader import LogReader
from ledger.store import Batch, Database, Head, LogStore

ORIGIN = "test.turtles/cache"


class _Reader(LogReader):
    """A reader whose head follows the store (a Log or a Mirror moves it after a commit)."""

    def follow(self) -> None:
        self._head = self._store.head()


def _leaf(i: int) -> bytes:
    return hashlib.sha256(b"leaf %d" % i).digest()


def _grow(store: LogStore, leaves: list[bytes], size: int) -> None:
    """Append leaves up to ``size`` the way a log commits them: their stored hashes and the head."""
    start = len(leaves)
    new = [_leaf(i) for i in range(start, size)]
    hashes = merkle.stored_hashes_for_leaves(start, new, store.hashes)
    leaves += new
    store.commit(Batch([], hashes, [], Head(size, merkle.root_hash(leaves), leaves[-1])))


@contextmanager
def _store() -> Iterator[LogStore]:
    with tempfile.TemporaryDirectory() as tmp, Database(Path(tmp) / "db") as db:
        yield db.log(ORIGIN)


def _check(reader: LogReader, leaves: list[bytes], picks: list[tuple[int, int]]) -> None:
    size = reader.size
    for a, b in picks:
        n = a % size + 1  # 1 <= n <= size
        i = b % n
        assert reader.inclusion_proof(i, n) == merkle.inclusion_proof(leaves, i, n), (i, n)
        m = b % (n + 1)
        assert reader.consistency_proof(m, n) == merkle.consistency_proof(leaves, m, n), (m, n)
        assert reader.root_at(n) == merkle.root_hash(leaves[:n]), n


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.integers(1, 700), min_size=1, max_size=4),
    budget=st.sampled_from([0, 32, 100, 1000, 5000, 20_000, 1 << 20]),
    budget2=st.sampled_from([0, 1000, 20_000, 1 << 20]),
    picks=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=12),
)
def test_proofs_through_the_cache_equal_the_reference_as_the_log_grows(
    steps: list[int], budget: int, budget2: int, picks: list[tuple[int, int]]
) -> None:
    with _store() as store:
        leaves: list[bytes] = []
        reader = _Reader(store)
        reader.set_hash_cache_bytes(budget)
        for step in steps:
            _grow(store, leaves, len(leaves) + step)
            reader.follow()
            _check(reader, leaves, picks)
            assert reader.hash_cache_bytes <= budget
            # The cache catches up when a read misses it (the root at the head's size does):
            # then it holds whole levels from the top down, as many as the budget allows.
            assert reader.root_at(len(leaves)) == merkle.root_hash(leaves)
            assert reader.hash_cache_bytes == cached_bytes(len(leaves), floor_for(len(leaves), budget))
        again = LogReader(store)  # a reopened reader, default budget, agrees
        again.set_hash_cache_bytes(budget)
        _check(again, leaves, picks)
        reader.set_hash_cache_bytes(budget2)  # levels join or leave at once
        assert reader.hash_cache_bytes == cached_bytes(len(leaves), floor_for(len(leaves), budget2))
        _check(reader, leaves, picks)


def test_a_reader_serves_only_up_to_its_head_while_the_store_is_ahead() -> None:
    """A mirror's store holds entries beyond the checkpoint its reads are bounded by: the
    cache follows the reader's head, and hashes beyond it still come from the store."""
    with _store() as store:
        leaves: list[bytes] = []
        _grow(store, leaves, 300)
        reader = _Reader(store)
        _grow(store, leaves, 773)  # the store moves on, this reader's head does not
        assert reader.size == 300
        assert reader.inclusion_proof(299, 300) == merkle.inclusion_proof(leaves, 299, 300)
        assert reader.stored_hashes([(0, 700), (1, 350)]) == [leaves[700], merkle.root_hash(leaves[700:702])]
        reader.follow()
        _check(reader, leaves, [(len(leaves) - 1, k) for k in (0, 255, 256, 519, 10**6)])


def test_floor_for_keeps_the_top_levels_within_the_budget() -> None:
    for size in (0, 1, 2, 3, 1000, 1 << 20, 10**6, 10**7):
        for budget in (0, 31, 32, 64, 1000, 1 << 16, 64 << 20, 128 << 20):
            floor = floor_for(size, budget)
            assert cached_bytes(size, floor) <= budget
            if floor > 0:  # one level more would not fit
                assert cached_bytes(size, floor - 1) > budget
    assert floor_for(10**6, 128 << 20) == 0  # every level of a million entries fits the default


def test_a_missing_stored_hash_is_refused_and_nothing_wrong_is_cached() -> None:
    with _store() as store:
        leaves: list[bytes] = []
        _grow(store, leaves, 100)
        store._db.delete(b"h" + bytes([0]) + (37).to_bytes(8, "big"))  # damage: leaf hash 37 gone
        reader = LogReader(store)
        with pytest.raises(CorruptionError, match="missing"):
            reader.inclusion_proof(36, 100)
        with pytest.raises(CorruptionError, match="missing"):  # still refused: nothing was cached past it
            reader.inclusion_proof(36, 100)


def test_a_stored_hash_of_the_wrong_size_is_refused() -> None:
    with _store() as store:
        leaves: list[bytes] = []
        _grow(store, leaves, 50)
        store._db.put(b"h" + bytes([1]) + (3).to_bytes(8, "big"), bytes(31))
        cache = HashCache(1 << 20)
        with pytest.raises(CorruptionError, match="not 32 bytes"):
            cache.sync(store, 50)
        assert cache.size == 0


def test_proofs_from_threads_stay_right_while_the_log_grows_and_levels_are_dropped() -> None:
    """Readers take no lock: proofs served from other threads while the head moves (and the
    budget makes the cache drop its lowest levels) still verify against the reference root."""
    with _store() as store:
        leaves: list[bytes] = []
        _grow(store, leaves, 1)
        reader = _Reader(store)
        reader.set_hash_cache_bytes(40_000)  # all levels at first, fewer by the end
        errors: list[BaseException] = []
        done = threading.Event()

        def prove(seed: int) -> None:
            rng = random.Random(seed)
            try:
                while not done.is_set():
                    size = reader.size
                    i = rng.randrange(size)
                    root = merkle.root_hash(leaves[:size])
                    merkle.verify_inclusion(leaves[i], i, size, reader.inclusion_proof(i, size), root)
                    m = rng.randrange(size + 1)
                    merkle.verify_consistency(m, size, reader.consistency_proof(m, size),
                                              merkle.root_hash(leaves[:m]), root)
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=prove, args=(seed,)) for seed in range(2)]
        for t in threads:
            t.start()
        try:
            for size in range(50, 2000, 50):
                _grow(store, leaves, size)
                reader.follow()
        finally:
            done.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]
        assert 0 < reader.hash_cache_bytes <= 40_000
        assert reader.root_at(len(leaves)) == merkle.root_hash(leaves)
