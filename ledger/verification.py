"""Verifying one envelope or one log entry: the check every append, mirror and audit shares.

:func:`verify_envelope` checks the signatures over the exact PAE bytes with the keys the
:class:`Gatekeeper` knows (a ``root`` or ``rotation`` record also carries the key that
signs it), parses the record and checks the signers its kind requires;
:func:`logged_from_entry` adds admission at the entry's own integration time;
:func:`index_rows` says which index rows a verified record gets in the store.

Invariant: the log, the mirror and the audit call these and nothing else to decide whether
a record is acceptable, so the three can never disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ledger.attestation import Attestation
from ledger.encoding import encode
from ledger.entry import Entry, LoggedRecord, Record, parse_record, record_id
from ledger.envelope import Envelope
from ledger.errors import SignatureError
from ledger.keys import KeyId, PublicKey
from ledger.records import RootRecord, Rotation, parse_key_record, required_signers
from ledger.store_keys import (
    index_head,
    key_index_head,
    key_index_key,
    record_head,
    record_key,
    row_key,
)

Rows = tuple[tuple[bytes, bytes], ...]


class Gatekeeper(Protocol):
    """The trust state a log consults: which keys exist and who may append what.

    ``ledger.trust`` provides the implementation; a log only needs these three calls.
    """

    def public_key(self, key_id: KeyId) -> PublicKey | None:
        """The key with this id, if any record held so far introduced it."""
        ...

    def admit(self, *, record: Record, signers: tuple[KeyId, ...], origin: str, at: int) -> None:
        """Raise a NotAdmittedError subclass unless ``signers`` may append ``record`` at ``at``."""
        ...

    def add(self, rec: LoggedRecord) -> None:
        """Take a durable record into the trust state."""
        ...


_SELF_KEYED = frozenset((RootRecord.payload_type(), Rotation.payload_type()))


@dataclass(frozen=True)
class Prepared:
    """A submission whose signatures and record verified (admission still to come)."""

    envelope: Envelope
    record: Record
    signers: tuple[KeyId, ...]
    record_id: bytes
    heads: Rows = field(default=(), compare=False)
    """The record's index rows made ahead (by a worker process, see :func:`attestation_heads`):
    each row's key without its ``seq`` suffix (:func:`ledger.store_keys.row_key`) and its value;
    empty: :func:`index_rows` makes them."""

    @classmethod
    def made(cls, envelope: Envelope, record: Record, signers: tuple[KeyId, ...], record_id: bytes,
             heads: Rows = ()) -> Prepared:
        """``Prepared(envelope, record, signers, record_id, heads)`` without the frozen
        dataclass ``__init__`` (one call per field): for :mod:`ledger.procverify`, per envelope."""
        p: Prepared = object.__new__(cls)
        object.__setattr__(p, "__dict__", {"envelope": envelope, "record": record, "signers": signers,
                                           "record_id": record_id, "heads": heads})
        return p


def verify_envelope(gate: Gatekeeper, envelope: Envelope) -> Prepared:
    """Verify an envelope's signatures and parse its record; safe to call from many threads.

    Keys come from ``gate``; a ``root`` or ``rotation`` record also carries the key that
    signs it. This is the one verification every append, mirror and audit goes through.

    Raises:
        SignatureError: no signature by a known key, or a known key's signature is bad,
            or a signer the record kind requires did not sign.
        RecordError, EncodingError: the payload is not a valid record.
    """
    keys: dict[KeyId, PublicKey] = {}
    for s in envelope.signatures:
        key = gate.public_key(KeyId(s.keyid))
        if key is not None:
            keys[key.key_id] = key
    embedded: Record | None = None
    if envelope.payload_type in _SELF_KEYED:
        # These records carry the key that signs them; the strict decoder is safe on
        # hostile bytes, so parsing before verifying is bounded here.
        embedded = parse_key_record(envelope.payload_type, envelope.payload)
        new_key = embedded.key if isinstance(embedded, RootRecord) else embedded.new  # type: ignore[union-attr]
        keys[new_key.key_id] = new_key
    signers = envelope.verify(keys)
    record = embedded if embedded is not None else parse_record(envelope)
    if not isinstance(record, Attestation):
        missing = [k for k in required_signers(record) if k not in signers]
        if missing:
            raise SignatureError(
                f"{record.kind} record must be signed by {', '.join(missing)}", missing=missing
            )
    return Prepared(envelope, record, signers, record_id(envelope.payload_type, envelope.payload))


def logged_from_entry(gate: Gatekeeper, origin: str, entry: Entry) -> LoggedRecord:
    """Re-verify a stored or received entry and admit it at its own integration time.

    Raises:
        SignatureError, NotAdmittedError (and subclasses), RecordError: the entry's record
            would not have been appended by an honest log holding the same earlier records.
    """
    prepared = verify_envelope(gate, entry.envelope)
    gate.admit(record=prepared.record, signers=prepared.signers, origin=origin, at=entry.ts)
    return LoggedRecord(origin, entry.seq, entry.ts, entry.leaf_hash, prepared.signers,
                        prepared.record, prepared.record_id)


def index_rows(seq: int, prepared: Prepared) -> list[tuple[bytes, bytes]]:
    """The index rows (record id, artefact digests, key ids) stored with entry ``seq``."""
    heads = prepared.heads
    rec = prepared.record
    if not heads and isinstance(rec, Attestation):
        heads = attestation_heads(prepared.record_id, prepared.signers, [subject_head(s.sha256) for s in rec.subjects])
    if heads:
        return [(row_key(head, seq), value) for head, value in heads]
    rows = [(record_key(prepared.record_id, seq), _encode_signers(prepared.signers))]
    keys: set[str] = set(prepared.signers)
    if isinstance(rec, RootRecord):
        keys.add(rec.key.key_id)
    elif isinstance(rec, Rotation):
        keys.update((rec.old, rec.new.key_id))
    else:
        for attr in ("subject", "target", "root", "issuer", "endorser"):
            value = getattr(rec, attr, None)
            if isinstance(value, PublicKey):
                keys.add(value.key_id)
            elif isinstance(value, str):
                keys.add(value)
    rows += [(key_index_key(k, seq), b"") for k in sorted(keys)]
    return rows


def attestation_heads(record_id: bytes, signers: tuple[KeyId, ...], subjects: Iterable[bytes]) -> Rows:
    """An attestation's index rows without their ``seq`` suffix (see :attr:`Prepared.heads`):
    its record id with its signers, each subject (``subjects``: their :func:`subject_head`,
    in the record's order) and each signer's key id."""
    return ((record_head(record_id), _encode_signers(signers)), *[(head, b"") for head in subjects],
            *[(key_index_head(k), b"") for k in (signers if len(signers) == 1 else sorted(set(signers)))])


def subject_head(sha256: str) -> bytes:
    """The head (key without ``seq``) of the index row of an artefact digest (64 hex digits)."""
    return index_head(b"a", bytes.fromhex(sha256))


@functools.lru_cache(maxsize=1024)
def _encode_signers(signers: tuple[str, ...]) -> bytes:
    # Few distinct signer sets sign most records: encode each once.
    return encode(list(signers))


__all__ = ["Gatekeeper", "Prepared", "Rows", "attestation_heads", "index_rows", "logged_from_entry", "subject_head",
           "verify_envelope"]
