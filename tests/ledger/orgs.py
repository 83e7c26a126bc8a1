"""A provenance test world shared by the verify, bundle, lineage and interop tests.

:class:`Org` is an organisation with its own log (``ledger.holdings.Holdings`` in a tmp
dir), an HSM-declared root, and its log key delegated for the purpose ``log``; :class:`Clock`
gives log time; :class:`WitnessKey` cosigns checkpoints. The ``clock``, ``acme`` and ``beta``
fixtures live in ``tests/ledger/conftest.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from ledger.attestation import PAYLOAD_TYPE, Artefact, make_statement
from ledger.checkpoint import add_signatures, cosign, cosigner_vkey, note_signer
from ledger.entry import sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.holdings import Holdings
from ledger.keys import PublicKey, SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.records import Delegation, Endorsement, Revocation, RootRecord
from ledger.trust import Anchor, Policy

T0 = 1_760_000_000_000
DAY = 86_400_000


class Clock:
    """Log time in Unix ms: starts at T0, moves 1 ms per reading, jumps on demand."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        self.t += 1
        return self.t

    def later(self, ms: int = 1) -> int:
        """A time after everything logged so far."""
        return self.t + ms


class Org:
    """An organisation: its own log, a root (declared HSM-held) and a log key delegated for ``log``."""

    def __init__(self, tmp: Path, name: str, *, clock: Clock | None = None, delegate_log: bool = True) -> None:
        self.name = name
        self.origin = f"{name}.example/log"
        self.clock = clock or Clock()
        self.log_key = SoftwareSigner.generate()
        self.root = SoftwareSigner.generate()
        self.holdings = Holdings.open(tmp / name, origin=self.origin, signer=self.log_key, create=True,
                                      clock=self.clock)
        self.append(sign_record(RootRecord(name, self.root.public_key, True, 1), [self.root]))
        if delegate_log:
            self.delegate(self.root, self.log_key.public_key, globs=(self.origin,), purposes=("log",))

    @property
    def log(self) -> Log:
        assert self.holdings.own is not None
        return self.holdings.own

    @property
    def vkey(self) -> str:
        return self.log.vkey

    def append(self, env: Envelope) -> AppendResult:
        return self.log.append(env)

    def delegate(
        self, issuer: SoftwareSigner, subject: PublicKey, *, globs: Sequence[str] = ("*",),
        purposes: Sequence[str] = ("release",), depth: int = 0, org: str | None = None,
        not_after: int | None = None,
    ) -> AppendResult:
        d = Delegation(
            issuer=issuer.key_id, subject=subject, name="k", org=org or self.name,
            artefacts=tuple(sorted(globs)), purposes=tuple(sorted(purposes)), max_depth=depth,
            not_before=0, not_after=not_after, created=1,
        )
        return self.append(sign_record(d, [issuer]))

    def chain(self, n: int, *, globs: Sequence[str] = ("*",)) -> list[SoftwareSigner]:
        """root -> k1 -> ... -> kn, each allowed to delegate further; returns [root, k1..kn]."""
        keys = [self.root]
        for i in range(n):
            k = SoftwareSigner.generate()
            last = i == n - 1
            self.delegate(keys[-1], k.public_key, globs=globs, depth=0 if last else n - 1 - i,
                          purposes=("release", "build") if last else ("build", "delegate", "release"))
            keys.append(k)
        return keys

    def endorse(self, org: str, root: SoftwareSigner, *, purposes: Sequence[str] = ("release",)) -> AppendResult:
        e = Endorsement(self.root.key_id, org, root.key_id, tuple(sorted(purposes)), 0, None, 1)
        return self.append(sign_record(e, [self.root]))

    def revoke(self, issuer: SoftwareSigner, target: SoftwareSigner, *, since: int | None = None) -> AppendResult:
        return self.append(sign_record(Revocation(issuer.key_id, target.key_id, since, "stolen", 1), [issuer]))

    def attest(
        self, signer: SoftwareSigner | Sequence[SoftwareSigner], name: str, content: bytes | None = None, *,
        materials: Sequence[Artefact] = (),
    ) -> str:
        """Log an attestation of ``name`` (digest of ``content``, default the name); return the digest."""
        digest = sha(content if content is not None else name.encode())
        signers = [signer] if isinstance(signer, SoftwareSigner) else list(signer)
        stmt = make_statement(subject=Artefact(name, digest), materials=tuple(materials))
        self.append(sign_envelope(PAYLOAD_TYPE, stmt, signers))
        return digest

    def policy(self, *others: Org, purposes: Sequence[str] = ("build", "release"), **trust: object) -> Policy:
        anchors = tuple(Anchor(o.name, o.root.key_id, tuple(sorted(purposes))) for o in (self, *others))
        return Policy(anchors=anchors, **trust)  # type: ignore[arg-type]

    def close(self) -> None:
        self.holdings.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror(dst: Holdings, src: Org) -> None:
    """Replicate ``src``'s log into ``dst`` as a mirror, verifying as replication does."""
    m = dst.mirror(src.origin, src.vkey)
    note, size = src.log.checkpoint(), src.log.size
    while m.tip.size < size:
        entries = [raw for _, raw in src.log.store.entries(m.tip.size, size)]
        m.apply(note=note, entries=entries, proof=[])


class WitnessKey:
    """A witness: cosigns checkpoint notes with tlog-cosignature/v1 lines."""

    def __init__(self, name: str = "witness.example") -> None:
        self.name = name
        self.key = SoftwareSigner.generate()
        self.vkey = cosigner_vkey(name, self.key.public_key.raw)

    def cosign(self, note: str, timestamp_s: int) -> str:
        text = note[: note.index("\n\n") + 1]
        line = cosign(text, self.name, note_signer(self.name, self.key).signer, timestamp_s)
        return add_signatures(note, [line])


__all__ = ["DAY", "T0", "Clock", "Org", "WitnessKey", "mirror", "sha"]
