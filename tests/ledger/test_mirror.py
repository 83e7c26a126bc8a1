"""Mirror: pages verified under signed checkpoints, resumable, every bad input refused atomically."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger import merkle
from ledger.audit import audit_log
from ledger.checkpoint import Checkpoint, open_note
from ledger.entry import Entry
from ledger.errors import ConsistencyError, InputError, NoteError, TurtlesError
from ledger.holdings import Holdings, LogGate
from ledger.keys import SoftwareSigner
from ledger.log import logged_from_entry
from ledger.mirror import Mirror
from ledger.trust import RootsPolicy
from ledger.witness import Evidence, verify_evidence
from tests.integration.malicious_peer import ForgedLog, Org, honest_log
from tests.ledger.conftest import ORIGIN, World

PEER = "peer.example/log"


@dataclass
class Site:
    """A mirror-only node store and the mirror of one peer log."""

    path: Path
    holdings: Holdings
    source: ForgedLog

    @property
    def mirror(self) -> Mirror:
        return self.holdings.mirror(PEER, self.source.vkey)

    def reopen(self) -> None:
        self.holdings.close()
        self.holdings = Holdings.open(self.path)

    def state(self) -> tuple[object, ...]:
        """Everything a failed apply must leave unchanged."""
        m = self.mirror
        return (m.tip, m.head, m.checkpoint(), m.store.head(), list(m.store.checkpoints()),
                len(self.holdings.graph), m.target)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    holdings = Holdings.open(tmp_path / "db")
    s = Site(tmp_path / "db", holdings, honest_log(PEER, [f"pkg-{i}@1" for i in range(9)]))
    yield s
    s.holdings.close()


def catch_up(mirror: Mirror, source: ForgedLog, *, page: int = 1000, size: int | None = None) -> int:
    """Replicate like the replicator: settle on the checkpoint, then page; returns calls made."""
    n = source.size if size is None else size
    note = source.note(n)
    assert mirror.apply(note=note, entries=[], proof=source.proof(mirror.tip.size, n)) == 0
    calls = 0
    while mirror.tip.size < n:
        start = mirror.tip.size
        entries = source.page(start, min(n, start + page))
        base = start + len(entries)
        while entries:
            calls += 1
            assert calls < 1000
            took = mirror.apply(note=note, entries=entries, proof=source.proof(base, n))
            assert took >= 1
            entries = entries[took:]
    return calls


def rejected(
    site: Site, *, note: str, entries: list[bytes], proof: list[bytes],
    error: type[TurtlesError] = ConsistencyError,
) -> TurtlesError:
    before = site.state()
    with pytest.raises(error) as info:
        site.mirror.apply(note=note, entries=entries, proof=proof)
    assert site.state() == before
    return info.value


def evidence_of(e: TurtlesError) -> Evidence:
    ev = e.evidence.get("exhibit")
    assert isinstance(ev, Evidence)
    return ev


# --- applying -----------------------------------------------------------------------------------


def test_one_page_mirrors_the_log_exactly(site: Site) -> None:
    m = site.mirror
    assert m.checkpoint() is None and m.size == 0
    catch_up(m, site.source)
    assert m.size == m.tip.size == site.source.size
    assert m.root_at(m.size) == site.source.root()
    assert m.checkpoint() == site.source.note()
    assert [e.raw for e in m.entries(0, m.size)] == site.source.raws
    # the records reached the node's global trust graph, and admission state is replayable
    assert site.holdings.graph.public_key(Org("x").root.key_id) is None
    assert len(site.holdings.graph) >= site.source.size
    report = audit_log(m.store, vkey=site.source.vkey,
                       new_gate=lambda: LogGate(RootsPolicy.any_self_signed()),
                       prepare=lambda gate, entry: logged_from_entry(gate, PEER, entry))
    assert report.entries == site.source.size


@pytest.mark.parametrize("page", [1, 2, 3, 5])
def test_pages_commit_at_key_records_and_give_the_same_tree(site: Site, page: int) -> None:
    m = site.mirror
    calls = catch_up(m, site.source, page=page)
    # root and delegation end their commits, like the sequencer's batches
    assert calls >= max(2, -(-site.source.size // page))
    assert m.root_at(m.size) == site.source.root()
    proof = m.inclusion_proof(5, m.size)
    merkle.verify_inclusion(site.source.leaves[5], 5, m.size, proof, site.source.root())


def test_mirror_follows_a_growing_log_and_keeps_every_checkpoint(site: Site) -> None:
    m = site.mirror
    catch_up(m, site.source, size=4)
    assert m.size == 4 and Checkpoint.parse(open_note(m.checkpoint() or "", m.vkey)).size == 4
    catch_up(m, site.source, size=7, page=2)
    catch_up(m, site.source)
    assert [n for n, _ in m.store.checkpoints()] == [4, 7, site.source.size]
    # re-applying the held checkpoint, or an older one, changes nothing
    assert m.apply(note=site.source.note(), entries=[], proof=[]) == 0
    assert m.apply(note=site.source.note(4), entries=[], proof=[]) == 0
    assert m.size == site.source.size


def test_reads_stop_at_the_signed_checkpoint_while_catching_up(site: Site) -> None:
    m = site.mirror
    catch_up(m, site.source, size=3)
    note = site.source.note()
    m.apply(note=note, entries=[], proof=site.source.proof(3))
    m.apply(note=note, entries=site.source.page(3, 6), proof=site.source.proof(6))
    assert m.tip.size == 6 and m.size == 3 and m.target == note
    assert len(list(m.entries(0, 100))) == 3


def test_resume_after_restart_from_the_stored_state(site: Site) -> None:
    note = site.source.note()
    site.mirror.apply(note=note, entries=[], proof=site.source.proof(0))
    site.mirror.apply(note=note, entries=site.source.page(0, 5), proof=site.source.proof(5))
    tip = site.mirror.tip
    assert tip.size >= 1
    site.reopen()  # a crash or restart: nothing but the store survives
    m = site.mirror
    assert m.tip == tip and m.target is None
    assert m.size == 0 and m.checkpoint() is None
    catch_up(m, site.source, page=4)
    assert m.size == site.source.size and m.root_at(m.size) == site.source.root()
    site.reopen()
    assert site.mirror.size == site.source.size
    assert site.mirror.checkpoint() == site.source.note()


def test_a_real_log_is_mirrored(world: World, tmp_path: Path) -> None:
    for i in range(5):
        world.log.append(world.attest(f"pkg-{i}@1"))
    log = world.log
    with Holdings.open(tmp_path / "mirror") as holdings:
        m = holdings.mirror(ORIGIN, log.vkey)
        note = log.checkpoint()
        m.apply(note=note, entries=[], proof=[])
        entries = [log.store.entry(i) for i in range(log.size)]
        while entries:
            entries = entries[m.apply(note=note, entries=entries, proof=[]):]
        assert m.size == log.size and m.root_at(m.size) == log.root_at(log.size)


# --- bad input, refused atomically with evidence ---------------------------------------------------


def test_checkpoint_signed_by_another_key_is_refused(site: Site) -> None:
    catch_up(site.mirror, site.source, size=4)
    forged = site.source.note(root=bytes(32), key=SoftwareSigner.generate())
    rejected(site, note=forged, entries=[], proof=[], error=NoteError)


def test_checkpoint_of_another_origin_is_refused(site: Site) -> None:
    other = ForgedLog("other.example/log", site.source.key, list(site.source.raws))
    body = Checkpoint("other.example/log", other.size, other.root()).to_text()
    from ledger.checkpoint import note_signer, sign_note

    note = sign_note(body, [note_signer(PEER, site.source.key)])  # right key name, wrong origin line
    rejected(site, note=note, entries=[], proof=[], error=NoteError)


@pytest.mark.parametrize("damage", ["garbage", "seq", "chain", "time", "missing"])
def test_bad_entries_are_refused_with_the_index(site: Site, damage: str) -> None:
    m = site.mirror
    catch_up(m, site.source, size=3)
    src = site.source
    page = src.page(3)
    if damage == "garbage":
        page[2] = b"\x93garbage"
    elif damage == "seq":
        page = [page[0], page[2], page[1], *page[3:]]
    elif damage == "chain":
        e = Entry.from_bytes(page[2])
        page[2] = Entry.build(seq=e.seq, prev=bytes(32), ts=e.ts, envelope=e.envelope).raw
    elif damage == "time":
        e = Entry.from_bytes(page[2])
        page[2] = Entry.build(seq=e.seq, prev=e.prev, ts=0, envelope=e.envelope).raw
    else:
        page = page[:2] + page[3:]
    err = rejected(site, note=src.note(), entries=page, proof=[])
    ev = evidence_of(err)
    at = 4 if damage == "seq" else 5
    assert ev.kind == "bad-entries" and ev.index == at and not verify_evidence(ev, src.vkey)
    assert err.evidence["index"] == at


def test_rewritten_entry_under_the_signed_root_is_refused(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src, size=3)
    last = Entry.from_bytes(src.raws[-1])  # the last one: no later prev link gives it away
    rewritten = Entry.build(seq=last.seq, prev=last.prev, ts=last.ts + 1, envelope=last.envelope).raw
    err = rejected(site, note=src.note(), entries=[*src.page(3, -1), rewritten], proof=[])
    ev = evidence_of(err)
    assert ev.kind == "bad-entries" and ev.index == 3 and ev.newer == src.note()


def test_page_past_the_checkpoint_is_refused(site: Site) -> None:
    rejected(site, note=site.source.note(3), entries=site.source.page(0, 4), proof=[], error=InputError)


def test_bad_proof_is_refused(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src, size=3)
    proof = src.proof(3)
    proof[0] = bytes(b ^ 1 for b in proof[0])
    ev = evidence_of(rejected(site, note=src.note(), entries=[], proof=proof))
    assert ev.kind == "bad-proof" and not verify_evidence(ev, src.vkey)
    # the page form: the proof from the end of the page is bad
    ev = evidence_of(rejected(site, note=src.note(), entries=src.page(3, 5), proof=proof[:1]))
    assert ev.kind == "bad-entries"


def test_fork_of_held_entries_is_proven(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src, size=6)
    fork = src.fork(5)
    fork.append(Org("acme").attestation("pkg-evil@6", signer=SoftwareSigner.generate()))
    for i in range(4):
        fork.append(Org("acme").attestation(f"pkg-z{i}@1"))
    err = rejected(site, note=fork.note(), entries=[], proof=fork.proof(6))
    ev = evidence_of(err)
    assert ev.kind == "fork" and verify_evidence(ev, src.vkey)
    assert ev.older == src.note(6) and ev.newer == fork.note()
    again = Evidence.from_json(ev.to_json())
    assert again == ev and verify_evidence(again, src.vkey)
    assert not verify_evidence(again, ForgedLog(PEER, SoftwareSigner.generate()).vkey)


def test_equivocation_at_the_held_size_is_proven(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src, size=6)
    fork = src.fork(5)
    fork.append(Org("acme").attestation("pkg-other@1"))
    ev = evidence_of(rejected(site, note=fork.note(), entries=[], proof=[]))
    assert ev.kind == "equivocation" and verify_evidence(ev, src.vkey)


def test_older_checkpoint_with_another_root_is_proven(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src)
    fork = src.fork(3)
    fork.append(Org("acme").attestation("pkg-other@1"))
    ev = evidence_of(rejected(site, note=fork.note(), entries=[], proof=[]))
    assert ev.kind == "fork" and ev.split is not None and ev.split.size == 4
    assert verify_evidence(ev, src.vkey)


def test_fork_at_a_power_of_two_is_proven_from_a_smaller_size(site: Site) -> None:
    src = site.source
    m = site.mirror
    catch_up(m, src, size=8)
    fork = src.fork(6)
    for i in range(4):
        fork.append(Org("acme").attestation(f"pkg-f{i}@1"))
    # the proof from 8 leaves the prefix out: it proves nothing by itself
    ev = evidence_of(rejected(site, note=fork.note(), entries=[], proof=fork.proof(8)))
    assert ev.kind == "bad-proof"
    better = m.prefix_evidence(note=fork.note(), size=7, proof=fork.proof(7))
    assert better is not None and better.kind == "fork" and verify_evidence(better, src.vkey)
    assert m.prefix_evidence(note=src.note(), size=7, proof=src.proof(7)) is None


def test_record_the_log_should_not_have_admitted_is_refused(site: Site) -> None:
    src = site.source
    catch_up(site.mirror, src, size=3)
    bad = src.fork(src.size)
    bad.append(Org("acme").attestation("pkg-x@1", signer=SoftwareSigner.generate()))  # undelegated key
    err = rejected(site, note=bad.note(), entries=bad.page(3), proof=[])
    ev = evidence_of(err)
    assert ev.kind == "bad-record" and ev.index == src.size
    # nothing up to the bad record was taken either: every call is atomic
    assert site.mirror.tip.size == 3


def test_crosscheck_spots_a_split_view(site: Site) -> None:
    src = site.source
    m = site.mirror
    catch_up(m, src)
    assert m.crosscheck(src.note(4)) is None
    fork = src.fork(4)
    fork.append(Org("acme").attestation("pkg-other@1"))
    ev = m.crosscheck(fork.note())
    assert ev is not None and verify_evidence(ev, src.vkey)
    assert m.crosscheck(fork.note(key=SoftwareSigner.generate())) is None  # not the log's: ignored


def test_create_refuses_an_existing_log(site: Site) -> None:
    m = site.mirror
    with pytest.raises(InputError):
        Mirror.create(m.store, vkey=site.source.vkey)
    with pytest.raises(InputError):
        Mirror(m.store, vkey=ForgedLog(PEER, SoftwareSigner.generate()).vkey,
               gate=LogGate(RootsPolicy.any_self_signed()))
