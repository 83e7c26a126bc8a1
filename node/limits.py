"""What one client may ask of a node: body size, request rate, submissions in flight.

Invariants (RELIABILITY P1, P6):
* A body over its cap is refused with :class:`~ledger.errors.TooLargeError` (413) from
  ``Content-Length`` before any byte is read, and a body without one is read in chunks
  and refused as soon as the cap is passed: memory per request is bounded by the cap.
* The rate limiter holds at most ``max_clients`` buckets (least recently used evicted),
  so a flood from many addresses cannot grow it without bound.
* :class:`InFlight` bounds the submissions that are being verified or wait for the
  sequencer; over the bound a submission is refused with
  :class:`~ledger.errors.OverloadedError` (503 + Retry-After) instead of queueing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from ledger.errors import OverloadedError, TooLargeError, TurtlesError

_CHUNK = 64 * 1024


class RateLimitedError(TurtlesError):
    """A client sent more requests than its rate allows (HTTP 429 with Retry-After)."""

    code = "rate_limited"
    http_status = 429


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens per second, at most ``burst`` banked."""

    def __init__(
        self, *, rate: float, burst: int, max_clients: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens of ``key``'s bucket.

        Returns:
            0 when the tokens were taken, else the seconds until they would be available
            (nothing is taken then).
        """
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait

    def check(self, key: str, cost: float = 1.0) -> None:
        """Like :meth:`take`, raising :class:`RateLimitedError` when over the rate."""
        wait = self.take(key, cost)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimitedError(
                f"too many requests from {key}: limit {self.rate:g}/s (burst {self.burst:g})",
                hint=f"retry after {retry} s", retry_after=retry,
            )


class InFlight:
    """Counts submissions admitted and not yet answered; refuses beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def admit(self, n: int = 1) -> Admission:
        """Hold ``n`` slots for the duration of a ``with`` block.

        Raises (on entering the block):
            OverloadedError: fewer than ``n`` slots are free.
        """
        return Admission(self, n)

    def _take(self, n: int) -> None:
        if self.count + n > self.limit:
            raise OverloadedError(
                f"{self.count} submissions in flight, limit {self.limit}",
                hint="retry after a second; batch submissions with POST /v1/entries:batch",
                retry_after=1,
            )
        self.count += n

    def free(self) -> int:
        """Slots free now."""
        return max(0, self.limit - self.count)


class Admission:
    """``n`` slots of an :class:`InFlight`, held inside a ``with`` block (a plain class:
    this is on every submission's path, and a generator context manager costs more)."""

    __slots__ = ("_inflight", "_n")

    def __init__(self, inflight: InFlight, n: int) -> None:
        self._inflight = inflight
        self._n = n

    def __enter__(self) -> None:
        self._inflight._take(self._n)

    def __exit__(self, *exc: object) -> None:
        self._inflight.count -= self._n


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with TooLargeError (413) once it passes ``limit`` bytes.

    ``Content-Length`` is checked first, so an honest oversized upload is refused before
    anything is read; a chunked or lying body is cut off at ``limit + 1`` bytes.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise TooLargeError(f"request body has {declared} bytes, limit {limit}", limit=limit)
    buf = bytearray()
    while True:
        chunk = await request.content.read(min(_CHUNK, limit + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise TooLargeError(f"request body is over the limit of {limit} bytes", limit=limit)
    return bytes(buf)


__all__ = ["Admission", "InFlight", "RateLimitedError", "TokenBucket", "read_body"]
