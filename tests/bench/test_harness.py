"""The benchmark harness's ratios: to a limit's median, or pair by pair for a paired limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._harness import Context, ratio_at_least


def _ctx(tmp_path: Path) -> Context:
    ctx = Context(quick=True, workdir=tmp_path, group="t")
    ctx.record_raw("limit", [100.0, 200.0, 100.0], "ops/s")
    return ctx


def test_ratio_to_the_limits_median(tmp_path: Path) -> None:
    fig = _ctx(tmp_path).record("x", [70.0, 150.0, 80.0], "ops/s", limit="limit")
    assert fig.ratio == pytest.approx(80.0 / 100.0)
    assert "paired" not in fig.notes


def test_paired_ratio_is_the_median_of_each_repetitions_ratio(tmp_path: Path) -> None:
    # The second repetition ran while the machine was twice as fast, its limit too: pair by
    # pair the ratios are 0.70, 0.75, 0.80; median over median would read 0.80.
    fig = _ctx(tmp_path).record("x", [70.0, 150.0, 80.0], "ops/s", limit="limit", paired=True,
                                target=(">= 0.76", ratio_at_least(0.76)), notes="n")
    assert fig.ratio == pytest.approx(0.75)
    assert fig.ok is False
    assert fig.notes == "n; paired ratios 0.700, 0.750, 0.800; median over median 0.800"


def test_paired_needs_one_limit_per_repetition(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 repetitions but 3 paired limit values"):
        _ctx(tmp_path).record("x", [1.0, 2.0], "ops/s", limit="limit", paired=True)
