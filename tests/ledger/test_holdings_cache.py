"""One stored-hash cache budget for a whole node (``Holdings.share_hash_cache``,
``ledger._hash_cache.share_budget``): it holds the most tree levels that fit, the smallest
first across every log; the shares never add up to more than the budget; proofs stay right
whatever each log was given; the share follows the logs as they grow."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger._hash_cache import cached_bytes, floor_for, share_budget
from ledger.holdings import HASH_CACHE_BYTES, Holdings
from ledger.keys import SoftwareSigner
from ledger.mirror import Mirror
from ledger.reader import LogReader
from ledger.trust import RootsPolicy
from tests.ledger.conftest import World

MIRROR_NODE = "mirror.example/log"


def _levels_held(size: int, budget: int) -> int:
    return size.bit_length() - floor_for(size, budget)


def _most_levels(sizes: list[int], total: int) -> int:
    """The naive answer: try every floor of every log."""
    best = 0
    for floors in itertools.product(*[range(s.bit_length() + 1) for s in sizes]):
        if sum(cached_bytes(s, f) for s, f in zip(sizes, floors, strict=True)) <= total:
            best = max(best, sum(s.bit_length() - f for s, f in zip(sizes, floors, strict=True)))
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 700), max_size=3), st.integers(0, 80_000))
def test_the_share_holds_the_most_levels_that_fit(sizes: list[int], total: int) -> None:
    budgets = share_budget(sizes, total)
    assert len(budgets) == len(sizes) and all(b >= 0 for b in budgets)
    assert sum(budgets) <= total
    held = [cached_bytes(s, floor_for(s, b)) for s, b in zip(sizes, budgets, strict=True)]
    assert all(h <= b for h, b in zip(held, budgets, strict=True))
    assert sum(_levels_held(s, b) for s, b in zip(sizes, budgets, strict=True)) == _most_levels(sizes, total)


@given(st.lists(st.integers(0, 5_000), min_size=1, max_size=5), st.integers(0, 10_000))
def test_a_budget_that_holds_everything_gives_every_log_every_level(sizes: list[int], spare: int) -> None:
    need = [cached_bytes(s, 0) for s in sizes]
    budgets = share_budget(sizes, sum(need) + spare)
    assert all(b >= n for b, n in zip(budgets, need, strict=True))
    assert all(floor_for(s, b) == 0 for s, b in zip(sizes, budgets, strict=True))


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        share_budget([10], -1)
    assert share_budget([], 100) == []


def _mirror_of(world: World, holdings: Holdings) -> Mirror:
    """Mirror ``world.log`` as it is now into ``holdings`` (as the replicator does)."""
    log = world.log
    m = holdings.mirror(log.origin, log.vkey)
    note, size = log.checkpoint(), log.size
    m.apply(note=note, entries=[], proof=log.consistency_proof(m.tip.size, size) if m.tip.size else [])
    entries = [log.store.entry(i) for i in range(m.size, size)]
    for _ in range(size):  # each call takes at least one entry
        if not entries:
            break
        entries = entries[m.apply(note=note, entries=entries, proof=[]):]
    return m


def _assert_proofs_right(reader: LogReader) -> None:
    leaves = [e.leaf_hash for e in reader.entries(0, reader.size)]
    for i in range(0, reader.size, 7):
        assert reader.inclusion_proof(i, reader.size) == merkle.inclusion_proof(leaves, i, reader.size)
    assert reader.consistency_proof(reader.size // 3, reader.size) == merkle.consistency_proof(
        leaves, reader.size // 3, reader.size)


@pytest.mark.parametrize("total", [0, 2_000, 6_000, HASH_CACHE_BYTES])
def test_holdings_share_one_budget_among_the_own_log_and_the_mirrors(world: World, tmp_path: Path,
                                                                     total: int) -> None:
    with Holdings.open(tmp_path / "node", origin=MIRROR_NODE, signer=SoftwareSigner.generate(), create=True,
                       roots=RootsPolicy.any_self_signed(), hash_cache_bytes=total) as holdings:
        own = holdings.own
        assert own is not None and holdings.hash_cache_bytes == total
        for step in range(2):  # the mirror grows; the next share follows it
            world.log.append_many([world.attest(f"pkg-{step}-{i}") for i in range(60)])
            mirror = _mirror_of(world, holdings)
            holdings.share_hash_cache()
            logs = list(holdings.logs())
            budgets = [r.hash_cache_budget for r in logs]
            assert budgets == share_budget([r.size for r in logs], total)
            assert sum(budgets) <= total
            for reader in logs:
                _assert_proofs_right(reader)
                assert reader.hash_cache_bytes == cached_bytes(reader.size, floor_for(reader.size, reader.hash_cache_budget))
            assert sum(r.hash_cache_bytes for r in logs) <= total
            if total == 0:
                assert all(r.hash_cache_bytes == 0 for r in logs)
            if total == HASH_CACHE_BYTES:
                assert all(floor_for(r.size, r.hash_cache_budget) == 0 for r in logs)
        assert mirror.size == world.log.size


def test_a_reopened_node_shares_its_budget_among_the_logs_it_holds(world: World, tmp_path: Path) -> None:
    world.log.append_many([world.attest(f"pkg-{i}") for i in range(50)])
    path, key = tmp_path / "node", SoftwareSigner.generate()
    with Holdings.open(path, origin=MIRROR_NODE, signer=key, create=True, hash_cache_bytes=3_000) as holdings:
        _mirror_of(world, holdings)
    with Holdings.open(path, origin=MIRROR_NODE, signer=key, hash_cache_bytes=3_000) as holdings:
        logs = list(holdings.logs())
        assert [r.hash_cache_budget for r in logs] == share_budget([r.size for r in logs], 3_000)
        assert logs[1].hash_cache_budget > logs[0].hash_cache_budget  # the 50-entry mirror needs more
