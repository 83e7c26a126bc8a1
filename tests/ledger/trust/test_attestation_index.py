"""The store-backed attestation index answers as the in-memory one, up to a log's size."""

from __future__ import annotations

import hashlib

from ledger.holdings import StoreAttestationIndex
from ledger.keys import KeyId
from ledger.reader import LogReader
from ledger.trust import TrustGraph
from tests.ledger.conftest import World


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _memory_graph(log: LogReader) -> TrustGraph:
    graph = TrustGraph()
    for rec in log.logged_records(0, log.size):
        graph.add(rec)
    return graph


def _fill(world: World) -> None:
    world.log.append(world.attest("pkg-a"))
    world.log.append(world.attest("pkg-b"))
    world.log.append(world.attest("pkg-a-copy", content=b"pkg-a"))  # a second statement, same digest


def test_store_index_answers_as_the_memory_index(world: World) -> None:
    _fill(world)
    for _ in range(2):  # live, then after a restart replays the store
        store_graph, memory_graph = world.holdings.graph, _memory_graph(world.log)
        for digest in (_sha(b"pkg-a"), "sha256:" + _sha(b"pkg-b"), _sha(b"nothing")):
            assert list(store_graph.attestations_for(digest)) == list(memory_graph.attestations_for(digest))
        assert len(store_graph.attestations_for(_sha(b"pkg-a"))) == 2
        # the key index also lists the delegation about maint and the records root signed
        for key in (world.maint.key_id, world.root.key_id, KeyId("no-such-key")):
            assert list(store_graph.attestations_by(key)) == list(memory_graph.attestations_by(key))
        assert len(store_graph.attestations_by(world.maint.key_id)) == 3
        assert not store_graph.attestations_by(world.root.key_id)
        assert store_graph.stats() == memory_graph.stats()
        world.reopen()


def test_store_index_refuses_what_the_memory_index_cannot_match(world: World) -> None:
    _fill(world)
    graph = world.holdings.graph
    assert not graph.attestations_for(_sha(b"pkg-a").upper())
    assert not graph.attestations_for("not hex")


def test_store_index_reads_only_below_the_size_a_reader_holds(world: World) -> None:
    _fill(world)
    before = LogReader(world.log.store)  # its durable head stays where it is now
    world.log.append(world.attest("pkg-c"))
    world.log.append(world.attest("pkg-a-again", content=b"pkg-a"))
    graph = TrustGraph(StoreAttestationIndex(lambda: [before]))
    assert not graph.attestations_for(_sha(b"pkg-c"))
    assert len(graph.attestations_for(_sha(b"pkg-a"))) == 2
    assert len(graph.attestations_by(world.maint.key_id)) == 3
    assert len(world.holdings.graph.attestations_for(_sha(b"pkg-a"))) == 3
