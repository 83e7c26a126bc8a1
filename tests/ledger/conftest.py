"""Fixtures for ledger tests: a pool of real keys and an open Holdings with one log."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.entry import sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy
from tests.ledger.orgs import Clock, Org

ORIGIN = "test.turtles/log"


@dataclass
class World:
    """A log with a root ``acme`` and a maintainer delegated for ``pkg-*`` releases."""

    holdings: Holdings
    path: Path
    log_key: SoftwareSigner
    root: SoftwareSigner
    maint: SoftwareSigner

    @property
    def log(self):  # type: ignore[no-untyped-def]
        assert self.holdings.own is not None
        return self.holdings.own

    def attest(self, name: str, *, signer: SoftwareSigner | None = None, content: bytes | None = None) -> Envelope:
        digest = hashlib.sha256(content if content is not None else name.encode()).hexdigest()
        stmt = make_statement(subject=Artefact(name, digest))
        return sign_envelope(INTOTO, stmt, [signer or self.maint])

    def reopen(self) -> None:
        self.holdings.close()
        self.holdings = Holdings.open(self.path, origin=ORIGIN, signer=self.log_key,
                                      roots=RootsPolicy.any_self_signed())


def root_envelope(root: SoftwareSigner, org: str = "acme") -> Envelope:
    return sign_record(RootRecord(org, root.public_key, False, 1), [root])


def delegation_envelope(issuer: SoftwareSigner, subject: SoftwareSigner, *, globs: tuple[str, ...] = ("pkg-*",),
                        purposes: tuple[str, ...] = ("release",), depth: int = 0) -> Envelope:
    return sign_record(Delegation(
        issuer=issuer.key_id, subject=subject.public_key, name="maint", org="acme", artefacts=globs,
        purposes=purposes, max_depth=depth, not_before=0, not_after=None, created=1), [issuer])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    log_key, root, maint = (SoftwareSigner.generate() for _ in range(3))
    holdings = Holdings.open(tmp_path / "db", origin=ORIGIN, signer=log_key,
                             roots=RootsPolicy.any_self_signed(), create=True)
    w = World(holdings, tmp_path / "db", log_key, root, maint)
    w.log.append(root_envelope(root))
    w.log.append(delegation_envelope(root, maint))
    yield w
    w.holdings.close()


# --- the provenance world (tests/ledger/orgs.py) ---------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def acme(tmp_path: Path, clock: Clock) -> Iterator[Org]:
    org = Org(tmp_path, "acme", clock=clock)
    yield org
    org.close()


@pytest.fixture
def beta(tmp_path: Path, clock: Clock) -> Iterator[Org]:
    org = Org(tmp_path, "beta", clock=clock)
    yield org
    org.close()
