"""A tiny Prometheus metrics registry (text exposition format 0.0.4), no dependency.

Counters, gauges and histograms with labels; gauges may instead be read at scrape time
from a callback (sizes, queue depth). Metrics are registered by name once; asking again
for the same name returns the same metric, so another module (replication, witness) can
fetch and update a metric the app registered, without importing the module that did.

Invariant: every update is O(1) under one lock; rendering never calls back into request
handling, so a scrape cannot block a submission.
"""

from __future__ import annotations

import math
import re
import threading
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if value != int(value) else str(int(value))


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        if not _NAME.fullmatch(name) or not all(_NAME.fullmatch(n) for n in labels):
            raise ValueError(f"bad metric or label name in {name}{list(labels)}")
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = lock

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    @abstractmethod
    def samples(self) -> list[str]:
        """The metric's sample lines in the Prometheus text format."""


class Counter(_Metric):
    """A monotonically increasing count."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        super().__init__(name, help_text, labels, lock)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series named by ``labels``."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self._add(self._key(labels), amount)

    def _add(self, key: LabelValues, amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def labels(self, **labels: str) -> CounterSeries:
        """One series, its labels checked once: for hot paths that update it often."""
        return CounterSeries(self, self._key(labels))

    def value(self, **labels: str) -> float:
        """Current value of one series (0 if never incremented)."""
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down; optionally read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock) -> None:
        super().__init__(name, help_text, labels, lock)
        self._values: dict[LabelValues, float] = {}
        self._callback: Callable[[], Iterable[tuple[dict[str, str], float]]] | None = None

    def set(self, value: float, **labels: str) -> None:
        """Set one series."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (may be negative) to one series."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """Current value of one series (0 if never set)."""
        return self._values.get(self._key(labels), 0.0)

    def set_callback(self, fn: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:
        """Read the series from ``fn`` at every scrape: it yields ``(labels, value)`` pairs."""
        self._callback = fn

    def samples(self) -> list[str]:
        if self._callback is not None:
            try:
                items = sorted((self._key(lb), float(v)) for lb, v in self._callback())
            except Exception:  # a failing source must not break the scrape of the others
                items = []
        else:
            with self._lock:
                items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]


class Histogram(_Metric):
    """Observations counted into cumulative buckets (``_bucket``, ``_sum``, ``_count``)."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels, lock)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        self._observe(self._key(labels), value)

    def _observe(self, key: LabelValues, value: float) -> None:
        i = bisect_left(self.buckets, value)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[i] += 1
            total[0] += value

    def labels(self, **labels: str) -> HistogramSeries:
        """One series, its labels checked once: for hot paths that update it often."""
        return HistogramSeries(self, self._key(labels))

    def count(self, **labels: str) -> int:
        """Number of observations in one series."""
        series = self._series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        out = []
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._series.items())
        for key, (counts, total) in items:
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = f'le="{_fmt(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_fmt(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return out


class CounterSeries:
    """One series of a :class:`Counter` (from :meth:`Counter.labels`)."""

    __slots__ = ("_counter", "_key")

    def __init__(self, counter: Counter, key: LabelValues) -> None:
        self._counter = counter
        self._key = key

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self._counter._add(self._key, amount)


class HistogramSeries:
    """One series of a :class:`Histogram` (from :meth:`Histogram.labels`)."""

    __slots__ = ("_histogram", "_key")

    def __init__(self, histogram: Histogram, key: LabelValues) -> None:
        self._histogram = histogram
        self._key = key

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._histogram._observe(self._key, value)


class Registry:
    """Metrics by name. ``counter``/``gauge``/``histogram`` register or return the existing one."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _get(self, name: str, labels: Sequence[str], make: Callable[[], _Metric]) -> _Metric:
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                existing = self._metrics[name] = make()
            elif existing.label_names != tuple(labels):
                raise ValueError(f"metric {name} is already registered with labels {existing.label_names}")
            return existing

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """The counter ``name`` (registered on first use)."""
        m = self._get(name, labels, lambda: Counter(name, help_text, labels, threading.Lock()))
        if not isinstance(m, Counter):
            raise ValueError(f"metric {name} is registered as a {m.kind}")
        return m

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        """The gauge ``name`` (registered on first use)."""
        m = self._get(name, labels, lambda: Gauge(name, help_text, labels, threading.Lock()))
        if not isinstance(m, Gauge):
            raise ValueError(f"metric {name} is registered as a {m.kind}")
        return m

    def histogram(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        """The histogram ``name`` (registered on first use)."""
        m = self._get(name, labels, lambda: Histogram(name, help_text, labels, threading.Lock(), buckets))
        if not isinstance(m, Histogram):
            raise ValueError(f"metric {name} is registered as a {m.kind}")
        return m

    def names(self) -> list[str]:
        """Registered metric names."""
        with self._lock:
            return sorted(self._metrics)

    def render(self) -> str:
        """Every metric in the Prometheus text format."""
        with self._lock:
            metrics = [self._metrics[n] for n in sorted(self._metrics)]
        lines: list[str] = []
        for m in metrics:
            lines += m.header()
            lines += m.samples()
        return "\n".join(lines) + "\n"


class RequestMetrics:
    """The request counter and latency histogram, their series looked up once per label set."""

    MAX_SERIES = 4096  # beyond this (odd methods from clients), series are looked up each time

    def __init__(self, registry: Registry) -> None:
        self._requests = registry.counter(
            "turtles_http_requests_total", "HTTP requests answered", ("route", "method", "status")
        )
        self._latency = registry.histogram("turtles_http_request_seconds", "HTTP request latency", ("route", "method"))
        self._counted: dict[tuple[str, str, int], CounterSeries] = {}
        self._timed: dict[tuple[str, str], HistogramSeries] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its latency."""
        counted = self._counted.get((route, method, status))
        if counted is None:
            counted = self._requests.labels(route=route, method=method, status=str(status))
            if len(self._counted) < self.MAX_SERIES:
                self._counted[(route, method, status)] = counted
        counted.inc()
        timed = self._timed.get((route, method))
        if timed is None:
            timed = self._latency.labels(route=route, method=method)
            if len(self._timed) < self.MAX_SERIES:
                self._timed[(route, method)] = timed
        timed.observe(seconds)


__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "CounterSeries",
    "Gauge",
    "Histogram",
    "HistogramSeries",
    "Registry",
    "RequestMetrics",
]
