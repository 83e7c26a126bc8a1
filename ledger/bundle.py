"""Offline verification bundles: one JSON file with everything needed to verify an artefact.

A bundle holds, for one artefact digest: the exact leaf bytes of its attestations and of
every key record that can lie on their trust paths (roots, delegations, rotations,
endorsements, and the revocations of those keys), an RFC 9162 inclusion proof for each,
the signed checkpoint of each log the proofs lead to (with witness cosignatures), each
log's verifier key, and the cosigner keys of those witnesses. See ``docs/bundles.md``.

Invariants:
* One byte form: :meth:`Bundle.to_bytes` is canonical JSON (sorted keys, no spaces, ASCII,
  one final newline; records sorted by origin and index; logs by origin; canonical
  base64), and :meth:`Bundle.from_bytes` accepts exactly that form, so changing any byte
  of a bundle either breaks parsing or changes a value that a signature or proof covers.
* Leaf bytes are kept exactly as the log stored them; nothing is re-encoded to verify.
* :func:`check_bundle` trusts nothing in the bundle by itself: it checks that each note is
  signed by the key the bundle names for its log, that EVERY signature line of every note
  verifies with a key the bundle carries, and that every record is included in its log's
  checkpoint. Whether a log key or witness is *trusted* is the verifier's decision
  (:mod:`ledger.verify`), made against the consumer's policy.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger import merkle
from ledger.checkpoint import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Checkpoint,
    NoteVerifier,
    parse_verifier_key,
    split_note,
    verify_note,
)
from ledger.entry import Entry, LoggedRecord, parse_record
from ledger.errors import (
    EncodingError,
    InputError,
    KeyFormatError,
    NoteError,
    NotFoundError,
    ProofError,
    SignatureError,
    TooLargeError,
    TurtlesError,
)
from ledger.keys import KeyId, PublicKey
from ledger.reader import LogReader
from ledger.records import Delegation, Endorsement, RootRecord, Rotation
from ledger.trust.graph import TrustGraph

BUNDLE_FORMAT = "https://turtles.dev/bundle/v1"
MAX_BUNDLE_BYTES = 64 << 20
MAX_RECORDS = 4096
MAX_LOGS = 256
MAX_WITNESSES = 64
MAX_PROOF_HASHES = 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset({"artefact", "format", "logs", "records", "witnesses"})
_LOG_FIELDS = frozenset({"checkpoint", "origin", "vkey"})
_RECORD_FIELDS = frozenset({"entry", "index", "origin", "proof"})


# --- the format ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundledLog:
    """A log the bundle's proofs lead to: its origin, verifier key and signed checkpoint."""

    origin: str
    vkey: str
    checkpoint: str


@dataclass(frozen=True)
class BundledRecord:
    """One log entry: exact leaf bytes and the proof of its inclusion in its log's checkpoint."""

    origin: str
    index: int
    entry: bytes
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Bundle:
    """An offline verification bundle for the artefact ``artefact`` (64 lowercase hex)."""

    artefact: str
    logs: tuple[BundledLog, ...]
    records: tuple[BundledRecord, ...]
    witnesses: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (bytes as canonical standard base64)."""
        return {
            "artefact": "sha256:" + self.artefact,
            "format": BUNDLE_FORMAT,
            "logs": [{"checkpoint": g.checkpoint, "origin": g.origin, "vkey": g.vkey} for g in self.logs],
            "records": [
                {"entry": _b64(r.entry), "index": r.index, "origin": r.origin, "proof": [_b64(p) for p in r.proof]}
                for r in self.records
            ],
            "witnesses": list(self.witnesses),
        }

    def to_bytes(self) -> bytes:
        """The canonical file form."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return text.encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Bundle:
        """Parse a bundle file strictly.

        Raises:
            TooLargeError: over :data:`MAX_BUNDLE_BYTES` or a count limit.
            EncodingError: not canonical bundle JSON (names the offending field).
        """
        if len(data) > MAX_BUNDLE_BYTES:
            raise TooLargeError(f"bundle has {len(data)} bytes, limit {MAX_BUNDLE_BYTES}")
        try:
            obj = json.loads(data, object_pairs_hook=_no_dup, parse_float=_refuse, parse_constant=_refuse)
        except (ValueError, RecursionError) as e:
            raise EncodingError(f"bundle is not valid JSON: {str(e)[:200]}") from e
        bundle = cls._from_obj(obj)
        if bundle.to_bytes() != data:
            raise EncodingError(
                "bundle is not in canonical form (bytes were changed after it was written)",
                hint="bundles are written by `turtles bundle`; do not edit them",
            )
        return bundle

    @classmethod
    def _from_obj(cls, obj: Any) -> Bundle:
        _fields(obj, _FIELDS, "bundle")
        if obj["format"] != BUNDLE_FORMAT:
            raise EncodingError(f"bundle.format: {str(obj['format'])[:80]!r} is not {BUNDLE_FORMAT}")
        artefact = obj["artefact"]
        if not isinstance(artefact, str) or not artefact.startswith("sha256:") or not _HEX64.fullmatch(artefact[7:]):
            raise EncodingError("bundle.artefact: want sha256:<64 lowercase hex>")
        logs = _list(obj["logs"], "bundle.logs", MAX_LOGS)
        records = _list(obj["records"], "bundle.records", MAX_RECORDS)
        witnesses = _list(obj["witnesses"], "bundle.witnesses", MAX_WITNESSES)
        return cls(
            artefact[7:],
            tuple(_log(g, f"bundle.logs[{i}]") for i, g in enumerate(logs)),
            tuple(_record(r, f"bundle.records[{i}]") for i, r in enumerate(records)),
            tuple(_text(w, f"bundle.witnesses[{i}]") for i, w in enumerate(witnesses)),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise EncodingError(f"{where}: want a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise EncodingError(f"{where}: not base64") from e
    return raw


def _no_dup(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _refuse(text: str) -> Any:
    raise ValueError(f"number {text[:40]} is not an integer")


def _fields(obj: Any, want: frozenset[str], where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != want:
        raise EncodingError(f"{where}: want an object with exactly {', '.join(sorted(want))}")


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise EncodingError(f"{where}: want a list")
    if len(value) > limit:
        raise TooLargeError(f"{where}: {len(value)} items, limit {limit}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise EncodingError(f"{where}: want a non-empty string")
    return value


def _log(obj: Any, where: str) -> BundledLog:
    _fields(obj, _LOG_FIELDS, where)
    return BundledLog(
        _text(obj["origin"], f"{where}.origin"), _text(obj["vkey"], f"{where}.vkey"),
        _text(obj["checkpoint"], f"{where}.checkpoint"),
    )


def _record(obj: Any, where: str) -> BundledRecord:
    _fields(obj, _RECORD_FIELDS, where)
    index = obj["index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= merkle.MAX_TREE_SIZE:
        raise EncodingError(f"{where}.index: want a non-negative integer")
    proof = _list(obj["proof"], f"{where}.proof", MAX_PROOF_HASHES)
    return BundledRecord(
        _text(obj["origin"], f"{where}.origin"), index, _unb64(obj["entry"], f"{where}.entry"),
        tuple(_unb64(p, f"{where}.proof[{j}]") for j, p in enumerate(proof)),
    )


# --- building a bundle from what a node holds -------------------------------------------------


class Holder(Protocol):
    """What :func:`build_bundle` reads: the global graph and each log (``ledger.holdings.Holdings``)."""

    @property
    def graph(self) -> TrustGraph:
        """The trust graph over every log held."""
        ...

    def reader(self, origin: str) -> LogReader:
        """The log named ``origin``."""
        ...


def build_bundle(
    holder: Holder,
    artefact: str,
    *,
    notes: Mapping[str, str] | None = None,
    witnesses: Sequence[str] = (),
    max_records: int = MAX_RECORDS,
) -> Bundle:
    """Collect a bundle for ``artefact`` (``sha256:<hex>`` or hex) from the logs held.

    Args:
        holder: the node's holdings.
        artefact: the digest.
        notes: a signed checkpoint to use per origin (e.g. the own log's note with the
            cosignatures the witness code gathered); otherwise the log's latest stored one.
        witnesses: cosigner vkeys (tlog-cosignature/v1) known to the node. Cosignature
            lines by other keys are dropped from the notes, so that every line left in
            the bundle can be verified with a key it carries.
        max_records: the most records a bundle may hold.

    Raises:
        NotFoundError: no log held has an attestation of ``artefact``.
        TooLargeError: the trust paths need more than ``max_records`` records.
    """
    digest = artefact.removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise InputError(f"not a sha256 digest: {artefact[:80]!r}")
    graph = holder.graph
    attestations = graph.attestations_for(digest)
    if not attestations:
        raise NotFoundError(f"no attestation in any log held has subject sha256:{digest}")
    chosen: dict[tuple[str, int], LoggedRecord] = {}
    _add(chosen, attestations, max_records)
    keys: list[KeyId] = [k for rec in attestations for k in rec.signers]
    seen_keys: set[KeyId] = set()
    log_keys: dict[str, KeyId] = {}
    witness_verifiers = [_verifier(v, ALG_COSIGNATURE_V1, "witness vkey") for v in witnesses]
    while keys:
        _close_over_keys(graph, keys, seen_keys, chosen, max_records)
        for origin in sorted({o for o, _ in chosen} - set(log_keys)):
            log_keys[origin] = log_key_id(_vkey_of(holder.reader(origin)))
            keys.append(log_keys[origin])
    logs, records, used = _prove(holder, chosen, notes or {}, witness_verifiers)
    return Bundle(digest, logs, records, tuple(sorted(used)))


def _add(chosen: dict[tuple[str, int], LoggedRecord], recs: Iterable[LoggedRecord], limit: int) -> None:
    for rec in recs:
        chosen.setdefault((rec.origin, rec.index), rec)
    if len(chosen) > limit:
        raise TooLargeError(f"the trust paths need more than {limit} records", limit=limit)


def _close_over_keys(
    graph: TrustGraph, keys: list[KeyId], seen: set[KeyId], chosen: dict[tuple[str, int], LoggedRecord], limit: int
) -> None:
    """Add every record that introduces, limits or vouches for each key, walking up to roots."""
    while keys:
        key = keys.pop()
        if key in seen:
            continue
        seen.add(key)
        about = [
            *graph.roots_of(key), *graph.delegations_to(key), *graph.rotations_to(key),
            *graph.rotations_from(key), *graph.revocations_of(key), *graph.endorsements_of(key),
        ]
        _add(chosen, about, limit)
        for rec in about:
            r = rec.record
            if isinstance(r, Delegation):
                keys.append(r.issuer)
            elif isinstance(r, Rotation) and r.new.key_id == key:
                keys.append(r.old)
            elif isinstance(r, Endorsement):
                keys.append(r.endorser)


def _prove(
    holder: Holder,
    chosen: Mapping[tuple[str, int], LoggedRecord],
    notes: Mapping[str, str],
    witness_verifiers: Sequence[NoteVerifier],
) -> tuple[tuple[BundledLog, ...], tuple[BundledRecord, ...], set[str]]:
    logs: list[BundledLog] = []
    records: list[BundledRecord] = []
    used: set[str] = set()
    for origin in sorted({o for o, _ in chosen}):
        reader = holder.reader(origin)
        vkey = _vkey_of(reader)
        note = notes.get(origin)
        if note is None:
            latest = reader.store.latest_checkpoint()
            if latest is None:
                continue
            note = latest[1]
        note, size, cosigners = _keep_verifiable(note, vkey, witness_verifiers)
        indexes = sorted(i for o, i in chosen if o == origin and i < size)
        if not indexes:
            continue
        used.update(cosigners)
        logs.append(BundledLog(origin, vkey, note))
        for i in indexes:
            raw = reader.store.entry(i)
            records.append(BundledRecord(origin, i, raw, tuple(reader.inclusion_proof(i, size))))
    return tuple(logs), tuple(records), used


def _keep_verifiable(
    note: str, vkey: str, witness_verifiers: Sequence[NoteVerifier]
) -> tuple[str, int, set[str]]:
    """``note`` with only the lines of the log key and known witnesses; its size; those witnesses."""
    log_verifier = parse_verifier_key(vkey)
    opened = verify_note(note, [log_verifier, *witness_verifiers])
    if log_verifier.name not in opened.verified_by:
        raise NoteError(f"the stored checkpoint of {log_verifier.name} is not signed by its log key")
    kept = [s for s in opened.signatures if s.verified]
    by_key = {(v.name, v.key_id): v.vkey for v in witness_verifiers}
    cosigners = {by_key[(s.name, s.key_id)] for s in kept if (s.name, s.key_id) in by_key}
    size = Checkpoint.parse(opened.text).size
    return opened.text + "\n" + "".join(s.line + "\n" for s in kept), size, cosigners


def _vkey_of(reader: LogReader) -> str:
    meta = reader.store.meta() or {}
    vkey = meta.get("vkey")
    if not isinstance(vkey, str):
        raise NotFoundError(f"log {reader.origin} has no verifier key in its meta")
    return vkey


def _verifier(vkey: str, alg: int, what: str) -> NoteVerifier:
    try:
        v = parse_verifier_key(vkey)
    except KeyFormatError as e:
        raise NoteError(f"{what} {vkey[:120]!r}: {e.message}") from e
    if v.alg != alg:
        raise NoteError(f"{what} {vkey[:120]!r} has signature type 0x{v.alg:02x}, want 0x{alg:02x}")
    return v


def log_key_id(vkey: str) -> KeyId:
    """The ledger key id (``sha256:`` of the DER SPKI) of the Ed25519 key behind a log vkey.

    This is the id a ``delegation`` with purpose ``log`` names as its subject.

    Raises:
        NoteError: not an Ed25519 (type 0x01) vkey.
    """
    return PublicKey.from_raw_ed25519(_verifier(vkey, ALG_ED25519, "log vkey").public_raw).key_id


# --- checking a bundle ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cosignature:
    """A verified witness cosignature on a log's checkpoint (``timestamp`` in POSIX seconds)."""

    name: str
    vkey: str
    timestamp: int


@dataclass(frozen=True)
class CheckedLog:
    """A log of the bundle whose checkpoint note verified with the bundled vkey.

    ``key_id`` is the ledger key id of the log key (see :func:`log_key_id`).
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
    witness_verifiers = [_verifier(v, ALG_COSIGNATURE_V1, "bundle witness") for v in bundle.witnesses]
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
    verifier = _verifier(log.vkey, ALG_ED25519, f"log {log.origin[:80]!r}")
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
    "BUNDLE_FORMAT",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "BundledLog",
    "BundledRecord",
    "CheckedBundle",
    "CheckedLog",
    "CheckedRecord",
    "Cosignature",
    "Holder",
    "build_bundle",
    "check_bundle",
    "log_key_id",
]
