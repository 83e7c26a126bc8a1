"""A bare aiohttp server (``GET /`` -> ``ok``): the raw limit of the HTTP benchmark.

``python -m bench._http_bare`` listens on 127.0.0.1 (an ephemeral port), prints the URL on
one line, and serves until killed.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    """The cheapest useful answer."""
    return web.Response(text="ok")


async def serve() -> None:
    """Listen and announce the URL; run until cancelled."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://127.0.0.1:{port}/", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
