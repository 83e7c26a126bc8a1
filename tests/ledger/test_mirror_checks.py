"""What workers hand a mirror (ledger._mirror_checks) and the page roots (ledger._mirror_tree),
against the strict reference: Entry.from_bytes + verify_envelope + index_rows, merkle.tree_hash."""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger._mirror_checks import LOGGED, _lean_entry, check_raws, item
from ledger._mirror_tree import made, page_root, place
from ledger.attestation import PAYLOAD_TYPE, Attestation
from ledger.entry import Entry, LoggedRecord
from ledger.errors import TurtlesError
from ledger.holdings import LogGate
from ledger.trust import RootsPolicy
from ledger.verification import logged_from_entry, verify_envelope
from tests.integration.malicious_peer import ForgedLog, Org, honest_log

PEER = "peer.example/log"
ACME = Org("acme")
SOURCE = honest_log(PEER, [f"pkg-{i}@1" for i in range(12)], org=ACME)
SOURCE.append(ACME.attestation("pkg-x@1", signer=Org("mallory").maint))  # a signer nobody knows
SOURCE.append(Org("other").root_envelope())  # a key record after the attestations


def gate_of(source: ForgedLog, upto: int) -> LogGate:
    """The gate of a mirror holding ``source``'s first ``upto`` entries."""
    gate = LogGate(RootsPolicy.any_self_signed())
    for raw in source.raws[:upto]:
        gate.add(logged_from_entry(gate, PEER, Entry.from_bytes(raw)))
    return gate


GATE = gate_of(SOURCE, 2)  # acme's root and delegation
KEYS: dict[str, bytes] = {str(kid): key.der for kid, key in GATE.key_table().items()}


def reference(raw: bytes, keys: dict[str, bytes], epoch: int) -> tuple[object, ...] | None:
    """What check_raws must give for ``raw``, made the strict way (None: the mirror's process does it)."""
    try:
        entry = Entry.from_bytes(raw)
    except TurtlesError:
        return None
    env = entry.envelope
    if env.payload_type != PAYLOAD_TYPE:
        return None
    ids = tuple(k for k in env.key_ids if k in keys)
    prepared = None
    if ids:
        try:
            prepared = verify_envelope(GATE, env)  # (ids: only keys the gate knows)
        except TurtlesError:
            prepared = None
    return item(PEER, entry, prepared, epoch, ids)


def lean(x: tuple[object, ...]) -> tuple[object, ...]:
    """``x`` with its record's statement dropped (workers send lean attestations)."""
    rec = x[LOGGED]
    if not isinstance(rec, LoggedRecord) or not isinstance(rec.record, Attestation):
        return x
    r = rec.record
    leaned = LoggedRecord(rec.origin, rec.index, rec.ts, rec.leaf_hash, rec.signers,
                          Attestation(r.subjects, r.predicate_type, r.materials, r.builder, {}), rec.record_id)
    return (*x[:LOGGED], leaned, *x[LOGGED + 1 :])


def across_the_pipe(raws: Sequence[bytes], keys: dict[str, bytes], epoch: int) -> tuple[int, list[Any]]:
    """check_raws as the mirror gets it back from a worker (pickled and unpickled)."""
    checked, items = pickle.loads(pickle.dumps(check_raws(PEER, keys, epoch, list(raws))))
    return checked, items


def test_honest_entries_come_back_as_the_strict_path_makes_them() -> None:
    checked, items = across_the_pipe(SOURCE.raws, KEYS, 7)
    want = [reference(raw, KEYS, 7) for raw in SOURCE.raws]
    assert items == [None if w is None else lean(w) for w in want]
    assert items[0] is None and items[1] is None and items[-1] is None  # key records: done by the mirror
    assert all(x is not None and x[LOGGED] is not None for x in items[2:-2])
    assert items[-2] is not None and items[-2][LOGGED] is None and items[-2][6] == ()  # signer unknown: not checked
    assert checked == len(SOURCE.raws) - 4  # every attestation with a known signer, once


def test_nothing_is_checked_without_keys() -> None:
    checked, items = across_the_pipe(SOURCE.raws, {}, 0)
    assert checked == 0
    assert all(x is None or (x[LOGGED] is None and x[6] == ()) for x in items)


def test_a_bad_signature_comes_back_unchecked_for_the_mirror_to_report() -> None:
    e = Entry.from_bytes(SOURCE.raws[3])
    sig = e.envelope.signatures[0]
    forged = type(e.envelope)(e.envelope.payload_type, e.envelope.payload, (type(sig)(sig.keyid, bytes(64)),))
    raw = Entry.build(seq=e.seq, prev=e.prev, ts=e.ts, envelope=forged).raw
    checked, items = across_the_pipe([raw], KEYS, 0)
    assert checked == 1 and items[0] is not None and items[0][LOGGED] is None and items[0][6] == (sig.keyid,)


def _damaged(index: int, how: str, where: int, byte: int) -> bytes:
    """Stored entry ``index`` with one byte flipped, cut off there, or one byte inserted."""
    raw = bytearray(SOURCE.raws[index])
    pos = where % len(raw)
    if how == "flip":
        raw[pos] ^= byte or 1
    elif how == "cut":
        del raw[pos:]
    else:
        raw[pos:pos] = bytes([byte])
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SOURCE.raws) - 1), st.sampled_from(["flip", "cut", "grow"]), st.integers(0, 10**6),
       st.integers(0, 255))
def test_damaged_entries_give_what_the_strict_path_gives(index: int, how: str, where: int, byte: int) -> None:
    raw = _damaged(index, how, where, byte)
    _, items = across_the_pipe([raw], KEYS, 3)
    want = reference(raw, KEYS, 3)
    assert items[0] == (None if want is None else lean(want))


# --- page roots --------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 600), st.integers(0, 600))
def test_page_roots_are_the_roots_of_the_stored_tree_with_the_page(start: int, n: int, cut: int) -> None:
    leaves = [os.urandom(32) for _ in range(start + n)]
    store: dict[tuple[int, int], bytes] = {}
    for lv, ix, h in merkle.stored_hashes_for_leaves(0, leaves[:start], lambda c: [store[x] for x in c]):
        store[(lv, ix)] = h
    hashes = merkle.stored_hashes_for_leaves(start, leaves[start:], lambda c: [store[x] for x in c])
    reads: list[tuple[int, int]] = []

    def stored(coords: Sequence[tuple[int, int]]) -> list[bytes]:
        reads.extend(coords)
        return [store[c] for c in coords]

    size = start + min(n, max(1, cut))  # the whole page, or a first part of it (a key record cut it)
    assert page_root(size, start, hashes, stored) == merkle.root_hash(leaves[:size])
    assert all((ix + 1) << lv <= start for lv, ix in reads)  # only hashes of the stored tree are read
    for pos, (lv, ix, h) in enumerate(hashes):
        assert place(start, lv, ix) == pos  # found where it is, without a search
        assert made(hashes, start, lv, ix) == h


def test_a_hash_out_of_its_place_is_still_found_and_a_missing_one_is_an_error() -> None:
    leaves = [os.urandom(32) for _ in range(37)]
    hashes = merkle.stored_hashes_for_leaves(0, leaves, lambda c: [])
    shuffled = list(hashes)
    random.Random(1).shuffle(shuffled)
    for lv, ix, h in hashes:
        assert made(shuffled, 0, lv, ix) == h
    with pytest.raises(LookupError):
        made(hashes, 0, 9, 0)


# --- the lean reader of common entries ----------------------------------------------------------


def _entry_value(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return value


_VARIANTS: list[tuple[str, Any]] = [
    ("v", True), ("v", 2), ("seq", True), ("seq", -1), ("seq", 1 << 63), ("seq", 1.0), ("ts", -5), ("ts", False),
    ("prev", b"\x00" * 31), ("prev", "x" * 32), ("env.payloadType", "application/other"), ("env.payload", "text"),
    ("env.signatures", []), ("env.sig", b""), ("env.sig", b"\x01" * 1025), ("env.sig", "text"),
    ("env.keyid", 7), ("env.keyid", "k" * 257), ("env.keyid", "k" * 256), ("env.two", None), ("env.extra", 1),
]


@pytest.mark.parametrize(("field", "value"), _VARIANTS)
def test_the_lean_reader_reads_only_what_the_strict_reader_reads_the_same(field: str, value: Any) -> None:
    obj = _entry_value(SOURCE.raws[3])
    env = obj["env"]
    if field == "env.two":
        env["signatures"] = [env["signatures"][0], {"keyid": "other", "sig": b"\x02" * 64}]
    elif field == "env.extra":
        env["x"] = value
    elif field in ("env.sig", "env.keyid"):
        env["signatures"][0][field[4:]] = value
    elif field.startswith("env."):
        env[field[4:]] = value
    else:
        obj[field] = value
    raw = msgpack.packb(obj, use_bin_type=True)
    _assert_lean_agrees(raw)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SOURCE.raws) - 1), st.sampled_from(["flip", "cut", "grow"]), st.integers(0, 10**6),
       st.integers(0, 255))
def test_the_lean_reader_agrees_with_the_strict_reader_on_damaged_entries(index: int, how: str, where: int,
                                                                          byte: int) -> None:
    _assert_lean_agrees(_damaged(index, how, where, byte))


def test_the_lean_reader_reads_every_common_attestation() -> None:
    attestations = [raw for raw in SOURCE.raws if Entry.from_bytes(raw).envelope.payload_type == PAYLOAD_TYPE]
    assert attestations and all(_lean_entry(raw) is not None for raw in attestations)
    assert _lean_entry(SOURCE.raws[0]) is None  # a key record: not this shape


def _assert_lean_agrees(raw: bytes) -> None:
    """What the lean reader reads, the strict one reads the same (it may leave more to it)."""
    fields = _lean_entry(raw)
    if fields is None:
        return
    e = Entry.from_bytes(raw)  # raises if the lean reader took what the strict one refuses
    sig = e.envelope.signatures
    assert e.envelope.payload_type == PAYLOAD_TYPE and len(sig) == 1
    assert fields == (e.seq, e.prev, e.ts, e.envelope.payload, sig[0].keyid, sig[0].sig)
