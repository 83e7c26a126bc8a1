"""The record-id filter (ledger._recordids): never a false negative, through every doubling."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger._recordids import RecordIdFilter


def _rid(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.binary(min_size=32, max_size=32), max_size=300), hint=st.integers(0, 50))
def test_every_id_added_is_found(ids: list[bytes], hint: int) -> None:
    f = RecordIdFilter.of([], hint)
    for i, rid in enumerate(ids):
        f.add(rid)
        assert all(seen in f for seen in ids[: i + 1])


def test_found_after_doublings_and_few_false_positives() -> None:
    f = RecordIdFilter.of([], 1)
    start = f._log2
    added = [_rid(n) for n in range(40_000)]
    for rid in added:
        f.add(rid)
    assert f._log2 > start, "the filter never doubled"
    assert all(rid in f for rid in added)
    others = [_rid(n) for n in range(1_000_000, 1_020_000)]
    false = sum(rid in f for rid in others)
    assert false < len(others) * 0.02, f"{false} false positives in {len(others)}"


def test_an_id_never_added_is_mostly_absent_and_non_bytes_never_present() -> None:
    f = RecordIdFilter.of([_rid(1)], 10)
    assert _rid(1) in f
    assert _rid(2) not in f
    assert "not bytes" not in f
