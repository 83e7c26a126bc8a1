"""Checking an offline bundle: every note signature and every inclusion proof it carries.

Invariants:
* :func:`check_bundle` trusts nothing in the bundle by itself: it checks that each note is
  signed by the key the bundle names for its log, that EVERY signature line of every note
  verifies with a key the bundle carries, and that every record is included in its log's
  checkpoint at the index its entry states. Whether a log key or witness is *trusted* is
  the verifier's decision (:mod:`ledger.verify`), made against the consumer's policy.
* Beyond :meth:`~ledger.bundle_format.Bundle.from_bytes`, the layout is canonical: one log
  per origin, sorted by origin; distinct records sorted by origin and index; every log with
  a record and every record with its log; distinct sorted witness keys, each of which
  cosigns some checkpoint.
* Cheap checks come first (hashing), signatures last, so a tampered bundle costs little
  to refuse; a cosignature dated after the verification time is refused.
* A record whose signatures do not verify is still returned, with no signers and its
  ``problem``: it proves inclusion, not authorship.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger import merkle
from ledger.bundle_format import Bundle, BundledLog, BundledRecord, log_key_id, typed_verifier
from ledger.checkpoint import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    NoteVerifier,
    split_note,
    verify_note,
)
from ledger.entry import Entry, LoggedRecord, parse_record
from ledger.errors import (
    EncodingError,
    InputError,
    NoteError,
    ProofError,
    SignatureError,
    TurtlesError,
)
from ledger.keys import KeyId, PublicKey
from ledger.records import Delegation, RootRecord, Rotation


@dataclass(frozen=True)
class Cosignature:
    """A verified witness cosignature on a log's checkpoint (``timestamp`` in POSIX seconds)."""

    name: str
    vkey: str
    timestamp: int


@dataclass(frozen=True)
class CheckedLog:
    """A log of the bundle whose checkpoint note verified with the bundled vkey.

    ``key_id`` is the ledger key id of the log key (see :func:`~ledger.bundle_format.log_key_id`).
    """

    origin: str
    vkey: str
    key_id: KeyId
    checkpoint: Checkpoint
    note: str
    cosignatures: tuple[Cosignature, ...]


@dataclass(frozen=True)
class CheckedRecord:
    """A record proven included in its log's checkpoint.

    ``logged.signers`` are the keys (introduced by records of this bundle) whose signatures
    verified; ``problem`` says why none did, when that is so.
    """

    logged: LoggedRecord
    proof: tuple[bytes, ...]
    tree_size: int
    root: bytes
    problem: str | None = None


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle whose notes and proofs verified (trust in its log keys is yet to decide)."""

    artefact: str
    logs: tuple[CheckedLog, ...]
    records: tuple[CheckedRecord, ...]

    def log(self, origin: str) -> CheckedLog:
        """The checked log named ``origin``."""
        return next(g for g in self.logs if g.origin == origin)


def check_bundle(bundle: Bundle, *, now: int) -> CheckedBundle:
    """Check every note signature and inclusion proof of ``bundle``.

    Args:
        bundle: a parsed bundle.
        now: the verification time, Unix ms (cosignatures dated after it are refused).

    Raises:
        NoteError: a note is not signed by its log's vkey, carries a line no bundled key
            verifies, or a cosignature from the future.
        ProofError: an entry is not included in its log's checkpoint, or sits at another index.
        InputError: malformed entries, duplicate or unused logs, unsorted records.
    """
    origins = [g.origin for g in bundle.logs]
    if origins != sorted(set(origins)):
        raise EncodingError("bundle.logs: want one entry per origin, sorted by origin")
    keys = [(r.origin, r.index) for r in bundle.records]
    if keys != sorted(set(keys)):
        raise EncodingError("bundle.records: want distinct records sorted by origin and index")
    if {o for o, _ in keys} != set(origins):
        raise EncodingError("bundle: every log needs at least one record and every record its log")
    # Cheap checks first (hashing), signatures last: a tampered bundle costs little to refuse.
    bodies = {g.origin: _checkpoint_body(g) for g in bundle.logs}
    entries = [(r, _check_inclusion(r, bodies[r.origin])) for r in bundle.records]
    witness_verifiers = [
        typed_verifier(v, alg=ALG_COSIGNATURE_V1, what="bundle witness") for v in bundle.witnesses
    ]
    if len({(v.name, v.key_id) for v in witness_verifiers}) != len(witness_verifiers):
        raise NoteError("bundle lists a witness key twice")
    logs = {g.origin: _check_log(g, witness_verifiers, now) for g in bundle.logs}
    cosigners = {c.vkey for g in logs.values() for c in g.cosignatures}
    idle = [v for v in bundle.witnesses if v not in cosigners]
    if idle or list(bundle.witnesses) != sorted(set(bundle.witnesses)):
        raise EncodingError(
            "bundle.witnesses: want distinct sorted vkeys, each cosigning a checkpoint"
            + (f" ({idle[0][:80]} cosigns none)" if idle else "")
        )
    known = _introduced_keys(entries)
    records = tuple(_checked_record(r, entry, logs[r.origin].checkpoint, known) for r, entry in entries)
    return CheckedBundle(bundle.artefact, tuple(logs[o] for o in sorted(logs)), records)


def _checkpoint_body(log: BundledLog) -> Checkpoint:
    """The checkpoint a note states, not yet trusted (its signatures are checked later)."""
    try:
        text, _ = split_note(log.checkpoint)
    except NoteError as e:
        raise NoteError(f"log {log.origin[:80]}: checkpoint note: {e.message}") from e
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != log.origin:
        raise NoteError(f"log {log.origin[:80]}: checkpoint names origin {checkpoint.origin[:80]!r}")
    return checkpoint


def _check_log(log: BundledLog, witness_verifiers: Sequence[NoteVerifier], now: int) -> CheckedLog:
    verifier = typed_verifier(log.vkey, alg=ALG_ED25519, what=f"log {log.origin[:80]!r}")
    if verifier.name != log.origin:
        raise NoteError(f"log {log.origin[:80]!r}: its vkey is for {verifier.name[:80]!r}")
    try:
        opened = verify_note(log.checkpoint, [verifier, *witness_verifiers], now=now // 1000)
    except NoteError as e:
        raise NoteError(f"log {log.origin}: checkpoint note: {e.message}") from e
    if log.origin not in opened.verified_by:
        raise NoteError(f"log {log.origin}: checkpoint is not signed by the log's key {log.vkey}")
    unverified = [s for s in opened.signatures if not s.verified]
    if unverified:
        raise NoteError(
            f"log {log.origin}: checkpoint carries a signature by {unverified[0].name} that no key "
            "in the bundle verifies"
        )
    checkpoint = Checkpoint.parse(opened.text)
    by_key = {(v.name, v.key_id): v.vkey for v in witness_verifiers}
    cosigs = tuple(
        Cosignature(s.name, by_key[(s.name, s.key_id)], s.timestamp)
        for s in opened.signatures
        if s.timestamp is not None and (s.name, s.key_id) in by_key
    )
    return CheckedLog(log.origin, log.vkey, log_key_id(log.vkey), checkpoint, log.checkpoint, cosigs)


def _check_inclusion(rec: BundledRecord, checkpoint: Checkpoint) -> Entry:
    """The entry, once its leaf hash is proven at its index (hashing before parsing)."""
    where = f"record {rec.origin}#{rec.index}"
    try:
        merkle.verify_inclusion(merkle.leaf_hash(rec.entry), rec.index, checkpoint.size, rec.proof, checkpoint.root)
    except ProofError as e:
        raise ProofError(
            f"{where}: not included in the checkpoint of size {checkpoint.size}: {e.message}", **e.evidence
        ) from e
    try:
        entry = Entry.from_bytes(rec.entry)
    except TurtlesError as e:
        raise EncodingError(f"{where}: entry bytes are not a log entry: {e.message}") from e
    if entry.seq != rec.index:
        raise ProofError(f"{where}: the entry says it is at index {entry.seq}")
    return entry


def _introduced_keys(entries: Sequence[tuple[BundledRecord, Entry]]) -> dict[KeyId, PublicKey]:
    """Every public key a bundled record carries (roots, delegation subjects, rotation targets)."""
    keys: dict[KeyId, PublicKey] = {}
    for _, entry in entries:
        try:
            r = parse_record(entry.envelope)
        except InputError:
            continue
        key = r.key if isinstance(r, RootRecord) else r.subject if isinstance(r, Delegation) else (
            r.new if isinstance(r, Rotation) else None
        )
        if key is not None:
            keys[key.key_id] = key
    return keys


def _checked_record(
    rec: BundledRecord, entry: Entry, checkpoint: Checkpoint, known: Mapping[KeyId, PublicKey]
) -> CheckedRecord:
    try:
        record = parse_record(entry.envelope)
    except InputError as e:
        raise EncodingError(f"record {rec.origin}#{rec.index}: {e.message}") from e
    problem = None
    try:
        signers = entry.envelope.verify(known)
    except SignatureError as e:
        signers, problem = (), e.message
    logged = LoggedRecord(rec.origin, rec.index, entry.ts, entry.leaf_hash, signers, record, entry.record_id)
    return CheckedRecord(logged, rec.proof, checkpoint.size, checkpoint.root, problem)


__all__ = [
    "CheckedBundle",
    "CheckedLog",
    "CheckedRecord",
    "Cosignature",
    "check_bundle",
]
