"""Mirror verification in the pool: each entry checked once, checks under stale keys redone, no
re-verification of what a restarted mirror holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ledger._mirror_checks
import ledger.mirror
from ledger.envelope import Envelope, Signature
from ledger.errors import ConsistencyError
from ledger.holdings import Holdings
from ledger.mirror import Mirror
from ledger.verification import Prepared, verify_envelope
from tests.integration.malicious_peer import ForgedLog, Org, honest_log

PEER = "peer.example/log"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every envelope verification a mirror makes in its own process (all go through
    ledger._mirror_checks)."""
    made = [0]

    def counting(gate: object, envelope: object) -> Prepared:
        made[0] += 1
        return verify_envelope(gate, envelope)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger._mirror_checks, "verify_envelope", counting)
    yield made


def apply_all(mirror: Mirror, source: ForgedLog, start: int, stop: int, *, pre: bool = True) -> int:
    """Apply ``[start, stop)`` as one page (checked ahead in the pool), to the checkpoint at ``stop``."""
    note = source.note(stop)
    mirror.apply(note=note, entries=[], proof=source.proof(mirror.tip.size, stop))
    pending = mirror.preverify(source.page(start, stop)) if pre else source.page(start, stop)
    applied = 0
    for _ in range(stop - start + 1):
        if not len(pending):
            break
        took = mirror.apply(note=note, entries=pending, proof=source.proof(stop, stop))
        applied += took
        pending = pending.drop(took) if pre else pending[took:]  # type: ignore[union-attr,index]
    return applied


def test_each_entry_is_verified_once(tmp_path: Path, calls: list[int]) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(300)])
    with Holdings.open(tmp_path / "db") as holdings:
        m = holdings.mirror(PEER, source.vkey)
        # the root and the delegation end their commits: apply them first, then one big page
        assert apply_all(m, source, 0, 2) == 2
        before = calls[0]
        assert apply_all(m, source, 2, source.size) == source.size - 2
        assert calls[0] - before == source.size - 2
        assert m.verified == calls[0]
        assert m.size == source.size and m.root_at(m.size) == source.root()


def test_checks_made_before_a_key_record_are_redone_only_when_its_keys_matter(
    tmp_path: Path, calls: list[int]
) -> None:
    acme, other = Org("acme"), Org("other")
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(10)], org=acme)
    for env in [other.root_envelope(), other.delegation_envelope(),
                *(acme.attestation(f"pkg-{i}@2") for i in range(20))]:
        source.append(env)
    with Holdings.open(tmp_path / "db") as holdings:
        m = holdings.mirror(PEER, source.vkey)
        apply_all(m, source, 0, 12)
        before = calls[0]
        # All 22 checked in the pool before other's root and delegation are taken in. The
        # delegation (signed by other's root, unknown then) is left for the mirror to check
        # once that root is in; acme's attestations, whose signer was known before and after
        # the new keys, are not checked again.
        assert apply_all(m, source, 12, source.size) == 22
        assert calls[0] - before == 22
        assert m.size == source.size and m.root_at(m.size) == source.root()


def test_a_page_checked_before_its_signers_are_known_still_verifies(tmp_path: Path, calls: list[int]) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(6)])
    with Holdings.open(tmp_path / "db") as holdings:
        m = holdings.mirror(PEER, source.vkey)
        # Root, delegation and attestations in one page, handed to the pool at once: the
        # delegation and the attestations are not checked there (no signer known yet) but
        # by the mirror once the records introducing their keys are in -- each exactly once.
        assert apply_all(m, source, 0, source.size) == source.size
        assert calls[0] == m.verified == source.size
        assert m.root_at(m.size) == source.root()


def test_a_restarted_mirror_verifies_only_what_it_does_not_hold(tmp_path: Path, calls: list[int]) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(40)])
    holdings = Holdings.open(tmp_path / "db")
    m = holdings.mirror(PEER, source.vkey)
    note = source.note()
    m.apply(note=note, entries=[], proof=source.proof(0))
    for start, stop in ((0, 1), (1, 2), (2, 25)):
        m.apply(note=note, entries=source.page(start, stop), proof=source.proof(stop))
    assert m.tip.size == 25 and m.size == 0  # interrupted: no checkpoint reached yet
    holdings.close()  # a crash or restart: nothing but the store survives

    calls[0] = 0
    with Holdings.open(tmp_path / "db") as again:
        m = again.mirror(PEER, source.vkey)
        assert m.tip.size == 25 and m.verified == 0 and calls[0] == 0  # reopening verifies nothing
        m.apply(note=note, entries=[], proof=source.proof(25))
        m.apply(note=note, entries=m.preverify(source.page(25, source.size)), proof=[])
        assert m.size == source.size and m.root_at(m.size) == source.root()
        assert calls[0] == m.verified == source.size - 25


def test_a_bad_signature_found_in_the_pool_is_reported_in_order(tmp_path: Path) -> None:
    acme = Org("acme")
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(4)], org=acme)
    source.append(acme.attestation("pkg-9@1", signer=Org("mallory").maint))  # an unknown signer
    with Holdings.open(tmp_path / "db") as holdings:
        m = holdings.mirror(PEER, source.vkey)
        apply_all(m, source, 0, 2)
        with pytest.raises(ConsistencyError) as info:
            apply_all(m, source, 2, source.size)
        assert info.value.evidence["index"] == source.size - 1
        assert m.tip.size == 2  # the page is atomic: nothing of it was stored


# --- the same, with pages checked in worker processes (ledger.procverify) -------------------


def test_worker_processes_check_each_entry_once(tmp_path: Path) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(300)])
    with Holdings.open(tmp_path / "db", verify_processes=2) as holdings:
        m = holdings.mirror(PEER, source.vkey)
        assert apply_all(m, source, 0, 2) == 2
        before = m.verified
        assert apply_all(m, source, 2, source.size) == source.size - 2
        assert m.verified - before == source.size - 2
        assert m.size == source.size and m.root_at(m.size) == source.root()
        assert holdings.procs is not None and holdings.procs._pool is not None  # the workers did it


def test_worker_processes_and_a_key_record_in_the_page(tmp_path: Path) -> None:
    acme, other = Org("acme"), Org("other")
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(10)], org=acme)
    for env in [other.root_envelope(), other.delegation_envelope(),
                *(acme.attestation(f"pkg-{i}@2") for i in range(20)), other.attestation("pkg-x@1")]:
        source.append(env)
    with Holdings.open(tmp_path / "db", verify_processes=2) as holdings:
        m = holdings.mirror(PEER, source.vkey)
        apply_all(m, source, 0, 12)
        assert apply_all(m, source, 12, source.size) == source.size - 12
        assert m.size == source.size and m.root_at(m.size) == source.root()


def test_worker_processes_report_a_bad_signature_in_order(tmp_path: Path) -> None:
    acme = Org("acme")
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(6)], org=acme)
    good = acme.attestation("pkg-9@1")
    source.append(Envelope(good.payload_type, good.payload, (Signature(good.signatures[0].keyid, bytes(64)),)))
    with Holdings.open(tmp_path / "db", verify_processes=2) as holdings:
        m = holdings.mirror(PEER, source.vkey)
        apply_all(m, source, 0, 2)
        with pytest.raises(ConsistencyError, match="does not verify") as info:
            apply_all(m, source, 2, source.size)
        assert info.value.evidence["index"] == source.size - 1
        assert m.tip.size == 2
