"""A prepared log on disk, and the invariants every fault test checks after recovery.

A *world* is a directory holding ``db/`` (the node's LevelDB), ``log.pem`` (the Ed25519 key
that signs checkpoints), ``root.pem`` and ``maint.pem`` (an organisation root and a maintainer
it delegated ``pkg-*`` releases to) and ``acks.json``: the record id acknowledged at every
index so far. Fault tests copy a template world per injection point, run one operation on the
copy under a fault, then call :func:`check_world`, which opens the copy as a restarted node
would and checks RELIABILITY S1/S2/S3:

* the node opens, a from-scratch audit (``ledger.audit.audit_log``) passes;
* every acknowledged record is at its acknowledged index;
* the one unacknowledged record is wholly present (entry, hashes, index rows, head, a
  checkpoint covering it) or wholly absent (no entry, no index row, no hash, no checkpoint
  beyond the head): nothing is stored past the head, so no index is ever reused;
* no stored checkpoint covers data the store does not hold (the audit refuses that too).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import plyvel

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.audit import AuditReport, audit_log
from ledger.checkpoint import Checkpoint, open_note
from ledger.entry import Entry, record_id, sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.holdings import Holdings, LogGate
from ledger.keys import Signer, SoftwareSigner
from ledger.log import Log, logged_from_entry
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy
from node.client import NodeClient

ORIGIN = "reliability.turtles/log"
ROOT_DIR = Path(__file__).resolve().parents[2]
_U64 = struct.Struct(">Q")


def log_prefix(origin: str = ORIGIN) -> bytes:
    """The LevelDB key prefix of a log's key space (see ``ledger.store``)."""
    return b"L" + hashlib.sha256(origin.encode()).digest()[:8]


@dataclass
class Keys:
    """The three keys of a world."""

    log: SoftwareSigner
    root: SoftwareSigner
    maint: SoftwareSigner

    @classmethod
    def load(cls, directory: Path) -> Keys:
        """Read the keys written by :func:`build_world`."""
        return cls(*(SoftwareSigner.from_pem((directory / f"{n}.pem").read_bytes())
                     for n in ("log", "root", "maint")))


def attestation(maint: Signer, n: int) -> Envelope:
    """A release attestation for artefact ``pkg-<n>``, signed by ``maint``."""
    digest = hashlib.sha256(f"artefact {n}".encode()).hexdigest()
    return sign_envelope(INTOTO, make_statement(subject=Artefact(f"pkg-{n}", digest)), [maint])


def rid_of(env: Envelope) -> str:
    """The record id (hex) an envelope is logged under."""
    return record_id(env.payload_type, env.payload).hex()


def open_holdings(directory: Path, keys: Keys | None = None) -> Holdings:
    """Open a world's store as the node does at start (replays every log)."""
    keys = keys or Keys.load(directory)
    return Holdings.open(directory / "db", origin=ORIGIN, signer=keys.log,
                         roots=RootsPolicy.any_self_signed())


def build_world(directory: Path, attestations: int) -> dict[int, str]:
    """Create a world: a root, a delegation and ``attestations`` release records.

    Returns the acknowledged record id at every index (also written to ``acks.json``).
    """
    directory.mkdir(parents=True)
    keys = Keys(SoftwareSigner.generate(), SoftwareSigner.generate(), SoftwareSigner.generate())
    for name, key in (("log", keys.log), ("root", keys.root), ("maint", keys.maint)):
        (directory / f"{name}.pem").write_bytes(key.to_pem())
    envs = [
        sign_record(RootRecord("rel", keys.root.public_key, False, 1), [keys.root]),
        sign_record(Delegation(issuer=keys.root.key_id, subject=keys.maint.public_key, name="maint",
                               org="rel", artefacts=("pkg-*",), purposes=("release",), max_depth=0,
                               not_before=0, not_after=None, created=1), [keys.root]),
    ]
    acks: dict[int, str] = {}
    with Holdings.open(directory / "db", origin=ORIGIN, signer=keys.log,
                       roots=RootsPolicy.any_self_signed(), create=True) as holdings:
        log = holdings.own
        assert log is not None
        for env in envs:
            res = log.append(env)
            acks[res.index] = rid_of(env)
        for i in range(attestations):
            env = attestation(keys.maint, i)
            res = log.append(env)
            acks[res.index] = rid_of(env)
    write_acks(directory, acks)
    return acks


def extend_world(directory: Path, attestations: int, *, first: int = 1000) -> dict[int, str]:
    """Reopen a world and append ``attestations`` more (so LevelDB holds a table and a log)."""
    acks = read_acks(directory)
    keys = Keys.load(directory)
    with open_holdings(directory, keys) as holdings:
        log = holdings.own
        assert log is not None
        for i in range(attestations):
            env = attestation(keys.maint, first + i)
            acks[log.append(env).index] = rid_of(env)
    write_acks(directory, acks)
    return acks


def drop_latest_checkpoint(directory: Path) -> int:
    """Delete the checkpoint of the head's size, as a crash after the entries' batch would.

    Returns the head size.
    """
    db = plyvel.DB(str(directory / "db"), paranoid_checks=True)
    try:
        space = db.prefixed_db(log_prefix())
        size = int(max(_U64.unpack(k[1:9])[0] for k, _ in space.iterator(prefix=b"c")))
        space.delete(b"c" + _U64.pack(size), sync=True)
    finally:
        db.close()
    return size


def write_acks(directory: Path, acks: dict[int, str]) -> None:
    """Record the acknowledged ids of a world (after a test extends it)."""
    (directory / "acks.json").write_text(json.dumps({str(k): v for k, v in sorted(acks.items())}))


def read_acks(directory: Path) -> dict[int, str]:
    """The acknowledged record id at every index of a world."""
    return {int(k): v for k, v in json.loads((directory / "acks.json").read_text()).items()}


def copy_world(src: Path, dst: Path) -> Path:
    """A fresh copy of a world (``dst`` must not exist)."""
    shutil.copytree(src, dst)
    return dst


def audit(log: Log) -> AuditReport:
    """The from-scratch audit of a log, with the same rules the node appends by."""
    return audit_log(log.store, vkey=log.vkey, new_gate=lambda: LogGate(RootsPolicy.any_self_signed()),
                     prepare=lambda gate, entry: logged_from_entry(gate, log.origin, entry))


def raw_keys(db_path: Path, origin: str = ORIGIN) -> Iterator[tuple[bytes, bytes]]:
    """Every key/value of a log's key space, read straight from a closed LevelDB."""
    db = plyvel.DB(str(db_path), paranoid_checks=True)
    try:
        yield from db.prefixed_db(log_prefix(origin)).iterator(verify_checksums=True)
    finally:
        db.close()


@dataclass
class Outcome:
    """What :func:`check_world` found."""

    size: int
    root: bytes
    checkpoint_sizes: list[int]
    pending_present: bool | None = None
    notes: list[str] = field(default_factory=list)


def check_world(directory: Path, acked: dict[int, str], *, pending: str | None = None,
                acked_notes: dict[int, str] | None = None) -> Outcome:
    """Open a world after a fault and check every S1/S2/S3 invariant (see the module doc).

    Args:
        directory: the world.
        acked: record id (hex) acknowledged at each index.
        pending: the record id of the one unacknowledged append, if any.
        acked_notes: signed checkpoints acknowledged, by size; each must be stored as is.

    Raises:
        AssertionError: an invariant does not hold (the message says which).
        TurtlesError: the store does not open (the caller decides whether that is allowed).
    """
    with open_holdings(directory) as holdings:
        log = holdings.own
        assert log is not None
        report = audit(log)
        size = log.size
        for index, rid in sorted(acked.items()):
            assert index < size, f"acknowledged entry {index} lost (size {size})"
            got = Entry.from_bytes(log.store.entry(index)).record_id.hex()
            assert got == rid, f"acknowledged record at {index} is now another record"
        note = log.checkpoint()
        assert note is not None, "the log serves no checkpoint"
        cp = Checkpoint.parse(open_note(note, log.vkey))
        assert (cp.size, cp.root) == (size, log.head.root), "served checkpoint is not the head"
        stored = [n for n, _ in log.store.checkpoints()]
        for n, acked_note in (acked_notes or {}).items():
            assert log.store.checkpoint(n) == acked_note, f"acknowledged checkpoint {n} not kept as signed"
        outcome = Outcome(size, log.head.root, stored)
        if pending is not None:
            places = [seq for seq, _ in log.store.by_record_id(bytes.fromhex(pending))]
            assert len(places) <= 1, f"pending record stored at {places}"
            outcome.pending_present = bool(places)
            if places:
                assert places == [size - 1], f"pending record at {places}, head size {size}"
        assert report.size == size
    _check_nothing_past_head(directory / "db", size, pending)
    return outcome


def _check_nothing_past_head(db_path: Path, size: int, pending: str | None) -> None:
    """No entry, hash, index row or checkpoint refers to a position at or past the head."""
    for key, _ in raw_keys(db_path):
        kind = key[:1]
        if kind in (b"e", b"c"):
            seq = _U64.unpack(key[1:9])[0]
            limit = size if kind == b"e" else size + 1
            assert seq < limit, f"{kind!r} key {seq} stored past the head (size {size})"
        elif kind == b"h":
            level, idx = key[1], _U64.unpack(key[2:10])[0]
            assert (idx + 1) << level <= size, f"hash ({level}, {idx}) stored past the head (size {size})"
        elif kind in (b"r", b"a", b"k"):
            seq = _U64.unpack(key[-8:])[0]
            assert seq < size, f"index row {kind!r} for {seq} stored past the head (size {size})"
        if pending is not None and kind == b"r" and key[1:33] == bytes.fromhex(pending):
            assert _U64.unpack(key[-8:])[0] == size - 1


def retry_append(directory: Path, env: Envelope, base: int) -> tuple[int, bool]:
    """Re-submit ``env`` after a restart: it must land at ``base`` exactly once.

    Returns (index, duplicate). Raises AssertionError otherwise.
    """
    with open_holdings(directory) as holdings:
        log = holdings.own
        assert log is not None
        before = log.size
        res = log.append(env, timeout=30)
        assert res.index == base, f"retry landed at {res.index}, want {base}"
        assert log.size == base + 1, f"retry left size {log.size}, want {base + 1}"
        assert res.duplicate == (before == base + 1)
        audit(log)
        return res.index, res.duplicate


def metric(client: NodeClient, name: str) -> dict[str, float]:
    """Samples of metric ``name`` from a node's ``/metrics``: labels text -> value."""
    text = client.request("GET", "/metrics").body.decode()
    found = re.findall(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", text, re.M)
    return {labels: float(value) for labels, value in found}


__all__ = [
    "ORIGIN",
    "ROOT_DIR",
    "Keys",
    "Outcome",
    "attestation",
    "audit",
    "build_world",
    "check_world",
    "copy_world",
    "drop_latest_checkpoint",
    "extend_world",
    "log_prefix",
    "metric",
    "open_holdings",
    "raw_keys",
    "read_acks",
    "retry_append",
    "rid_of",
    "write_acks",
]
