"""A peer's replication status, and the progress of a catch-up in the node's log and metrics.

A round that copies entries makes one :class:`CatchUp`. After each applied page it updates
the peer's :class:`PeerStatus` (``mirror_tip``, ``verified``, ``rate``, ``eta_s``) and the gauges
``turtles_replication_tip_entries`` and ``turtles_replication_verified_entries_total``, and
at most every :data:`EVERY_S` seconds it logs a line such as::

    mirroring beta.example/log: 204,800 of 1,000,000 entries (20.5%), 6,120 entries/s, ETA 2m10s

A round with at least :data:`QUIET_BELOW` entries to copy says so when it starts; when a
round ends it says what it copied. Both are at INFO if the round is that large or took long
enough to show progress, at DEBUG otherwise, so a node following a busy peer does not log
every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger.witness import Evidence
from node.metrics import Registry

log = logging.getLogger("turtles.replication")

EVERY_S = 5.0
QUIET_BELOW = 10_000
TIP_GAUGE = "turtles_replication_tip_entries"
TIP_HELP = "Entries of a peer's log stored (verified) by its mirror"


@dataclass
class PeerStatus:
    """What the replicator knows of one peer (``state``: idle, ok, retrying, paused)."""

    origin: str
    url: str
    state: str = "idle"
    failures: int = 0
    rounds: int = 0
    last_error: str | None = None
    last_success: float | None = None
    peer_size: int = 0
    mirror_size: int = 0
    push_error: str | None = None
    evidence: Evidence | None = None
    mirror_tip: int = 0  # entries stored, ahead of mirror_size while a catch-up is under way
    verified: int = 0  # signature checks the mirror made in this process
    rate: float = 0.0  # entries/s of the current or last catch-up
    eta_s: float | None = None  # seconds left in the catch-up under way


def show_sizes(metrics: Registry, status: PeerStatus, *, size: int, tip: int) -> None:
    """After a round: the mirror's served size and stored tip in the status and the metrics."""
    status.mirror_size, status.mirror_tip = size, tip
    metrics.gauge("turtles_replication_lag_entries", "Entries a mirror is behind its peer",
                  ("origin",)).set(max(0, status.peer_size - size), origin=status.origin)
    metrics.gauge(TIP_GAUGE, TIP_HELP, ("origin",)).set(tip, origin=status.origin)


def duration(seconds: float) -> str:
    """``3h05m``, ``2m10s``, ``42s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class CatchUp:
    """One round's copy from ``start`` to ``target`` entries of ``origin``."""

    def __init__(
        self, status: PeerStatus, *, start: int, target: int, verified: int, metrics: Registry,
        clock: Callable[[], float] = time.monotonic, every: float | None = None,
    ) -> None:
        self.status = status
        self.origin = origin = status.origin
        status.mirror_tip, status.verified, status.rate, status.eta_s = start, verified, 0.0, None
        self.start = self.tip = start
        self.target = target
        self._verified0 = self._verified = verified
        self._clock = clock
        self._every = EVERY_S if every is None else every
        self._t0 = self._shown = clock()
        self._logged = False
        self._tip_gauge = metrics.gauge(TIP_GAUGE, TIP_HELP, ("origin",))
        self._verified_total = metrics.counter(
            "turtles_replication_verified_entries_total", "Entries of peers' logs whose signatures were verified",
            ("origin",),
        )
        self._tip_gauge.set(start, origin=origin)
        self._verified_total.inc(0, origin=origin)
        if start < target:
            self._logged = target - start >= QUIET_BELOW
            log.log(logging.INFO if self._logged else logging.DEBUG,
                    "mirroring %s: %s of %s entries held, %s to fetch and verify",
                    origin, f"{start:,}", f"{target:,}", f"{target - start:,}")

    @property
    def copied(self) -> int:
        """Entries stored in this round."""
        return self.tip - self.start

    @property
    def rate(self) -> float:
        """Entries per second in this round so far."""
        elapsed = self._clock() - self._t0
        return self.copied / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first page)."""
        rate = self.rate
        return (self.target - self.tip) / rate if rate > 0 else None

    def update(self, tip: int, verified: int) -> None:
        """A page was applied: ``tip`` entries stored, ``verified`` checks made by the mirror so far."""
        self.tip = tip
        self._tip_gauge.set(tip, origin=self.origin)
        self._verified_total.inc(verified - self._verified, origin=self.origin)
        self._verified = verified
        s = self.status
        s.mirror_tip, s.verified, s.rate, s.eta_s = tip, verified, self.rate, self.eta_s
        now = self._clock()
        if now - self._shown >= self._every and tip < self.target:
            self._shown, self._logged = now, True
            eta = self.eta_s
            log.info("mirroring %s: %s of %s entries (%.1f%%), %s entries/s, ETA %s", self.origin, f"{tip:,}",
                     f"{self.target:,}", 100.0 * tip / max(1, self.target), f"{self.rate:,.0f}",
                     duration(eta) if eta is not None else "?")

    def done(self) -> None:
        """The round ended (caught up, stopped or failed): say what it did."""
        self.status.eta_s = None
        if not self.copied:
            return
        level = logging.INFO if self._logged or self.copied >= QUIET_BELOW else logging.DEBUG
        verified = self._verified - self._verified0
        log.log(level, "mirrored %s: %s entries verified and stored in %s (%s entries/s); %s of %s held",
                self.origin, f"{verified:,}", duration(self._clock() - self._t0), f"{self.rate:,.0f}",
                f"{self.tip:,}", f"{self.target:,}")


__all__ = ["CatchUp", "PeerStatus", "duration", "show_sizes"]
