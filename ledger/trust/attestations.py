"""Where a :class:`~ledger.trust.TrustGraph` finds attestations: a pluggable index.

Attestations are the bulk of every log (one or more per release), so a node must not
hold them in memory (RELIABILITY P6); the store already indexes them by subject digest
and by key. The graph therefore asks an :class:`AttestationIndex` instead of keeping its
own lists. :class:`MemoryAttestationIndex` is the default, for graphs built without a
store (bundles, tests); the store-backed one lives with the store
(:class:`ledger.holdings.StoreAttestationIndex`), so this package stays free of I/O.

Invariants:
* The graph calls :meth:`AttestationIndex.add` once per entry ``(origin, index)``, only
  for attestations with at least one signer, holding its lock.
* Every record returned is :func:`lean`: the decoded statement is dropped (trust needs
  subjects, materials and builder only), whichever index answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.keys import KeyId

_EMPTY: tuple[LoggedRecord, ...] = ()


class AttestationIndex(Protocol):
    """Attestations by subject digest and by signer."""

    def add(self, rec: LoggedRecord) -> None:
        """Take a new attestation with at least one signer (called once per entry)."""

    def for_digest(self, sha256_hex: str) -> Sequence[LoggedRecord]:
        """Attestations with a subject of this digest (64 lowercase hex digits)."""

    def by_signer(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Attestations signed by ``key_id``."""


def lean(rec: LoggedRecord) -> LoggedRecord:
    """``rec`` without the decoded in-toto statement (kilobytes per release)."""
    r = rec.record
    if isinstance(r, Attestation) and r.statement:
        return replace(rec, record=replace(r, statement={}))
    return rec


class MemoryAttestationIndex:
    """Every attestation in memory, one list per digest and per signer (in order added)."""

    def __init__(self) -> None:
        self._by_digest: dict[str, list[LoggedRecord]] = {}
        self._by_signer: dict[str, list[LoggedRecord]] = {}

    def add(self, rec: LoggedRecord) -> None:
        """Index ``rec`` under each distinct subject digest and each signer."""
        r = rec.record
        if not isinstance(r, Attestation):
            raise TypeError(f"not an attestation: {r.kind}")
        rec = lean(rec)
        for digest in {s.sha256 for s in r.subjects}:
            self._by_digest.setdefault(digest, []).append(rec)
        for kid in rec.signers:
            self._by_signer.setdefault(kid, []).append(rec)

    def for_digest(self, sha256_hex: str) -> Sequence[LoggedRecord]:
        """Attestations with a subject of this digest."""
        return self._by_digest.get(sha256_hex, _EMPTY)

    def by_signer(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Attestations signed by ``key_id``."""
        return self._by_signer.get(key_id, _EMPTY)


__all__ = ["AttestationIndex", "MemoryAttestationIndex", "lean"]
