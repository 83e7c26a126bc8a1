"""Offline verification bundles: one JSON file with everything needed to verify an artefact.

A bundle holds, for one artefact digest: the exact leaf bytes of its attestations and of
every key record that can lie on their trust paths (roots, delegations, rotations,
endorsements, and the revocations of those keys), an RFC 9162 inclusion proof for each,
the signed checkpoint of each log the proofs lead to (with witness cosignatures), each
log's verifier key, and the cosigner keys of those witnesses. See ``docs/bundles.md``.

The file format and its limits are in :mod:`ledger.bundle_format`, building a bundle from
a node's holdings in :mod:`ledger.bundle_build`, checking one in :mod:`ledger.bundle_check`;
every public name of those is re-exported here, so ``ledger.bundle`` stays the one import
for callers.

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

from ledger.bundle_build import Holder, build_bundle
from ledger.bundle_check import CheckedBundle, CheckedLog, CheckedRecord, Cosignature, check_bundle
from ledger.bundle_format import (
    BUNDLE_FORMAT,
    MAX_BUNDLE_BYTES,
    MAX_LOGS,
    MAX_PROOF_HASHES,
    MAX_RECORDS,
    MAX_WITNESSES,
    Bundle,
    BundledLog,
    BundledRecord,
    log_key_id,
    typed_verifier,
)

__all__ = [
    "BUNDLE_FORMAT",
    "MAX_BUNDLE_BYTES",
    "MAX_LOGS",
    "MAX_PROOF_HASHES",
    "MAX_RECORDS",
    "MAX_WITNESSES",
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
    "typed_verifier",
]
