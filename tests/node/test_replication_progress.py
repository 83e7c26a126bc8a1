"""Catch-up progress: entries, rate and ETA in the log (throttled), the peer status, the metrics."""

from __future__ import annotations

import logging

import pytest

from node._replication_progress import CatchUp, PeerStatus, duration
from node.metrics import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_rate_eta_and_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics, status = Clock(), Registry(), PeerStatus("beta.example/log", "http://127.0.0.1:9")
    with caplog.at_level(logging.DEBUG, logger="turtles.replication"):
        progress = CatchUp(status, start=1000, target=101_000, verified=7, metrics=metrics, clock=clock, every=5.0)
        clock.now += 2
        progress.update(11_000, 10_007)  # 10,000 in 2 s: not shown yet (throttled)
        assert status.mirror_tip == 11_000 and status.verified == 10_007
        assert status.rate == 5000.0 and status.eta_s == 18.0
        clock.now += 4
        progress.update(31_000, 30_007)  # 30,000 in 6 s: shown
        clock.now += 1
        progress.update(36_000, 35_007)  # within 5 s of the last line: not shown
        clock.now += 14
        progress.update(101_000, 100_007)  # caught up: the summary says it, not a progress line
        progress.done()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "mirroring beta.example/log: 1,000 of 101,000 entries held, 100,000 to fetch and verify",
        "mirroring beta.example/log: 31,000 of 101,000 entries (30.7%), 5,000 entries/s, ETA 14s",
        "mirrored beta.example/log: 100,000 entries verified and stored in 21s (4,762 entries/s); "
        "101,000 of 101,000 held",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert status.eta_s is None
    text = metrics.render()
    assert 'turtles_replication_tip_entries{origin="beta.example/log"} 101000' in text
    assert 'turtles_replication_verified_entries_total{origin="beta.example/log"} 100000' in text


def test_a_small_round_logs_quietly(caplog: pytest.LogCaptureFixture) -> None:
    clock, status = Clock(), PeerStatus("beta.example/log", "http://127.0.0.1:9")
    with caplog.at_level(logging.DEBUG, logger="turtles.replication"):
        progress = CatchUp(status, start=500, target=503, verified=0, metrics=Registry(), clock=clock)
        clock.now += 0.1
        progress.update(503, 3)
        progress.done()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]  # a small round is quiet
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="turtles.replication"):
        CatchUp(status, start=503, target=503, verified=3, metrics=Registry(), clock=clock).done()
    assert not caplog.records  # nothing to copy: nothing said


def test_duration() -> None:
    assert [duration(s) for s in (0, 42.4, 130, 3600 * 3 + 300, -5)] == ["0s", "42s", "2m10s", "3h05m", "0s"]
