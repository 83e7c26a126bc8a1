"""The node's aiohttp application factory.

:func:`create_app` builds the app from a :class:`~node.config.NodeConfig`: typed state
(:mod:`node.state`), middlewares (:mod:`node.middleware`), route tables
(:mod:`node.routes`), and a ``cleanup_ctx`` that opens the LevelDB holdings and the
verification pool at start-up and, at shutdown, lets the sequencer finish every queued
durable commit before the store is closed.

Plug-in hook (replication, witnessing): the node start code passes ``extra_cleanup_ctx``
(run after the holdings are open, stopped before they close), ``extra_routes`` and
``extra_openapi_paths``; this module never imports those plug-ins.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from aiohttp import web

from ledger.holdings import Holdings
from ledger.keyref import load_signer
from ledger.keys import Signer
from ledger.log import Log
from ledger.trust import RootsPolicy
from node.config import AdmissionSection, NodeConfig
from node.limits import InFlight, TokenBucket
from node.metrics import Registry, RequestMetrics
from node.middleware import MIDDLEWARES
from node.routes import log as log_routes
from node.routes import ops as ops_routes
from node.routes import query as query_routes
from node.routes import submit as submit_routes
from node.routes import tiles as tile_routes
from node.state import (
    CHECKPOINTS,
    CONFIG,
    EQUIVOCATIONS,
    INFLIGHT,
    LIMITER,
    METRICS,
    OPENAPI_PATHS,
    REQUEST_METRICS,
    RUNTIME,
    EvidenceLog,
    Runtime,
    ServedCheckpoint,
)
from node.submission import Submitter

_LOG = logging.getLogger(__name__)

SHARE_HASH_CACHE_S = 60.0
"""How often a node shares its stored-hash cache budget out again among its logs as they grow
(:meth:`ledger.holdings.Holdings.share_hash_cache`)."""
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]
ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    log_routes.routes,
    submit_routes.routes,
    tile_routes.routes,
    query_routes.routes,
    ops_routes.routes,
)


def roots_policy(admission: AdmissionSection) -> RootsPolicy:
    """The own log's admission policy from ``[admission]``.

    ``roots = "any"`` with no ``orgs`` admits any self-signed root; otherwise a root is
    admitted if its key id is listed in ``roots`` or its org in ``orgs``.
    """
    if admission.roots == "any" and not admission.orgs:
        return RootsPolicy.any_self_signed()
    key_ids = () if admission.roots == "any" else admission.roots
    return RootsPolicy(key_ids=frozenset(key_ids), orgs=frozenset(admission.orgs))


def load_log_signer(config: NodeConfig) -> Signer:
    """The log key a config names (PEM file or PKCS#11 URI)."""
    keys = config.keys
    return load_signer(
        keys.log_key, pkcs11_module=keys.pkcs11_module,
        pin_file=str(keys.pin_file) if keys.pin_file else None,
    )


def create_app(
    config: NodeConfig,
    *,
    signer: Signer | None = None,
    clock: Callable[[], int] | None = None,
    extra_cleanup_ctx: Sequence[CleanupCtx] = (),
    extra_routes: Iterable[web.RouteTableDef] = (),
    extra_openapi_paths: Mapping[str, Any] | None = None,
) -> web.Application:
    """Build a node application.

    Args:
        config: the node configuration.
        signer: the log key; loaded from ``config.keys.log_key`` at start-up when None.
        clock: time source for entry timestamps, Unix ms (tests).
        extra_cleanup_ctx: HOOK for replication/witnessing: async generators run after the
            store is open (``app[RUNTIME].holdings``) and stopped before it closes.
        extra_routes: HOOK: more route tables (e.g. the witness endpoints).
        extra_openapi_paths: HOOK: OpenAPI path items documenting ``extra_routes``.
    """
    limits = config.limits
    app = web.Application(
        middlewares=MIDDLEWARES,
        client_max_size=max(limits.max_body_bytes, limits.max_batch_body_bytes),
    )
    app[CONFIG] = config
    app[METRICS] = Registry()
    app[REQUEST_METRICS] = RequestMetrics(app[METRICS])
    app[LIMITER] = TokenBucket(rate=limits.rate_per_second, burst=limits.rate_burst)
    app[INFLIGHT] = InFlight(limits.max_queue)
    app[RUNTIME] = Runtime(signer=signer)
    app[CHECKPOINTS] = ServedCheckpoint()
    app[EQUIVOCATIONS] = EvidenceLog()
    app[OPENAPI_PATHS] = dict(extra_openapi_paths or {})
    app.cleanup_ctx.append(partial(_holdings_ctx, clock=clock))
    # --- HOOK: replication / witness plug-ins (wired by the node start code) ---
    app.cleanup_ctx.extend(extra_cleanup_ctx)
    for table in (*ROUTE_TABLES, *extra_routes):
        app.add_routes(table)
    _register_metrics(app)
    return app


async def _holdings_ctx(app: web.Application, *, clock: Callable[[], int] | None) -> AsyncIterator[None]:
    """Open signer, holdings and verify pool; at shutdown drain the sequencer, then close."""
    config, runtime = app[CONFIG], app[RUNTIME]
    loop = asyncio.get_running_loop()
    if runtime.signer is None:
        runtime.signer = await loop.run_in_executor(None, load_log_signer, config)
    opener = partial(
        Holdings.open, config.node.data_dir, origin=config.node.origin, signer=runtime.signer,
        roots=roots_policy(config.admission), create=True, clock=clock,
        verify_processes=_verify_processes(config.node.verify_processes),
        hash_cache_bytes=config.node.hash_cache_mib << 20,
    )
    holdings = await loop.run_in_executor(None, opener)
    workers = max(2, os.cpu_count() or 2)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
    assert holdings.own is not None  # opened with an origin
    runtime.holdings = holdings
    runtime.executor = executor
    runtime.submitter = Submitter(
        holdings.own, executor=executor, inflight=app[INFLIGHT], metrics=app[METRICS], verifiers=2 * workers
    )
    # The own log's stored-hash cache is filled in the background, not by the first proof.
    warming = loop.run_in_executor(executor, _warm_hash_cache, holdings.own)
    sharing = asyncio.create_task(_share_hash_cache(holdings, executor))
    try:
        yield
    finally:
        sharing.cancel()
        submitter, runtime.submitter = runtime.submitter, None
        # The verify threads hand what they hold to the sequencer before the log closes.
        if submitter is not None:
            submitter.stop()
            await loop.run_in_executor(None, submitter.join)
        # They read the store: done before it closes.
        await asyncio.gather(warming, sharing, return_exceptions=True)
        # Log.close lets the sequencer commit everything already queued (durable), then stops.
        await loop.run_in_executor(None, holdings.close)
        runtime.holdings = None
        executor.shutdown(wait=True)


def _warm_hash_cache(log: Log) -> None:
    try:
        held = log.warm_hash_cache()
    except Exception as e:  # never fatal: a proof that needs the hashes reports the error to its caller
        _LOG.warning("log %s: the stored-hash cache was not filled at start: %s", log.origin, e)
        return
    _LOG.info("log %s: stored-hash cache filled (%d bytes)", log.origin, held)


async def _share_hash_cache(holdings: Holdings, executor: ThreadPoolExecutor) -> None:
    """Share the stored-hash cache budget out again every :data:`SHARE_HASH_CACHE_S` (until
    cancelled at shutdown): mirrors and the own log grow at different rates."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SHARE_HASH_CACHE_S)
        try:
            await loop.run_in_executor(executor, holdings.share_hash_cache)
        except Exception as e:  # never fatal: each log keeps the share it had
            _LOG.warning("the stored-hash cache budget was not shared out again: %s", e)


def _verify_processes(configured: int | None) -> int:
    """Worker processes for large batches: as configured, else one per CPU."""
    return configured if configured is not None else os.cpu_count() or 2


def _register_metrics(app: web.Application) -> None:
    registry, runtime = app[METRICS], app[RUNTIME]

    def sizes() -> list[tuple[dict[str, str], float]]:
        holdings = runtime.holdings
        if holdings is None:
            return []
        own = holdings.own.origin if holdings.own else None
        return [
            ({"origin": r.origin, "kind": "own" if r.origin == own else "mirror"}, float(r.size))
            for r in holdings.logs()
        ]

    registry.gauge("turtles_log_size", "Entries in each log held", ("origin", "kind")).set_callback(sizes)
    registry.gauge(
        "turtles_leveldb_memory_bytes", "Memory LevelDB holds itself (memtables, block cache; bounded)"
    ).set_callback(lambda: [({}, float(runtime.holdings.db.memory_bytes()))] if runtime.holdings else [])
    registry.gauge(
        "turtles_hash_cache_bytes", "Stored Merkle hashes each log holds in memory ([node] hash_cache_mib)", ("origin",)
    ).set_callback(lambda: [({"origin": r.origin}, float(r.hash_cache_bytes))
                            for r in runtime.holdings.logs()] if runtime.holdings else [])
    registry.gauge("turtles_submissions_in_flight", "Submissions being verified or sequenced").set_callback(
        lambda: [({}, float(app[INFLIGHT].count))]
    )
    registry.gauge("turtles_submissions_limit", "Most submissions in flight (limits.max_queue)").set(
        float(app[INFLIGHT].limit)
    )
    registry.gauge("turtles_equivocations", "Pieces of equivocation evidence held").set_callback(
        lambda: [({}, float(len(app[EQUIVOCATIONS])))]
    )
    registry.counter("turtles_appends_total", "Submissions answered, by outcome", ("outcome",))
    # Placeholders the replication and witness code update by name.
    registry.gauge("turtles_replication_lag_entries", "Entries a mirror is behind its peer", ("origin",))
    registry.gauge(
        "turtles_replication_last_success_timestamp_seconds", "Last successful pull from a peer", ("origin",)
    )
    registry.counter("turtles_replication_errors_total", "Failed pulls from peers", ("origin", "error"))
    registry.counter("turtles_cosignatures_total", "Cosignatures made or collected", ("origin", "role"))


__all__ = ["ROUTE_TABLES", "CleanupCtx", "create_app", "load_log_signer", "roots_policy"]
