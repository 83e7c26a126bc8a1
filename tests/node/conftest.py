"""Fixtures for node tests: real configs, real keys, real LevelDB, real servers on loopback.

* :func:`make_config` writes a log key and returns a :class:`NodeConfig` in a tmp dir.
* ``client`` is an ``aiohttp_client`` of a fresh node app (in-process, real store).
* :class:`LiveNode` runs a node with :func:`node.server.serve` in a thread on
  127.0.0.1:0, for synchronous clients (urllib, schemathesis, hypothesis).
* ``root_envelope`` / ``attestation`` build admitted records signed by fresh keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ledger.attestation import PAYLOAD_TYPE, Artefact, make_statement
from ledger.entry import sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.keys import SoftwareSigner
from ledger.records import RootRecord
from node.app import create_app
from node.config import KeysSection, LimitsSection, NodeConfig, NodeSection
from node.server import serve


def make_config(tmp: Path, *, origin: str = "test.turtles.local/log", **limits: Any) -> NodeConfig:
    """A node config in ``tmp`` with a fresh Ed25519 log key written as PEM."""
    tmp.mkdir(parents=True, exist_ok=True)
    key = tmp / "log.pem"
    if not key.exists():
        key.write_bytes(SoftwareSigner.generate("ed25519").to_pem())
    return NodeConfig(
        node=NodeSection(origin=origin, org="test", data_dir=tmp / "data"),
        keys=KeysSection(log_key=str(key)),
        limits=dataclasses.replace(LimitsSection(), **limits),
    )


def root_envelope(org: str = "acme", signer: SoftwareSigner | None = None) -> tuple[SoftwareSigner, Envelope]:
    """A self-signed root record (admitted under roots = "any") and its key."""
    signer = signer or SoftwareSigner.generate("ed25519")
    record = RootRecord(org=org, key=signer.public_key, hsm=False, created=1_700_000_000_000)
    return signer, sign_record(record, [signer])


def attestation(signer: SoftwareSigner, name: str, content: bytes) -> tuple[str, Envelope]:
    """An in-toto attestation for an artefact with ``content``, signed by ``signer``."""
    digest = hashlib.sha256(content).hexdigest()
    statement = make_statement(subject=Artefact(name, digest))
    return digest, sign_envelope(PAYLOAD_TYPE, statement, [signer])


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    """A default node config in a tmp dir."""
    return make_config(tmp_path)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Any, config: NodeConfig) -> AsyncIterator[Client]:
    """An in-process client of a fresh node."""
    yield await aiohttp_client(create_app(config))


class LiveNode:
    """A node served by :func:`node.server.serve` in a background thread on 127.0.0.1:0."""

    def __init__(self, config: NodeConfig, app: web.Application | None = None) -> None:
        self.config = config
        self.app = app or create_app(config)
        self.info: dict[str, Any] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-node", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the running node."""
        return str(self.info["url"])

    def start(self) -> LiveNode:
        """Start and wait until the node listens."""
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("live node did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.config, stop=self._stop, ready=self._up, app=self.app, shutdown_timeout=5)

        try:
            asyncio.run(main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def _up(self, info: dict[str, Any]) -> None:
        self.info = info
        self._ready.set()

    def stop(self) -> None:
        """Stop gracefully and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def live_node(tmp_path: Path) -> Iterator[LiveNode]:
    """A live node with a generous rate limit (fuzzing sends many requests)."""
    node = LiveNode(make_config(tmp_path, rate_per_second=1e6, rate_burst=1_000_000)).start()
    try:
        yield node
    finally:
        node.stop()


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (for processes and threads, not for ordering)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)
