"""Typed application state of a node, shared by the app factory, routes and plug-ins.

Everything a handler needs hangs off one of the :class:`aiohttp.web.AppKey` below. Objects
that exist from :func:`node.app.create_app` on are stored directly; resources opened at
start-up (the LevelDB holdings, the signer, thread pools) live in :class:`Runtime`, a
holder created with the app and filled by its ``cleanup_ctx``, so nothing mutates the
frozen application.

Plug-in points for replication and witnessing (they never import the routes):

* :func:`set_served_checkpoint` -- the note ``GET /checkpoint`` serves, with the
  cosignature lines the witness code collected.
* ``app[EQUIVOCATIONS].add(evidence)`` -- evidence of a log's equivocation, served by
  ``GET /v1/equivocations`` and counted in ``/metrics``.
* ``app[METRICS]`` -- the registry; e.g. ``registry.gauge("turtles_replication_lag_entries", ...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ledger.errors import UnavailableError
from ledger.holdings import Holdings
from ledger.keys import Signer
from ledger.log import Log
from node.config import NodeConfig
from node.limits import InFlight, TokenBucket
from node.metrics import Registry, RequestMetrics
from node.submission import Submitter


def note_size(note: str) -> int:
    """Tree size a checkpoint note states (its second line); -1 if it has none."""
    lines = note.split("\n", 2)
    if len(lines) < 2 or not lines[1].isdigit():
        return -1
    return int(lines[1])


class ServedCheckpoint:
    """Which signed note ``GET /checkpoint`` serves: the newest one known.

    The witness code calls :meth:`set` with the own log's checkpoint plus the cosignature
    lines it collected; until the log grows past that size, that note is served. Once the
    log signs a larger checkpoint, the larger one is served (without cosignatures until
    the witness code sets them): peers pull ``/checkpoint`` to replicate and cosign, so
    holding a new head back until it is cosigned would stop the cosigning itself.
    """

    def __init__(self) -> None:
        self._note: str | None = None
        self._lock = threading.Lock()

    def set(self, note: str) -> None:
        """Serve ``note`` (a signed checkpoint, possibly with cosignatures) from now on.

        A note for a smaller tree than the one already set is ignored: the served head
        never goes backwards.
        """
        with self._lock:
            if self._note is None or note_size(note) >= note_size(self._note):
                self._note = note

    def current(self, latest: str) -> str:
        """The note to serve, given the own log's latest signed checkpoint ``latest``."""
        with self._lock:
            note = self._note
        if note is not None and note_size(note) >= note_size(latest):
            return note
        return latest


class EvidenceLog:
    """Equivocation evidence the node holds (filled by the witness/replication code)."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, evidence: Mapping[str, Any]) -> None:
        """Keep one piece of evidence: JSON-ready, e.g. ``{"origin", "notes": [a, b], ...}``."""
        with self._lock:
            self._items.append(dict(evidence))

    def items(self) -> list[dict[str, Any]]:
        """Every piece of evidence, oldest first."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Runtime:
    """Resources opened at start-up; ``None`` before start and after shutdown."""

    holdings: Holdings | None = None
    signer: Signer | None = None
    executor: ThreadPoolExecutor | None = None
    submitter: Submitter | None = None

    def open_holdings(self) -> Holdings:
        """The holdings, or UnavailableError (503) while the node starts or stops."""
        if self.holdings is None:
            raise UnavailableError("the node's store is not open (starting or stopping)", retry_after=1)
        return self.holdings

    def own_log(self) -> Log:
        """The node's own log, or UnavailableError."""
        own = self.open_holdings().own
        if own is None:
            raise UnavailableError("this node has no own log open")
        return own

    def open_submitter(self) -> Submitter:
        """The submission pipeline, or UnavailableError."""
        if self.submitter is None:
            raise UnavailableError("the node is not accepting submissions (starting or stopping)", retry_after=1)
        return self.submitter


CONFIG = web.AppKey("turtles.config", NodeConfig)
METRICS = web.AppKey("turtles.metrics", Registry)
REQUEST_METRICS = web.AppKey("turtles.request_metrics", RequestMetrics)
LIMITER = web.AppKey("turtles.limiter", TokenBucket)
INFLIGHT = web.AppKey("turtles.inflight", InFlight)
RUNTIME = web.AppKey("turtles.runtime", Runtime)
CHECKPOINTS = web.AppKey("turtles.checkpoints", ServedCheckpoint)
EQUIVOCATIONS = web.AppKey("turtles.equivocations", EvidenceLog)
OPENAPI_PATHS: web.AppKey[dict[str, Any]] = web.AppKey("turtles.openapi_paths")


def set_served_checkpoint(app: web.Application, note: str) -> None:
    """Serve ``note`` (the own log's checkpoint with cosignature lines) on ``GET /checkpoint``."""
    app[CHECKPOINTS].set(note)


def served_checkpoint(app: web.Application) -> str:
    """The note ``GET /checkpoint`` serves now."""
    return app[CHECKPOINTS].current(app[RUNTIME].own_log().checkpoint())


__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "EQUIVOCATIONS",
    "INFLIGHT",
    "LIMITER",
    "METRICS",
    "OPENAPI_PATHS",
    "REQUEST_METRICS",
    "RUNTIME",
    "EvidenceLog",
    "Runtime",
    "ServedCheckpoint",
    "note_size",
    "served_checkpoint",
    "set_served_checkpoint",
]
