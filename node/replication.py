"""Pull replication of peers' logs: one asyncio task per peer, everything re-verified.

A round for one peer: fetch its checkpoint; check it against the mirror with a consistency
proof from the mirror's size (a fork or equivocation of held data is proven here); fetch
entries page by page with a consistency proof from the end of each page and apply each page
through :class:`~ledger.mirror.Mirror` (signatures, admission, chain, root all re-checked);
then cosign the checkpoint as a witness, compare the peer's witnessed checkpoints with our
own views (split-view gossip), and push the own log's checkpoint to the peer's witness.

Invariants:
* Failures are of two kinds. *Unavailable* (timeouts, connection errors, byte caps,
  HTTP errors, endless or trickling replies): retried with exponential backoff and full
  jitter, the peer marked unhealthy. *Integrity* (a bad signature, proof, entry or record,
  a fork, garbage where a signed note should be): the evidence is recorded, the mirror is
  left as it was, and replication of that peer is paused until :meth:`Replicator.resume`.
* Entries are fetched (entry bundles, else ``/v1/entries``) and checked in the verification
  pool a page ahead of the one applied (:mod:`node._replication_pages`); nothing is stored
  before ``Mirror.apply`` verified it. Memory is bounded by a few pages; every exchange has a
  timeout and a byte cap; each peer has its own task, so a slow peer never delays another.
* A catch-up shows its progress (entries, rate, ETA) in the node's log, :class:`PeerStatus`
  and the metrics (:mod:`node._replication_progress`). After an interruption the next round
  resumes from the mirror's stored tip: nothing held is fetched or verified again.
* LevelDB work runs in threads; the event loop only waits on the network.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from ledger._mirror_pages import PendingPage
from ledger.checkpoint import Checkpoint, open_note
from ledger.errors import ConsistencyError, NoteError, TurtlesError
from ledger.holdings import Holdings
from ledger.mirror import Mirror
from ledger.witness import Evidence
from node._replication_pages import IntegrityFailure, PageFetcher, copy_pages, exhibit
from node._replication_progress import CatchUp, PeerStatus, show_sizes
from node.client import MAX_NOTE_BYTES, AsyncNodeClient, remote_error
from node.config import PeerConfig, ReplicationSection
from node.metrics import Registry
from node.routes.witness import MAX_GOSSIP_BYTES
from node.state import CONFIG, METRICS, RUNTIME
from node.witness import WITNESS, NodeWitness

log = logging.getLogger("turtles.replication")
T = TypeVar("T")


class PeerReplicator:
    """Replicates, witnesses and gossips with one peer."""

    def __init__(
        self, peer: PeerConfig, *, holdings: Holdings, witness: NodeWitness, client: AsyncNodeClient,
        settings: ReplicationSection, metrics: Registry, rng: random.Random,
        busy: set[asyncio.Future[Any]] | None = None, on_split: Callable[[Evidence], None] | None = None,
    ) -> None:
        self.peer = peer
        self._on_split = on_split
        self.status = PeerStatus(peer.origin, peer.url)
        self._holdings = holdings
        self._witness = witness
        self._client = client
        self._settings = settings
        self._fetcher = PageFetcher(peer, client, settings.page_size)
        self._metrics = metrics
        self._rng = rng
        self._wake = asyncio.Event()
        self._round = asyncio.Lock()  # one round at a time: one writer per mirror
        self._stop: asyncio.Event | None = None
        self._busy: set[asyncio.Future[Any]] = set() if busy is None else busy

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Replicate until ``stop`` is set (a round in progress ends at its next page)."""
        self._stop = stop
        while not stop.is_set():
            if self.status.state != "paused":
                await self.sync_once()
            delay = self._delay()
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    def _delay(self) -> float:
        s = self._settings
        if self.status.state == "paused":
            return 3600.0
        if self.status.failures:
            backoff: float = min(s.max_backoff_s, s.interval_s * 2.0 ** min(self.status.failures, 20))
            return backoff * self._rng.uniform(0.5, 1.0)
        return s.interval_s * self._rng.uniform(0.8, 1.2)

    def pause(self, evidence: Evidence) -> None:
        """Stop pulling from this peer (the evidence says why)."""
        self.status.state, self.status.evidence = "paused", evidence
        self.status.last_error = evidence.message
        self._gauge_paused(1)
        log.error("replication of %s paused: %s", self.peer.origin, evidence.message)

    def resume(self) -> None:
        """Pull again (after an operator looked at the evidence)."""
        self.status.state, self.status.failures = "idle", 0
        self._gauge_paused(0)
        self._wake.set()

    async def sync_once(self) -> PeerStatus:
        """One round; never raises for a peer's fault (the status and metrics say what happened)."""
        async with self._round:
            return await self._sync()

    async def _sync(self) -> PeerStatus:
        self.status.rounds += 1
        try:
            await self._pull()
        except IntegrityFailure as e:
            await self._thread(self._witness.record, e.evidence)
            self._count_error("integrity")
            self.pause(e.evidence)
            return self.status
        except TurtlesError as e:
            return self._failed(e.code, e.message)
        except (OSError, ValueError, RuntimeError) as e:  # a bug or the store: never kill the task
            log.exception("replicating %s failed unexpectedly", self.peer.origin)
            return self._failed("internal", str(e)[:200])
        if self._stopping():
            return self.status
        self.status.state, self.status.failures, self.status.last_error = "ok", 0, None
        self.status.last_success = time.time()
        self._metrics.gauge("turtles_replication_last_success_timestamp_seconds", "Last successful pull from a peer",
                            ("origin",)).set(self.status.last_success, origin=self.peer.origin)
        await self._gossip()
        await self._push()
        return self.status

    async def _thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run store work in a thread; cancelling the caller never abandons it mid-write
        (:meth:`Replicator.stop` waits for it before the store may close)."""
        job = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        self._busy.add(job)
        job.add_done_callback(self._busy.discard)
        return await asyncio.shield(job)

    def _failed(self, code: str, message: str) -> PeerStatus:
        self.status.failures += 1
        self.status.state, self.status.last_error = "retrying", message
        self._count_error(code)
        log.warning("replicating %s from %s: %s", self.peer.origin, self.peer.url, message)
        return self.status

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # --- pulling ------------------------------------------------------------------------------------

    async def _pull(self) -> None:
        mirror = await self._thread(self._holdings.mirror, self.peer.origin, self.peer.vkey)
        latest = await self._checkpoint()
        latest_cp = self._open(latest)
        self.status.peer_size = latest_cp.size
        if latest_cp.size < mirror.size:  # RELIABILITY W5: an old head replayed is a freeze
            self._count_error("stale")
            log.warning("%s serves size %d, below the %d already verified", self.peer.url, latest_cp.size, mirror.size)
        note = mirror.target or latest  # finish a catch-up under way first: its proofs still hold
        cp = latest_cp if note is latest else self._open(note)
        tip = mirror.tip.size
        proof = [] if cp.size <= tip else await self._client.get_consistency_proof(tip, cp.size)
        await self._apply(mirror, note, [], proof)
        if mirror.tip.size < cp.size:
            await self._copy(mirror, note, cp.size)
            if self._stopping():
                return  # the mirror resumes from its tip next time
        show_sizes(self._metrics, self.status, size=mirror.size, tip=mirror.tip.size)
        if cp.size <= mirror.size:
            try:
                await self._thread(self._witness.cosign_mirrored, mirror, note, source=self.peer.url)
            except TurtlesError as e:
                if "exhibit" not in e.evidence:
                    raise
                raise IntegrityFailure(exhibit(e, self.peer.origin)) from e

    async def _copy(self, mirror: Mirror, note: str, size: int) -> None:
        """Fetch, verify and store the entries from the mirror's tip to ``size`` (pipelined)."""
        progress = CatchUp(self.status, start=mirror.tip.size, target=size, verified=mirror.verified,
                           metrics=self._metrics)
        await copy_pages(self._fetcher, self._client, mirror, size, progress=progress, stopping=self._stopping,
                         apply=lambda pending, proof: self._apply(mirror, note, pending, proof))

    async def _checkpoint(self) -> str:
        """The peer's checkpoint; bytes that are not a note are the peer's fault (integrity)."""
        reply = await self._client.request("GET", "/checkpoint", max_bytes=MAX_NOTE_BYTES)
        if reply.status != 200:
            raise remote_error(reply, self.peer.url + "/checkpoint")
        return reply.body.decode("utf-8", "replace")

    def _open(self, note: str) -> Checkpoint:
        try:
            cp = Checkpoint.parse(open_note(note, self.peer.vkey))
        except NoteError as e:
            raise IntegrityFailure(Evidence(
                self.peer.origin, "bad-note", f"{self.peer.url}/checkpoint: {e.message}",
                newer=note[:4096], source=self.peer.url,
            )) from e
        if cp.origin != self.peer.origin:
            raise IntegrityFailure(Evidence(
                self.peer.origin, "bad-note", f"{self.peer.url} serves a checkpoint of {cp.origin[:200]!r}",
                newer=note, source=self.peer.url,
            ))
        return cp

    async def _apply(
        self, mirror: Mirror, note: str, raws: Sequence[bytes] | PendingPage, proof: Sequence[bytes]
    ) -> int:
        try:
            return await self._thread(mirror.apply, note=note, entries=raws, proof=proof, source=self.peer.url)
        except ConsistencyError as e:
            evidence = exhibit(e, self.peer.origin)
            if not raws and evidence.kind == "bad-proof":
                evidence = await self._refine(mirror, note) or evidence
            raise IntegrityFailure(evidence) from e

    async def _refine(self, mirror: Mirror, note: str) -> Evidence | None:
        """Try to turn a failed proof into a proven fork: a proof from a size below the held
        checkpoint that is not a power of two carries the peer tree's root at that size."""
        held = mirror.size
        size = held - 1 if held & (held - 1) == 0 else held
        if size < 3:
            return None
        try:
            proof = await self._client.get_consistency_proof(size, self._open(note).size)
        except TurtlesError:
            return None
        return await self._thread(mirror.prefix_evidence, note=note, size=size, proof=proof, source=self.peer.url)

    # --- gossip and pushing -----------------------------------------------------------------------

    async def _gossip(self) -> None:
        """Compare the peer's witnessed checkpoints with our mirrors and witness state."""
        try:
            reply = await self._client.request("GET", "/v1/witness/checkpoints", max_bytes=MAX_GOSSIP_BYTES)
            notes = reply.json().get("checkpoints", {}) if reply.status == 200 else {}
        except (TurtlesError, AttributeError):
            return
        if not isinstance(notes, dict):
            return
        for origin, note in notes.items():
            if isinstance(origin, str) and isinstance(note, str) and origin in self._witness.peers:
                for ev in await self._thread(self._witness.crosscheck, origin, note, source=self.peer.url):
                    log.error("split view of %s seen through %s: %s", origin, self.peer.url, ev.message)
                    if self._on_split is not None:
                        self._on_split(ev)

    async def _push(self) -> None:
        """Ask the peer's witness to cosign the own log's checkpoint (C2SP client)."""
        try:
            for _ in range(3):
                request = await self._thread(self._witness.push_request, self.peer.origin)
                if request is None:
                    return
                reply = await self._client.post_add_checkpoint(request.to_bytes())
                if await self._thread(self._witness.push_reply, self.peer.origin, request, reply):
                    self.status.push_error = None
                    return
        except TurtlesError as e:
            self.status.push_error = e.message
            log.warning("witness %s did not cosign: %s", self.peer.origin, e.message)

    def _count_error(self, kind: str) -> None:
        self._metrics.counter("turtles_replication_errors_total", "Failed pulls from peers", ("origin", "error")).inc(
            origin=self.peer.origin, error=kind
        )

    def _gauge_paused(self, value: int) -> None:
        self._metrics.gauge("turtles_replication_paused", "1 while replication of a peer is paused",
                            ("origin",)).set(value, origin=self.peer.origin)


class Replicator:
    """Replication of every configured peer; usable without an aiohttp app.

    ``async with Replicator(...)`` starts one task per peer and stops them on exit.
    """

    def __init__(
        self, holdings: Holdings, peers: Sequence[PeerConfig], *, witness: NodeWitness,
        settings: ReplicationSection | None = None, metrics: Registry | None = None,
        user_agent: str = "turtles-node", ca: str | None = None, seed: int | None = None,
    ) -> None:
        self.settings = settings or ReplicationSection()
        self._metrics = metrics or Registry()
        self._holdings = holdings
        self._witness = witness
        self._peers_config = list(peers)
        self._user_agent = user_agent
        self._ca = ca
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Future[Any]] = set()
        self.peers: dict[str, PeerReplicator] = {}

    async def __aenter__(self) -> Replicator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _build(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": self._user_agent})
        for peer in self._peers_config:
            client = AsyncNodeClient(peer.url, session=self._session, timeout=self.settings.timeout_s, ca=self._ca)
            self.peers[peer.origin] = PeerReplicator(
                peer, holdings=self._holdings, witness=self._witness, client=client, settings=self.settings,
                metrics=self._metrics, rng=random.Random(self._rng.random()), busy=self._busy,
                on_split=self._pause_origin,
            )

    async def start(self) -> None:
        """Start one task per peer."""
        self._build()
        self._stop.clear()
        self._tasks = [asyncio.create_task(p.run(self._stop), name=f"replicate:{o}") for o, p in self.peers.items()]

    async def stop(self) -> None:
        """Stop every task and close the HTTP session.

        A round in progress is cancelled, but store work it started in a thread is waited
        for, so nothing writes to the store once this returns.
        """
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._busy, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sync_once(self, origin: str) -> PeerStatus:
        """Run one round for ``origin`` now (tests, or an operator's nudge)."""
        self._build()
        return await self.peers[origin].sync_once()

    def status(self) -> dict[str, PeerStatus]:
        """Status of every peer."""
        return {o: p.status for o, p in self.peers.items()}

    def _pause_origin(self, evidence: Evidence) -> None:
        """Gossip showed ``evidence.origin`` equivocating: stop pulling that log."""
        peer = self.peers.get(evidence.origin)
        if peer is not None and peer.status.state != "paused":
            peer.pause(evidence)

    def resume(self, origin: str) -> None:
        """Resume a paused peer."""
        self.peers[origin].resume()


REPLICATOR = web.AppKey("turtles.replicator", Replicator)


async def replication_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: replicate every ``[[peer]]`` while the app runs (after ``witness_ctx``)."""
    config = app[CONFIG]
    holdings = app[RUNTIME].open_holdings()
    replicator = Replicator(
        holdings, config.peers, witness=app[WITNESS], settings=config.replication, metrics=app[METRICS],
        user_agent=f"turtles-node/{config.node.origin}", ca=str(config.tls.ca) if config.tls.ca else None,
    )
    app[REPLICATOR] = replicator
    await replicator.start()
    try:
        yield
    finally:
        await replicator.stop()


__all__ = ["REPLICATOR", "IntegrityFailure", "PeerReplicator", "PeerStatus", "Replicator", "replication_ctx"]
