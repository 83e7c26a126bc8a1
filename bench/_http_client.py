"""The load generator of the HTTP benchmark: a separate process driving one URL.

``python -m bench._http_client --url URL --mode MODE --concurrency C --count N [--start I]``
prints one JSON object: ``{"count", "ok", "errors", "elapsed_s", "cpu_s", "latencies_ms",
"statuses"}`` (``cpu_s``: this process's CPU time while driving).

Modes: ``get`` (GET the URL), ``single`` (POST /v1/entries, one DSSE JSON envelope each,
attestations ``start..start+count``), ``batch`` (POST /v1/entries:batch, ``--batch``
envelopes per request). Bodies are built before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence

import aiohttp

from bench._world import attestations


async def drive(url: str, method: str, bodies: Sequence[bytes | None], concurrency: int,
                content_type: str = "application/json") -> dict[str, object]:
    """Send every body with ``concurrency`` workers; per-request latencies and statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_i = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_i
            while next_i < len(bodies):
                body = bodies[next_i]
                next_i += 1
                t0 = time.perf_counter()
                try:
                    async with session.request(method, url, data=body,
                                               headers={"Content-Type": content_type} if body else None) as r:
                        await r.read()
                        statuses[r.status] += 1
                except aiohttp.ClientError:
                    statuses[0] += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {"count": len(bodies), "ok": ok, "errors": len(bodies) - ok, "elapsed_s": elapsed, "cpu_s": cpu,
            "latencies_ms": latencies, "statuses": {str(k): v for k, v in statuses.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the bodies, drive, print the result."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("get", "single", "batch"), required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--count", type=int, required=True, help="requests (get) or envelopes (single, batch)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)
    bodies: list[bytes | None]
    if args.mode == "get":
        bodies = [None] * args.count
        method, url = "GET", args.url
    else:
        envs = [e.to_dict() for e in attestations(args.start, args.start + args.count)]
        method = "POST"
        if args.mode == "single":
            bodies = [json.dumps(e).encode() for e in envs]
            url = args.url.rstrip("/") + "/v1/entries"
        else:
            bodies = [json.dumps({"envelopes": envs[i : i + args.batch]}).encode()
                      for i in range(0, len(envs), args.batch)]
            url = args.url.rstrip("/") + "/v1/entries:batch"
    result = asyncio.run(drive(url, method, bodies, args.concurrency))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
