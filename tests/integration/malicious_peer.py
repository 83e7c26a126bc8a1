"""A log that signs whatever it is told to, and a misbehaving peer serving it over HTTP.

:class:`ForgedLog` is an in-memory log with a real Ed25519 log key and real RFC 9162
hashing but no rules: it appends any bytes, can be copied to fork it, and signs any
checkpoint. Tests use it as an honest source (fed honest records) and to make every kind
of bad input a mirror or witness must refuse.

Run as a process (``python -m tests.integration.malicious_peer --dir D --port 0
--mode MODE``) it serves the node read API a replicator uses, misbehaving as ``MODE``
says, and writes ``D/peer.json`` (url, origin, vkey) once it listens:

* ``honest`` -- serves its log as a node would.
* ``fork`` -- after a client (by ``User-Agent``) fetched ``--switch-after`` checkpoints,
  serves it a fork of the log (same key, other entries from ``--fork-at``).
* ``rewrite`` -- serves one entry rewritten (other bytes, the signed root unchanged).
* ``wrong-key`` -- signs its checkpoints with a key nobody configured.
* ``split`` -- shows checkpoint A to clients whose ``User-Agent`` names ``--victim``,
  and B (same size, another root) to everyone else.
* ``garbage`` -- answers every request with random bytes.
* ``endless`` -- streams an endless ``/checkpoint`` and trickles ``/v1/entries``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ledger import merkle
from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.checkpoint import Checkpoint, note_signer, sign_note, verifier_key
from ledger.entry import Entry, sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.keys import SoftwareSigner
from ledger.records import Delegation, RootRecord


@dataclass
class ForgedLog:
    """An in-memory log: ``raws[i]`` is leaf ``i``; checkpoints signed by ``key``."""

    origin: str
    key: SoftwareSigner
    raws: list[bytes] = field(default_factory=list)
    ts: int = 1_700_000_000_000

    @property
    def vkey(self) -> str:
        """The C2SP verifier key of the log key."""
        return verifier_key(self.origin, self.key.public_key.raw)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.raws)

    @property
    def leaves(self) -> list[bytes]:
        """Leaf hashes."""
        return [merkle.leaf_hash(r) for r in self.raws]

    def append(self, envelope: Envelope, *, ts: int | None = None) -> Entry:
        """Append an envelope as a well-formed, chained entry (no verification)."""
        prev = Entry.from_bytes(self.raws[-1]).leaf_hash if self.raws else bytes(32)
        self.ts = self.ts + 1 if ts is None else ts
        entry = Entry.build(seq=self.size, prev=prev, ts=self.ts, envelope=envelope)
        self.raws.append(entry.raw)
        return entry

    def fork(self, at: int) -> ForgedLog:
        """A copy holding only the first ``at`` leaves (same key and origin)."""
        return ForgedLog(self.origin, self.key, list(self.raws[:at]), self.ts + 1000)

    def root(self, size: int | None = None) -> bytes:
        """Root of the first ``size`` leaves (all by default)."""
        n = self.size if size is None else size
        return merkle.root_hash(self.leaves[:n])

    def note(self, size: int | None = None, *, root: bytes | None = None, key: SoftwareSigner | None = None) -> str:
        """A signed checkpoint of ``size`` (default: all), optionally with a forged root or key."""
        n = self.size if size is None else size
        body = Checkpoint(self.origin, n, self.root(n) if root is None else root).to_text()
        return sign_note(body, [note_signer(self.origin, key or self.key)])

    def proof(self, old: int, new: int | None = None) -> list[bytes]:
        """Consistency proof from ``old`` to ``new`` (default: all)."""
        return merkle.consistency_proof(self.leaves, old, self.size if new is None else new)

    def page(self, start: int, stop: int | None = None) -> list[bytes]:
        """Raw leaves ``[start, stop)``."""
        return list(self.raws[start:stop])


@dataclass
class Org:
    """An organisation's keys and the records an honest log would hold for it."""

    name: str
    root: SoftwareSigner = field(default_factory=SoftwareSigner.generate)
    maint: SoftwareSigner = field(default_factory=SoftwareSigner.generate)

    def root_envelope(self) -> Envelope:
        """The self-signed root record."""
        return sign_record(RootRecord(self.name, self.root.public_key, False, 1), [self.root])

    def delegation_envelope(self) -> Envelope:
        """Root delegates ``pkg-*`` releases to the maintainer."""
        return sign_record(Delegation(
            issuer=self.root.key_id, subject=self.maint.public_key, name="maint", org=self.name,
            artefacts=("pkg-*",), purposes=("release",), max_depth=0, not_before=0, not_after=None,
            created=1,
        ), [self.root])

    def attestation(self, name: str, *, signer: SoftwareSigner | None = None) -> Envelope:
        """A release attestation for ``name`` by the maintainer (or ``signer``)."""
        digest = hashlib.sha256(name.encode()).hexdigest()
        return sign_envelope(INTOTO, make_statement(subject=Artefact(name, digest)), [signer or self.maint])

    def records(self, releases: Sequence[str]) -> list[Envelope]:
        """Root, delegation, then one attestation per release name."""
        return [self.root_envelope(), self.delegation_envelope(), *(self.attestation(n) for n in releases)]


def honest_log(origin: str, releases: Sequence[str] = ("pkg-a@1", "pkg-b@1", "pkg-c@1"), *,
               org: Org | None = None, key: SoftwareSigner | None = None) -> ForgedLog:
    """A log holding an org's root, a delegation and releases: what an honest node signs."""
    log = ForgedLog(origin, key or SoftwareSigner.generate())
    for env in (org or Org("acme")).records(releases):
        log.append(env)
    return log


def b64(raw: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(raw).decode()


# --- the peer as an HTTP server ----------------------------------------------------------------

MODES = ("honest", "fork", "rewrite", "wrong-key", "split", "garbage", "endless", "trickle")


@dataclass
class Peer:
    """What a misbehaving peer serves: ``log`` normally, ``other`` as its second view."""

    log: ForgedLog
    mode: str = "honest"
    other: ForgedLog | None = None
    switch_after: int = 0
    victim: str = ""
    rewrite_at: int = 3
    page_delay: float = 0.0
    wrong_key: SoftwareSigner = field(default_factory=SoftwareSigner.generate)
    fetches: int = 0
    fetches_by: dict[str, int] = field(default_factory=dict)

    def view(self, request: web.Request) -> ForgedLog:
        """The log this request sees (a fork is shown to a client after its first fetches)."""
        agent = request.headers.get("User-Agent", "")
        if self.mode == "split" and self.other is not None:
            return self.log if self.victim and self.victim in agent else self.other
        if self.mode == "fork" and self.other is not None and self.fetches_by.get(agent, 0) > self.switch_after:
            return self.other
        return self.log


def build_app(peer: Peer) -> web.Application:
    """An aiohttp app serving the read API a replicator uses, misbehaving as ``peer.mode`` says."""
    routes = web.RouteTableDef()

    async def garbage() -> web.Response:
        return web.Response(body=os.urandom(512), content_type="text/plain")

    @routes.get("/checkpoint")
    async def checkpoint(request: web.Request) -> web.StreamResponse:
        peer.fetches += 1
        agent = request.headers.get("User-Agent", "")
        peer.fetches_by[agent] = peer.fetches_by.get(agent, 0) + 1
        if peer.mode == "garbage":
            return await garbage()
        if peer.mode in ("endless", "trickle"):
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            chunk, pause = (b"a" * 65536, 0.001) if peer.mode == "endless" else (b"a", 1.0)
            for _ in range(1_000_000):  # bounded: the client gives up long before
                await resp.write(chunk)
                await asyncio.sleep(pause)
            return resp
        key = peer.wrong_key if peer.mode == "wrong-key" else None
        return web.Response(text=peer.view(request).note(key=key), content_type="text/plain")

    @routes.get("/v1/entries")
    async def entries(request: web.Request) -> web.Response:
        if peer.mode == "garbage":
            return await garbage()
        log = peer.view(request)
        await asyncio.sleep(peer.page_delay)  # a slow link (tests interrupt a copy mid-way)
        start = int(request.query.get("start", "0"))
        limit = min(int(request.query.get("limit", "100")), 1000)
        raws = log.page(start, min(log.size, start + limit))
        if peer.mode == "rewrite" and start <= peer.rewrite_at < start + len(raws):
            e = Entry.from_bytes(raws[peer.rewrite_at - start])
            raws[peer.rewrite_at - start] = Entry.build(seq=e.seq, prev=e.prev, ts=e.ts + 1, envelope=e.envelope).raw
        items = [{"index": start + i, "entry": b64(r)} for i, r in enumerate(raws)]
        return web.json_response({"origin": log.origin, "start": start, "size": log.size, "entries": items})

    @routes.get("/v1/proofs/consistency")
    async def consistency(request: web.Request) -> web.Response:
        if peer.mode == "garbage":
            return await garbage()
        log = peer.view(request)
        first, second = int(request.query["from"]), int(request.query.get("to", log.size))
        if not 0 <= first <= second <= log.size:
            return web.json_response({"error": "bad_input", "message": "out of range"}, status=400)
        return web.json_response({"from": first, "to": second, "proof": [h.hex() for h in log.proof(first, second)]})

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "origin": peer.log.origin, "size": peer.log.size})

    app = web.Application()
    app.add_routes(routes)
    return app


def make_peer(origin: str, key: SoftwareSigner, *, mode: str, entries: int = 8, fork_at: int = 5,
              switch_after: int = 1, victim: str = "") -> Peer:
    """A peer whose log holds an org's root, delegation and ``entries - 2`` releases."""
    org = Org("mallory")
    log = honest_log(origin, [f"pkg-{i}@1" for i in range(max(0, entries - 2))], org=org, key=key)
    other = None
    if mode == "fork":
        other = log.fork(fork_at)
        for i in range(entries - fork_at + 3):
            other.append(org.attestation(f"pkg-fork{i}@1"))
    elif mode == "split":
        other = log.fork(entries - 1)
        other.append(org.attestation("pkg-split@1"))
    return Peer(log, mode, other, switch_after=switch_after, victim=victim)


async def _serve(args: argparse.Namespace) -> None:
    key_path = Path(args.key)
    if key_path.exists():
        key = SoftwareSigner.from_pem(key_path.read_bytes())
    else:
        key = SoftwareSigner.generate()
        key_path.write_bytes(key.to_pem())
    peer = make_peer(args.origin, key, mode=args.mode, entries=args.entries, fork_at=args.fork_at,
                     switch_after=args.switch_after, victim=args.victim)
    runner = web.AppRunner(build_app(peer), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    info = {"url": f"http://127.0.0.1:{port}", "origin": args.origin, "vkey": peer.log.vkey,
            "pid": os.getpid(), "mode": args.mode, "size": peer.log.size, "root": peer.log.root().hex()}
    out = Path(args.dir) / "peer.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a misbehaving peer until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m tests.integration.malicious_peer")
    p.add_argument("--dir", required=True)
    p.add_argument("--origin", default="mallory.example/log")
    p.add_argument("--key", required=True, help="log key PEM (created if missing)")
    p.add_argument("--mode", choices=MODES, default="honest")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--entries", type=int, default=8)
    p.add_argument("--fork-at", type=int, default=5)
    p.add_argument("--switch-after", type=int, default=1)
    p.add_argument("--victim", default="")
    asyncio.run(_serve(p.parse_args(argv)))
    return 0


__all__ = ["MODES", "ForgedLog", "Org", "Peer", "b64", "build_app", "honest_log", "make_peer"]

if __name__ == "__main__":
    sys.exit(main())
