"""Test builder: real keys, real DSSE signatures, real log entries, fed to a TrustGraph.

A small pool of SoftwareSigner keys is generated once (importing this module); tests pick
keys from it by index. Every record is signed into a DSSE envelope, verified against the
pool's public keys to obtain its signers (as a log would), wrapped in a hash-chained
:class:`~ledger.entry.Entry` of its origin, and added to the graph.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation, make_statement
from ledger.entry import Entry, LoggedRecord, Record, record_id
from ledger.envelope import sign_envelope
from ledger.keys import KeyId, PublicKey, SoftwareSigner
from ledger.records import Delegation, Endorsement, Revocation, RootRecord, Rotation
from ledger.trust import Anchor, Policy, TrustGraph
from ledger.trust.attestations import MemoryAttestationIndex

POOL: tuple[SoftwareSigner, ...] = tuple(SoftwareSigner.generate() for _ in range(14)) + tuple(
    SoftwareSigner.generate("p256") for _ in range(2)
)
P256 = (14, 15)
_KEYS: dict[KeyId, PublicKey] = {s.key_id: s.public_key for s in POOL}
DAY = 86_400_000


def kid(i: int) -> KeyId:
    """Key id of pool key ``i``."""
    return POOL[i].key_id


def digest(name: str) -> str:
    """A deterministic artefact digest (hex) for ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def policy(*anchors: tuple[str, int] | tuple[str, int, tuple[str, ...]], **trust: object) -> Policy:
    """A policy pinning ``(org, pool index[, purposes])`` anchors; ``trust`` overrides."""
    out = []
    for a in anchors:
        purposes = a[2] if len(a) == 3 else ("build", "release")
        out.append(Anchor(org=a[0], root=kid(a[1]), purposes=tuple(sorted(purposes))))
    return Policy(anchors=tuple(out), **trust)  # type: ignore[arg-type]


@dataclass
class World:
    """A set of logs feeding one TrustGraph."""

    graph: TrustGraph = field(default_factory=TrustGraph)
    heads: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    records: list[LoggedRecord] = field(default_factory=list)

    def log(self, record: Record, signers: Sequence[int], *, ts: int, origin: str = "log.a") -> LoggedRecord:
        """Sign ``record`` with pool keys ``signers``, append it to ``origin``, add it."""
        if isinstance(record, Attestation):
            ptype, payload = PAYLOAD_TYPE, json.dumps(record.statement, separators=(",", ":"), sort_keys=True).encode()
        else:
            ptype, payload = record.payload_type(), record.to_payload()
        env = sign_envelope(ptype, payload, [POOL[i] for i in signers])
        verified = env.verify(_KEYS)
        seq, prev = self.heads.get(origin, (0, bytes(32)))
        entry = Entry.build(seq=seq, prev=prev, ts=ts, envelope=env)
        self.heads[origin] = (seq + 1, entry.leaf_hash)
        rec = LoggedRecord(origin, seq, ts, entry.leaf_hash, verified, record, record_id(ptype, payload))
        self.graph.add(rec)
        self.records.append(rec)
        return rec

    def copy(self, rec: LoggedRecord, *, origin: str, ts: int | None = None) -> LoggedRecord:
        """The same record appended to another log (a second copy)."""
        seq, prev = self.heads.get(origin, (0, bytes(32)))
        leaf = hashlib.sha256(prev + rec.leaf_hash).digest()
        self.heads[origin] = (seq + 1, leaf)
        out = LoggedRecord(origin, seq, rec.ts if ts is None else ts, leaf, rec.signers, rec.record, rec.record_id)
        self.graph.add(out)
        self.records.append(out)
        return out

    def root(self, i: int, org: str, *, ts: int = 0, hsm: bool = True, origin: str = "log.a") -> LoggedRecord:
        """Pool key ``i`` declared root of ``org``."""
        return self.log(RootRecord(org, POOL[i].public_key, hsm, ts), [i], ts=ts, origin=origin)

    def delegate(
        self, issuer: int, subject: int, *, ts: int, org: str | None = None,
        artefacts: tuple[str, ...] = ("*",), purposes: tuple[str, ...] = ("release",),
        max_depth: int = 0, not_before: int = 0, not_after: int | None = None,
        origin: str = "log.a", signers: Sequence[int] | None = None,
    ) -> LoggedRecord:
        """Pool key ``issuer`` delegates to pool key ``subject``."""
        d = Delegation(
            issuer=kid(issuer), subject=POOL[subject].public_key, name=f"key{subject}", org=org,
            artefacts=tuple(sorted(artefacts)), purposes=tuple(sorted(purposes)), max_depth=max_depth,
            not_before=not_before, not_after=not_after, created=ts,
        )
        return self.log(d, [issuer] if signers is None else signers, ts=ts, origin=origin)

    def endorse(
        self, endorser: int, root: int, *, org: str, ts: int, purposes: tuple[str, ...] = ("release",),
        not_before: int = 0, not_after: int | None = None, origin: str = "log.a",
    ) -> LoggedRecord:
        """Pool key ``endorser`` endorses pool key ``root`` as ``org``'s root."""
        e = Endorsement(kid(endorser), org, kid(root), tuple(sorted(purposes)), not_before, not_after, ts)
        return self.log(e, [endorser], ts=ts, origin=origin)

    def revoke(
        self, issuer: int, target: int, *, ts: int, since: int | None = None, origin: str = "log.a"
    ) -> LoggedRecord:
        """Pool key ``issuer`` revokes pool key ``target``."""
        return self.log(Revocation(kid(issuer), kid(target), since, "compromised", ts), [issuer], ts=ts, origin=origin)

    def rotate(
        self, old: int, new: int, *, ts: int, origin: str = "log.a", signers: Sequence[int] | None = None
    ) -> LoggedRecord:
        """Pool key ``old`` hands over to ``new`` (signed by both unless ``signers``)."""
        r = Rotation(kid(old), POOL[new].public_key, ts)
        return self.log(r, [old, new] if signers is None else signers, ts=ts, origin=origin)

    def attest(
        self, signer: int | Sequence[int], name: str, *, ts: int, origin: str = "log.a"
    ) -> LoggedRecord:
        """An attestation of artefact ``name`` (digest :func:`digest`) signed by pool key(s)."""
        signers = [signer] if isinstance(signer, int) else list(signer)
        subject = Artefact(name, digest(name))
        att = Attestation.from_payload(make_statement(subject=subject))
        return self.log(att, signers, ts=ts, origin=origin)


class HookedAttestationIndex(MemoryAttestationIndex):
    """An attestation index that runs ``hooks[digest]`` the first time ``digest`` is read:
    the graph changes in the middle of a query, as another thread or log could make it."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: dict[str, Callable[[], object]] = {}

    def for_digest(self, sha256_hex: str) -> Sequence[LoggedRecord]:
        out = super().for_digest(sha256_hex)
        hook = self.hooks.pop(sha256_hex, None)
        if hook is not None:
            hook()
        return out


__all__ = ["DAY", "P256", "POOL", "HookedAttestationIndex", "World", "digest", "kid", "policy"]
