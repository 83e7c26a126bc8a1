"""Run a node: ``python -m node.server --config FILE [--ready-file FILE]``.

Start-up: load the config, build the app, open the store, bind (port 0: an ephemeral
port), then announce the bound URL on stdout and, if asked, in a ready file (JSON
``{"url", "pid", "origin", "vkey"}``, written atomically) so a parent process knows the
node is up.

Shutdown on SIGTERM or SIGINT is graceful: the listening socket closes, in-flight
requests get ``shutdown_timeout`` seconds to finish, then the sequencer commits every
queued submission (durably) and the store is closed. Nothing acknowledged is lost, and
nothing queued is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from ledger.errors import TurtlesError
from ledger.keys import ED25519_BACKEND
from node.app import CleanupCtx, create_app
from node.config import NodeConfig, load_config
from node.plugins import full_node
from node.state import RUNTIME

log = logging.getLogger("turtles.node")

SWITCH_INTERVAL_S = 0.005
"""How long a thread may hold the GIL while another waits for it (``sys.setswitchinterval``).

Measured with 50 clients POSTing single envelopes (``bench_http``): once a request makes
only two thread hops, shorter intervals (2, 1, 0.3 ms) gave 3-10% fewer records/s and
more CPU per request (forced switches), and 10-20 ms no more than 5 ms (CPython's default,
set here explicitly): the event loop gives the GIL up at every socket call anyway.
"""

GC_THRESHOLDS = (700, 100, 10)
"""The garbage collector's thresholds in a node process (``gc.set_threshold``).

A batched record keeps a dozen container objects alive for the life of its request
(envelope, prepared record, request, result, ...): young collections promote them, and
with CPython's default of a middle collection every 10 young ones, middle and full
collections walked them again. Measured by ``gc.callbacks`` and ``thread_time`` in the
node (``POST /v1/entries:batch``, 500 a request, 4 in flight, 40,000 records a run, two
runs each): middle and full collections 4.0-4.3 cpu us per batched record with the default,
0.7-1.1 with a middle collection every 100 young ones (young ones unchanged, 2.5-3.3), and
the full collections' pauses of 9-12 ms gone. The longest pause with 50 clients POSTing
single envelopes stayed the same: 1.6 against 1.7 ms for a middle collection.
"""


def server_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The TLS context for serving HTTPS, when ``[tls]`` has cert and key."""
    tls = config.tls
    if tls.cert is None or tls.key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as e:
        raise TurtlesError(f"cannot load TLS certificate {tls.cert} / key {tls.key}: {e}") from e
    return ctx


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Write ``info`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


async def serve(
    config: NodeConfig,
    *,
    stop: asyncio.Event,
    ready: Callable[[dict[str, Any]], None] | None = None,
    app: web.Application | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve ``config``'s node until ``stop`` is set, then shut down gracefully.

    Args:
        config: the node configuration.
        stop: set it to stop the node.
        ready: called once the node listens, with ``{"url", "pid", "origin", "vkey"}``.
        app: a prebuilt app (default: ``create_app(config)``).
        shutdown_timeout: seconds in-flight requests get to finish at shutdown.
    """
    app = app if app is not None else create_app(config)
    runner = web.AppRunner(app, handler_cancellation=False, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    try:
        context = server_ssl_context(config)
        site = web.TCPSite(runner, config.node.host, config.node.port, ssl_context=context)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        own = app[RUNTIME].own_log()
        info = {
            "url": f"{config.scheme}://{shown}:{port}",
            "public_url": config.node.public_url,
            "pid": os.getpid(),
            "origin": own.origin,
            "vkey": own.vkey,
        }
        if ready is not None:
            ready(info)
        await stop.wait()
        log.info("stopping: finishing in-flight requests and queued commits")
    finally:
        await runner.cleanup()


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run(
    config: NodeConfig, *, ready_file: Path | None = None,
    extra_cleanup_ctx: Sequence[CleanupCtx] = (), extra_routes: Sequence[web.RouteTableDef] = (),
    extra_openapi_paths: Mapping[str, Any] | None = None,
) -> None:
    """Run a node until SIGTERM/SIGINT; print the bound URL and write ``ready_file``.

    Process-wide tuning for a node process: the GIL switch interval
    (:data:`SWITCH_INTERVAL_S`), and once the node listens, what start-up made is moved
    out of the garbage collector's reach (``gc.freeze``): full collections then walk only
    what was made since, a few ms instead of ~25 ms of pause for every request in flight;
    and the collector's thresholds become :data:`GC_THRESHOLDS`.

    ``extra_*`` are passed to :func:`node.app.create_app` (the replication/witness hook).
    """
    stop = asyncio.Event()
    install_signal_handlers(stop)
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    def announce(info: dict[str, Any]) -> None:
        # Everything made at start-up (modules, the opened store, the trust state) lives as
        # long as the process: keep it out of the full collections, which otherwise walk it
        # every time and pause every request for that long.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        print(f"turtles node {info['origin']} listening on {info['url']}", flush=True)
        log.info("Ed25519 signatures verified by %s", ED25519_BACKEND)
        if ready_file is not None:
            write_ready_file(ready_file, info)

    app = create_app(
        config, extra_cleanup_ctx=extra_cleanup_ctx, extra_routes=extra_routes,
        extra_openapi_paths=extra_openapi_paths,
    )
    await serve(config, stop=stop, ready=announce, app=app)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m node.server --config FILE [--ready-file FILE]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m node.server", description="Run a turtles node.")
    parser.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    parser.add_argument("--ready-file", metavar="FILE", help="write {url, pid, origin, vkey} here once up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        asyncio.run(run(config, ready_file=Path(args.ready_file) if args.ready_file else None, **full_node()))
    except TurtlesError as e:
        hint = f" (hint: {e.hint})" if e.hint else ""
        print(f"turtles node: error: {e.message}{hint}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"turtles node: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["install_signal_handlers", "main", "run", "serve", "server_ssl_context", "write_ready_file"]

if __name__ == "__main__":
    sys.exit(main())
