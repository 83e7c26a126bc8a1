"""Store atomicity and the from-scratch audit: every kind of tampering is detected."""

from __future__ import annotations

import hashlib
import struct

import plyvel
import pytest

from ledger.audit import audit_log
from ledger.encoding import decode, encode
from ledger.errors import CorruptionError, StorageError
from ledger.holdings import LogGate
from ledger.log import logged_from_entry
from ledger.store import Batch, Database, Head
from ledger.trust import RootsPolicy
from tests.ledger.conftest import ORIGIN, World


def _audit(world: World):  # type: ignore[no-untyped-def]
    return audit_log(world.log.store, vkey=world.log.vkey,
                     new_gate=lambda: LogGate(RootsPolicy.any_self_signed()),
                     prepare=lambda gate, entry: logged_from_entry(gate, ORIGIN, entry))


def _raw_db(world: World) -> plyvel.DB:
    """The log's key space opened directly, as an attacker with disk access would."""
    world.holdings.close()
    db = plyvel.DB(str(world.path))
    return db.prefixed_db(b"L" + hashlib.sha256(ORIGIN.encode()).digest()[:8])


def _fill(world: World, n: int = 20) -> None:
    world.log.append_many([world.attest(f"pkg-{i}") for i in range(n)])


def test_audit_passes_on_an_honest_log(world: World) -> None:
    _fill(world)
    report = _audit(world)
    assert report.entries == report.size == 22
    assert report.kinds == {"root": 1, "delegation": 1, "attestation": 20}
    assert report.checkpoints >= 3


@pytest.mark.parametrize("index", [0, 1, 5, 21])
def test_audit_detects_a_rewritten_entry(world: World, index: int) -> None:
    _fill(world)
    db = _raw_db(world)
    key = b"e" + struct.pack(">Q", index)
    obj = decode(db.get(key))
    obj["ts"] += 1  # the smallest change a dishonest operator could make
    db.put(key, encode(obj))
    _reopen_raw(world, db)
    with pytest.raises(CorruptionError) as info:
        _audit(world)
    assert info.value.index in (index, index + 1, None)


def test_audit_detects_a_forged_hash(world: World) -> None:
    _fill(world)
    db = _raw_db(world)
    db.put(b"h" + bytes([0]) + struct.pack(">Q", 3), bytes(32))
    _reopen_raw(world, db)
    with pytest.raises(CorruptionError, match=r"hash \(0, 3\) does not match"):
        _audit(world)


def test_audit_detects_a_removed_entry(world: World) -> None:
    _fill(world)
    db = _raw_db(world)
    db.delete(b"e" + struct.pack(">Q", 4))
    _reopen_raw(world, db)
    with pytest.raises(CorruptionError, match="entry 4"):
        _audit(world)


def test_audit_detects_a_checkpoint_over_a_different_root(world: World) -> None:
    _fill(world)
    first_note = world.log.store.checkpoint(2)
    assert first_note is not None
    db = _raw_db(world)
    db.put(b"c" + struct.pack(">Q", 3), first_note.encode())  # a note stored under the wrong size
    _reopen_raw(world, db)
    with pytest.raises(CorruptionError, match="checkpoint"):
        _audit(world)


def _reopen_raw(world: World, db: plyvel.DB) -> None:
    db.db.close() if hasattr(db, "db") else None
    world.holdings = type(world.holdings).open(world.path, origin=ORIGIN, signer=world.log_key,
                                               roots=RootsPolicy.any_self_signed())


def test_exception_mid_batch_leaves_the_store_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Database(tmp_path) as db:
        store = db.log("x")
        store.create({"origin": "x", "vkey": "v", "kind": "own"})
        before = store.head()
        bad = Batch(entries=[(0, b"entry"), (1, "not bytes")], hashes=[], index_keys=[],  # type: ignore[list-item]
                    head=Head(2, bytes(32), bytes(32)))
        with pytest.raises((StorageError, TypeError)):
            store.commit(bad)
        assert store.head() == before
        assert list(store.entries(0, 10)) == []
