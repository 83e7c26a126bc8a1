"""The load generator of the HTTP benchmark: a separate process driving one URL.

``python -m bench._http_client --url URL --mode MODE --concurrency C --count N [--start I]``
prints one JSON object: ``{"count", "ok", "errors", "elapsed_s", "cpu_s", "latencies_ms",
"statuses"}`` (``cpu_s``: this process's CPU time while driving).

Modes: ``get`` (GET the URL), ``single`` (POST /v1/entries, one DSSE JSON envelope each,
attestations ``start..start+count``), ``batch`` (POST /v1/entries:batch, ``--batch``
envelopes per request, as the canonical msgpack array of their binary forms -- the node's
bulk body, as ``NodeClient.submit_batch`` sends it -- or, with ``--body json``, as JSON
``{"envelopes": [...]}``).

The client shares the machine's cores with the node, so it is made as cheap as it can be:
every request is serialised to its final bytes before the clock starts, and each of the
``C`` keep-alive connections is a bare asyncio protocol that writes those bytes and reads
one HTTP/1.1 response (status line, ``Content-Length`` or chunked body). No HTTP library
runs per request; the server sees ordinary HTTP/1.1 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

from bench._world import attestations
from ledger.encoding import encode

_HEAD_END = b"\r\n\r\n"
TIMEOUT_S = 120.0


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request outstanding."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._status = 0
        self._need = -1  # body bytes still to come; -1: headers not read yet; -2: chunked
        self.closed = False
        self.keep_alive = True
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def request(self, data: bytes, now: float) -> asyncio.Future[int]:
        """Send one serialised request; the future resolves to the response status."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._need = -1
        self.sent_at = now
        self.transport.write(data)
        return self._waiter

    def expire(self, before: float) -> None:
        """Fail the outstanding request if it was sent before ``before``."""
        if self._waiter is not None and not self._waiter.done() and self.sent_at < before:
            self._waiter.set_exception(TimeoutError("no response"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._need == -1:
            end = self._buf.find(_HEAD_END)
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
            del self._buf[: end + 4]
            self._status = int(head[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            self.keep_alive = headers.get("connection", "").lower() != "close"
            if headers.get("transfer-encoding", "").lower() == "chunked":
                self._need = -2
            else:
                self._need = int(headers.get("content-length", "0"))
        if self._need == -2:
            if not self._chunked_done():
                return
        elif len(self._buf) < self._need:
            return
        else:
            del self._buf[: self._need]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._status)

    def _chunked_done(self) -> bool:
        """Consume complete chunks; True once the last (empty) chunk and trailer are in."""
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self._buf[:line_end]).split(b";")[0], 16)
            if size == 0:
                end = self._buf.find(_HEAD_END, line_end - 2 if line_end >= 2 else 0)
                if end < 0:
                    return False
                del self._buf[: end + 4]
                return True
            if len(self._buf) < line_end + 2 + size + 2:
                return False
            del self._buf[: line_end + 2 + size + 2]


async def drive(url: str, method: str, bodies: Sequence[bytes | None], concurrency: int,
                content_type: str = "application/json") -> dict[str, object]:
    """Send every body with ``concurrency`` connections; per-request latencies and statuses."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    requests = [
        (head + "\r\n").encode() if body is None else
        (head + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for body in bodies
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_i = 0
    loop = asyncio.get_running_loop()

    conns: set[_Connection] = set()

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, host, port)
        conns.add(conn)
        return conn

    async def watchdog() -> None:  # one timer for every request instead of one per request
        while True:
            await asyncio.sleep(1)
            for c in list(conns):
                c.expire(time.perf_counter() - TIMEOUT_S)

    async def worker() -> None:
        nonlocal next_i
        conn = await connect()
        clock = time.perf_counter
        while next_i < len(requests):
            data = requests[next_i]
            next_i += 1
            if conn.closed or not conn.keep_alive:
                conn = await reconnect(conn)
            t0 = clock()
            try:
                statuses[await conn.request(data, t0)] += 1
            except (OSError, TimeoutError, ValueError):
                statuses[0] += 1
                conn = await reconnect(conn)
            latencies.append((clock() - t0) * 1000)
        conns.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    async def reconnect(conn: _Connection) -> _Connection:
        conns.discard(conn)
        if conn.transport is not None:
            conn.transport.close()
        return await connect()

    dog = asyncio.ensure_future(watchdog())
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    dog.cancel()
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
    p.add_argument("--body", choices=("msgpack", "json"), default="msgpack", help="batch body format")
    args = p.parse_args(argv)
    bodies: list[bytes | None]
    ctype = "application/json"
    if args.mode == "get":
        bodies = [None] * args.count
        method, url = "GET", args.url
    else:
        envs = list(attestations(args.start, args.start + args.count))
        method = "POST"
        if args.mode == "single":
            bodies = [json.dumps(e.to_dict()).encode() for e in envs]
            url = args.url.rstrip("/") + "/v1/entries"
        else:
            groups = [envs[i : i + args.batch] for i in range(0, len(envs), args.batch)]
            if args.body == "msgpack":
                bodies = [encode([e.to_value() for e in group]) for group in groups]
                ctype = "application/msgpack"
            else:
                bodies = [json.dumps({"envelopes": [e.to_dict() for e in group]}).encode() for group in groups]
            url = args.url.rstrip("/") + "/v1/entries:batch"
    result = asyncio.run(drive(url, method, bodies, args.concurrency, ctype))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
