"""Fetching a peer's entries page by page for the replicator, ahead of verification.

:class:`PageFetcher` gets the raw leaves of a peer's own log. With ``page_size`` at least 256
(the default) it reads the C2SP entry bundles the peer serves (``/tile/entries/<N>``: the
exact leaf bytes, 256 to a bundle, length-prefixed -- the cheapest thing a node can serve
and a client can split), four requests at once for a page of 1,024 entries. A peer that does
not serve a bundle (an older node, an entry over 64 KiB), or a bundle that times out (a slow
link), is read for the rest of the round through ``GET /v1/entries`` (JSON, base64 leaves,
``page_size`` per request; the page halves when a request times out, then grows back).

:func:`pages` runs ahead of the mirror: while page ``k`` is applied it fetches page ``k + 1``,
starts its parsing and signature checks in the mirror's verification pool
(:meth:`ledger.mirror.Mirror.preverify`) and fetches its consistency proof. Nothing fetched
is trusted here: every entry is still verified and proven by ``Mirror.apply``.

Invariants: at most :data:`AHEAD` + 2 pages are held at once (the one applied, the queued
ones, the one being fetched); every request has the client's timeout and a byte cap; bytes
that cannot be a page are the peer's fault (:class:`IntegrityFailure`, ``bad-entries``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from ledger._mirror_pages import PendingPage
from ledger.errors import EncodingError, InputError, TurtlesError, UnavailableError
from ledger.mirror import Mirror
from ledger.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, BundleId, decode_bundle
from ledger.witness import Evidence
from node._replication_progress import CatchUp
from node.client import AsyncNodeClient
from node.config import PeerConfig

log = logging.getLogger("turtles.replication")

BUNDLES_PER_PAGE = 4
"""Entry bundles fetched at once (concurrently) for one page: 1,024 entries."""
AHEAD = 3
"""Pages fetched and being verified while the current one is applied (beyond the one in hand)."""
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)


class IntegrityFailure(Exception):
    """A peer served data that failed verification; ``evidence`` says what and where."""

    def __init__(self, evidence: Evidence) -> None:
        super().__init__(evidence.message)
        self.evidence = evidence


def exhibit(e: TurtlesError, origin: str) -> Evidence:
    """The evidence a ledger error carries (or a plain ``inconsistent`` one)."""
    ev = e.evidence.get("exhibit")
    return ev if isinstance(ev, Evidence) else Evidence(origin, "inconsistent", e.message)


@dataclass
class Page:
    """Raw entries from ``start`` with their checks under way, and the proof from their end."""

    start: int
    pending: PendingPage
    proof: list[bytes]


class PageFetcher:
    """Reads pages of one peer's log (see the module doc)."""

    def __init__(self, peer: PeerConfig, client: AsyncNodeClient, page_size: int) -> None:
        self.peer = peer
        self._client = client
        self._page_size = max(1, page_size)
        # Pages shrink when one does not arrive in time (a slow link) and grow back after
        # each page that does, so a large page never becomes a request retried forever.
        self._page_limit = self._page_size
        self.tiles = True

    async def fetch(self, start: int, size: int) -> list[bytes]:
        """The next page of leaves from ``start``: at least one, none at or past ``size``."""
        if self.tiles and self._page_size >= TILE_WIDTH:
            # Pages end on bundle boundaries (or at ``size``): only the right edge is partial.
            stop = min(size, (start // TILE_WIDTH + BUNDLES_PER_PAGE) * TILE_WIDTH)
            try:
                return await self._bundles(start, stop)
            except InputError as e:  # 4xx: this peer does not serve these bundles
                self.tiles = False
                log.info("%s: entry bundles not served (%s); reading /v1/entries", self.peer.url, e.message)
            except UnavailableError as e:
                if "timed out" not in e.message:
                    raise
                # A slow link: a bundle is 256 entries; pages of /v1/entries shrink until they arrive.
                self.tiles = False
                log.info("%s: entry bundles time out; reading /v1/entries", self.peer.url)
        return await self._json(start, min(size - start, self._page_limit))
    async def _bundles(self, start: int, stop: int) -> list[bytes]:
        first, last = start // TILE_WIDTH, (stop - 1) // TILE_WIDTH
        ids = [BundleId(n, min(TILE_WIDTH, stop - n * TILE_WIDTH) if n == last else TILE_WIDTH)
               for n in range(first, last + 1)]
        bodies = await asyncio.gather(*(self._client.get_tile(b.path(), max_bytes=MAX_BUNDLE_BYTES) for b in ids))
        raws: list[bytes] = []
        for bundle, body in zip(ids, bodies, strict=True):
            try:
                raws += decode_bundle(bundle, body)
            except EncodingError as e:
                raise self._malformed(bundle.start, f"{bundle.path()}: {e.message}") from e
        skip = start - first * TILE_WIDTH
        return raws[skip : skip + stop - start]

    async def _json(self, start: int, limit: int) -> list[bytes]:
        while True:
            try:
                doc = await self._client.get_entries(start, limit)
                break
            except UnavailableError as e:
                if limit == 1 or "timed out" not in e.message:
                    raise
                # A slow link: the same page would time out again; ask for half at once.
                limit = self._page_limit = max(1, limit // 2)
                log.info("%s: page timed out, asking for %d entries", self.peer.url, limit)
        self._page_limit = min(self._page_size, self._page_limit * 2)
        try:
            items = doc["entries"]
            if not isinstance(items, list) or doc.get("start", start) != start:
                raise TypeError("entries is not a list starting at the index asked for")
            raws = [base64.b64decode(item["entry"], validate=True) for item in items[:limit]]
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise self._malformed(start, str(e)) from e
        if not raws:
            raise UnavailableError(f"{self.peer.url} served no entries from {start}")
        return raws

    def _malformed(self, start: int, why: str) -> IntegrityFailure:
        return IntegrityFailure(Evidence(
            self.peer.origin, "bad-entries", f"{self.peer.url}: malformed page of entries from {start}: {why}",
            index=start, source=self.peer.url,
        ))


async def pages(
    fetcher: PageFetcher, client: AsyncNodeClient, mirror: Mirror, start: int, size: int
) -> AsyncGenerator[Page, None]:
    """Pages ``[start, size)`` of the peer's log in order, fetched and checked ahead (see the module doc).

    Closing the iterator early cancels the fetch under way and drops the checks not started.
    """
    queue: asyncio.Queue[Page | BaseException] = asyncio.Queue(AHEAD)

    async def produce() -> None:
        at = start
        try:
            while at < size:
                raws = await fetcher.fetch(at, size)
                pending = mirror.preverify(raws)
                end = at + len(raws)
                try:
                    proof = [] if end == size else await client.get_consistency_proof(end, size)
                except BaseException:
                    pending.cancel()
                    raise
                await queue.put(Page(at, pending, proof))
                at = end
        except asyncio.CancelledError:
            raise
        except Exception as e:  # handed to the consumer, which raises it in order
            await queue.put(e)

    task = asyncio.create_task(produce())
    taken = start
    try:
        while taken < size:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            taken = item.start + len(item.pending)
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        while not queue.empty():
            left = queue.get_nowait()
            if isinstance(left, Page):
                left.pending.cancel()


async def copy_pages(
    fetcher: PageFetcher, client: AsyncNodeClient, mirror: Mirror, size: int, *,
    apply: Callable[[PendingPage, list[bytes]], Awaitable[int]], progress: CatchUp, stopping: Callable[[], bool],
) -> None:
    """Copy the peer's entries from the mirror's tip to ``size``: each page of :func:`pages`
    through ``apply`` (``Mirror.apply`` in a thread; it takes a page up to its first key
    record, so a page may take several calls), reporting to ``progress``. Returns early,
    between pages, once ``stopping()``; the mirror resumes from its stored tip next time."""
    fetcher.tiles = True  # try the entry bundles again each round
    try:
        async with contextlib.aclosing(pages(fetcher, client, mirror, mirror.tip.size, size)) as it:
            async for page in it:
                if stopping():
                    return
                if page.start != mirror.tip.size:
                    raise RuntimeError(f"page from {page.start} does not follow the tip {mirror.tip.size}")
                pending = page.pending
                while len(pending):
                    took = await apply(pending, page.proof)
                    if took < 1:  # (Mirror.apply takes at least one entry of a page or raises)
                        raise RuntimeError(f"applying the page from {mirror.tip.size} made no progress")
                    pending = pending.drop(took)
                progress.update(mirror.tip.size, mirror.verified)
    finally:
        progress.done()


__all__ = ["AHEAD", "BUNDLES_PER_PAGE", "IntegrityFailure", "Page", "PageFetcher", "copy_pages", "exhibit", "pages"]
