"""The trust graph: the key records and attestations of every log a node holds, indexed.

The graph stores facts and answers "which records touch key K / org O / digest D"; it
never decides trust (that is :mod:`ledger.trust.evaluate`). It is fed one
:class:`~ledger.entry.LoggedRecord` at a time, from the node's own log and from every
mirror, and is never rebuilt.

Invariants:
* :meth:`TrustGraph.add` is incremental and idempotent: an entry is identified by
  ``(origin, index)`` and a second add of it changes nothing. The same record held by two
  logs is two entries (two copies); queries choose between copies.
* A record is indexed only if the keys its kind requires signed it (the issuer of a
  delegation or revocation, the endorser, the root key itself, both keys of a rotation;
  at least one signer for an attestation). Anything else can never be a link, so it is
  counted in :meth:`TrustGraph.stats` as ``skipped`` and otherwise ignored.
* Indexes hold references to the caller's ``LoggedRecord`` objects (no copies), one list
  per key and relation, and one bit per entry for de-duplication, so the memory a record
  adds is a few pointers. Attestations go to an
  :class:`~ledger.trust.attestations.AttestationIndex` instead (in memory by default; a
  node passes one that reads its store, so a release costs one bit here).
* Each query method touches only the index entries of the key, org or digest it is asked
  about.
* Threads: mutations (:meth:`TrustGraph.add`, :meth:`TrustGraph.set_witnessed`,
  :meth:`TrustGraph.mark_equivocating`) take one lock, so several logs may feed the graph
  at once; queries take none -- indexes only ever grow by appends, which a reader sees
  whole or not at all.
* :attr:`TrustGraph.version` grows with every change that can alter an answer (an entry
  indexed, an origin marked equivocating, witness coverage grown), so a memo of answers
  (:mod:`ledger.trust.memo`) can tell that what it holds is stale.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence, Set
from types import MappingProxyType

from ledger.attestation import Attestation
from ledger.entry import LoggedRecord
from ledger.keys import KeyId, PublicKey
from ledger.records import Delegation, Endorsement, Revocation, RootRecord, Rotation
from ledger.trust.attestations import AttestationIndex, MemoryAttestationIndex

_Index = dict[str, list[LoggedRecord]]
_EMPTY: tuple[LoggedRecord, ...] = ()


def _push(index: _Index, key: str, rec: LoggedRecord) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = [rec]
    else:
        bucket.append(rec)


def digest_hex(digest: str) -> str:
    """``"sha256:<hex>"`` or ``"<hex>"`` -> ``"<hex>"`` (lowercase is not enforced here)."""
    return digest[7:] if digest.startswith("sha256:") else digest


class TrustGraph:
    """An incrementally built, indexed view of every key record and attestation held.

    Args:
        attestations: where attestations are indexed and looked up (default: in memory).
    """

    def __init__(self, attestations: AttestationIndex | None = None) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, bytearray] = {}
        self._keys: dict[KeyId, PublicKey] = {}
        self._roots: _Index = {}
        self._deleg_to: _Index = {}
        self._deleg_from: _Index = {}
        self._endorse_to: _Index = {}
        self._endorse_by: _Index = {}
        self._rot_to: _Index = {}
        self._rot_from: _Index = {}
        self._revoked: _Index = {}
        self._attestations = attestations if attestations is not None else MemoryAttestationIndex()
        self._org_roots: dict[str, list[KeyId]] = {}
        self._org_keys: dict[str, set[KeyId]] = {}
        self._key_org: dict[str, str] = {}
        self._equivocating: dict[str, object] = {}
        self._witnessed: dict[str, dict[str, int]] = {}
        self._version = 0
        self._counts: dict[str, int] = {
            "root": 0, "delegation": 0, "endorsement": 0, "revocation": 0, "rotation": 0,
            "attestation": 0, "skipped": 0, "duplicate": 0,
        }

    # --- feeding ---------------------------------------------------------------------

    def add(self, rec: LoggedRecord) -> bool:
        """Index one logged record.

        Returns:
            True if the entry was indexed; False if ``(origin, index)`` was already added,
            or the record lacks a signature its kind requires (counted as ``skipped``).
        """
        with self._lock:
            added = self._add(rec)
            if added:
                self._version += 1
            return added

    def _add(self, rec: LoggedRecord) -> bool:
        if self._mark_seen(rec.origin, rec.index):
            self._counts["duplicate"] += 1
            return False
        r = rec.record
        signers = rec.signers
        if isinstance(r, Attestation):
            if not signers:
                return self._skip()
            self._attestations.add(rec)
            self._counts["attestation"] += 1
            return True
        if isinstance(r, RootRecord):
            kid = r.key.key_id
            if kid not in signers:
                return self._skip()
            self._keys.setdefault(kid, r.key)
            _push(self._roots, kid, rec)
            roots = self._org_roots.setdefault(r.org, [])
            if kid not in roots:
                roots.append(kid)
            self._key_org[kid] = r.org
            self._org_keys.setdefault(r.org, set()).add(kid)
        elif isinstance(r, Delegation):
            if r.issuer not in signers:
                return self._skip()
            kid = r.subject.key_id
            self._keys.setdefault(kid, r.subject)
            _push(self._deleg_to, kid, rec)
            _push(self._deleg_from, r.issuer, rec)
            org = r.org if r.org is not None else self._key_org.get(r.issuer)
            if org is not None:
                self._key_org.setdefault(kid, org)
                self._org_keys.setdefault(org, set()).add(kid)
        elif isinstance(r, Endorsement):
            if r.endorser not in signers:
                return self._skip()
            _push(self._endorse_to, r.root, rec)
            _push(self._endorse_by, r.endorser, rec)
        elif isinstance(r, Revocation):
            if r.issuer not in signers:
                return self._skip()
            _push(self._revoked, r.target, rec)
        elif isinstance(r, Rotation):
            kid = r.new.key_id
            if r.old not in signers or kid not in signers:
                return self._skip()
            self._keys.setdefault(kid, r.new)
            _push(self._rot_to, kid, rec)
            _push(self._rot_from, r.old, rec)
        else:  # pragma: no cover - Record is a closed union
            return self._skip()
        self._counts[r.kind] += 1
        return True

    def _mark_seen(self, origin: str, index: int) -> bool:
        bits = self._seen.get(origin)
        if bits is None:
            bits = self._seen[origin] = bytearray()
        byte, bit = divmod(index, 8)
        if byte >= len(bits):
            bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
        if bits[byte] >> bit & 1:
            return True
        bits[byte] |= 1 << bit
        return False

    def _skip(self) -> bool:
        self._counts["skipped"] += 1
        return False

    def mark_equivocating(self, origin: str, evidence: object) -> None:
        """Record that ``origin`` showed two views that cannot both be true.

        From now on every record of that origin loses trust in every verdict (copies of
        the same record in other logs still count). ``evidence`` is kept as given.
        """
        with self._lock:
            if origin not in self._equivocating:
                self._equivocating[origin] = evidence
                self._version += 1

    def set_witnessed(self, origin: str, size: int, cosigners: Set[str]) -> None:
        """Entries ``0 <= index < size`` of ``origin`` are covered by a checkpoint of that
        size cosigned by ``cosigners`` (witness names). Coverage only ever grows."""
        with self._lock:
            seen = dict(self._witnessed.get(origin, {}))
            for w in cosigners:
                if seen.get(w, 0) < size:
                    seen[w] = size
            if seen != self._witnessed.get(origin, {}):
                self._witnessed[origin] = seen  # replaced whole: readers never see it change
                self._version += 1

    # --- queries ---------------------------------------------------------------------

    @property
    def version(self) -> int:
        """A counter that grows with every change that can alter an answer (see the module
        invariants); equal versions of one graph mean the same facts."""
        return self._version

    def public_key(self, key_id: KeyId | str) -> PublicKey | None:
        """The key with this id, if a root, delegation or rotation record introduced it."""
        return self._keys.get(KeyId(key_id))

    def key_table(self) -> dict[KeyId, PublicKey]:
        """Every key a root, delegation or rotation record introduced (a copy)."""
        return dict(self._keys)

    def knows_key(self, key_id: str) -> bool:
        """True if any record introduces, revokes or endorses ``key_id``."""
        k = KeyId(key_id)
        return k in self._keys or k in self._revoked or k in self._endorse_to or k in self._deleg_from

    def is_equivocating(self, origin: str) -> bool:
        """True once :meth:`mark_equivocating` was called for ``origin``."""
        return origin in self._equivocating

    def equivocations(self) -> Mapping[str, object]:
        """Evidence by equivocating origin (read-only)."""
        return MappingProxyType(self._equivocating)

    def witnesses(self, origin: str, index: int) -> frozenset[str]:
        """Witnesses whose cosigned checkpoints of ``origin`` cover entry ``index``."""
        seen = self._witnessed.get(origin)
        if not seen:
            return frozenset()
        return frozenset(w for w, size in seen.items() if size > index)

    def roots_of(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Root records declaring ``key_id`` a root (one per copy)."""
        return self._roots.get(key_id, _EMPTY)

    def delegations_to(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Delegations whose subject is ``key_id``."""
        return self._deleg_to.get(key_id, _EMPTY)

    def delegations_from(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Delegations issued by ``key_id``."""
        return self._deleg_from.get(key_id, _EMPTY)

    def endorsements_of(self, root: KeyId) -> Sequence[LoggedRecord]:
        """Endorsements of the root key ``root``."""
        return self._endorse_to.get(root, _EMPTY)

    def endorsements_by(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Endorsements made by ``key_id``."""
        return self._endorse_by.get(key_id, _EMPTY)

    def rotations_to(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Rotations whose new key is ``key_id``."""
        return self._rot_to.get(key_id, _EMPTY)

    def rotations_from(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Rotations handing ``key_id`` over to another key."""
        return self._rot_from.get(key_id, _EMPTY)

    def revocations_of(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Revocations targeting ``key_id`` (whether they count is a trust rule)."""
        return self._revoked.get(key_id, _EMPTY)

    def attestations_for(self, sha256: str) -> Sequence[LoggedRecord]:
        """Attestations with a subject of this digest (``sha256:<hex>`` or ``<hex>``)."""
        return self._attestations.for_digest(digest_hex(sha256))

    def attestations_by(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Attestations signed by ``key_id``."""
        return self._attestations.by_signer(key_id)

    def org_roots(self, org: str) -> Sequence[KeyId]:
        """Root key ids declared for ``org``, in the order first seen."""
        return self._org_roots.get(org, [])

    def org_keys(self, org: str) -> frozenset[KeyId]:
        """Every key declared a root of, or delegated to act for, ``org`` (a copy).

        A delegation without ``org`` acts for its issuer's org; it is indexed under that
        org when the issuer's org was known when it was added (the org on a path is
        decided by the path, see :mod:`ledger.trust.evaluate`)."""
        with self._lock:
            return frozenset(self._org_keys.get(org, ()))

    def orgs(self) -> tuple[str, ...]:
        """Every org named by a root record or delegation, sorted."""
        with self._lock:
            return tuple(sorted(self._org_keys))

    def stats(self) -> dict[str, int]:
        """Counts of indexed records by kind, ``skipped``, ``duplicate`` and ``keys``."""
        return {**self._counts, "keys": len(self._keys)}

    def __len__(self) -> int:
        """Number of entries indexed."""
        c = self._counts
        return sum(c[k] for k in ("root", "delegation", "endorsement", "revocation", "rotation", "attestation"))


__all__ = ["TrustGraph", "digest_hex"]
