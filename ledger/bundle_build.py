"""Building an offline bundle from the logs a node holds.

:func:`build_bundle` collects, for one artefact digest, its attestations and every key
record that can lie on their trust paths (roots, delegations, rotations, endorsements, and
the revocations of those keys, walking up to roots and to the keys of the logs involved),
proves each record's inclusion in its log's signed checkpoint, and writes the
:class:`~ledger.bundle_format.Bundle` that :mod:`ledger.bundle_check` checks.

Invariants:
* Leaf bytes are copied exactly as each log stored them; proofs are against the very
  checkpoint note the bundle carries.
* Every signature line left in a bundled note verifies with a key the bundle carries: the
  log's own key or a cosigner key the node knows; other lines are dropped, and a stored
  note not signed by its log key is refused.
* Records beyond a log's checkpoint are left out (they cannot be proven yet), and so is a
  log with no record left; the bundle holds at most ``max_records`` records.
* Reads only: nothing here writes to a log or decides trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ledger.bundle_format import (
    MAX_RECORDS,
    Bundle,
    BundledLog,
    BundledRecord,
    log_key_id,
    typed_verifier,
)
from ledger.checkpoint import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    NoteVerifier,
    parse_verifier_key,
    verify_note,
)
from ledger.entry import LoggedRecord
from ledger.errors import InputError, NoteError, NotFoundError, TooLargeError
from ledger.keys import KeyId
from ledger.reader import LogReader
from ledger.records import Delegation, Endorsement, Rotation
from ledger.trust.graph import TrustGraph

_HEX64 = re.compile(r"[0-9a-f]{64}")


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
    witness_verifiers = [typed_verifier(v, alg=ALG_COSIGNATURE_V1, what="witness vkey") for v in witnesses]
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


__all__ = ["Holder", "build_bundle"]
