"""A mirror whose pages are checked by workers (ledger._mirror_pages with a VerifierProcesses):
the same store and the same refusals as the thread pool's checks, whatever the workers do.

The workers here are a stand-in that runs each task in this process, through pickle, when
the test lets it (so the order of events is the test's); tests/ledger/test_mirror_verification.py
runs real worker processes.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger._mirror_pages
import ledger.mirror
from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.entry import Entry
from ledger.envelope import Envelope, Signature, sign_envelope
from ledger.errors import ConsistencyError, TurtlesError
from ledger.holdings import Holdings
from ledger.mirror import Mirror
from ledger.procverify import VerifierProcesses
from tests.integration.malicious_peer import ForgedLog, Org, honest_log

PEER = "peer.example/log"
Task = tuple["Future[Any]", Callable[..., Any], bytes]


class InlineProcs(VerifierProcesses):
    """Runs each task here, its arguments and result pickled as across a pipe; while ``held``,
    tasks wait for :meth:`release`. ``tamper`` may change a result; ``broken`` fails every task."""

    def __init__(self, *, held: bool = False, broken: bool = False, running: bool = False,
                 tamper: Callable[[Any], Any] | None = None) -> None:
        super().__init__(1)
        self.held, self.broken, self.running, self.tamper = held, broken, running, tamper
        self.pending: list[Task] = []
        self.ran = 0
        self.resets = 0

    def run(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        task = (fut, fn, pickle.dumps(args))
        if self.held:
            if self.running:  # under way already: it can no longer be cancelled
                fut.set_running_or_notify_cancel()
            self.pending.append(task)
        else:
            self._do(task)
        return fut

    def release(self, n: int | None = None) -> None:
        """Run the first ``n`` tasks waiting (all by default) and stop holding new ones if all."""
        todo, self.pending = self.pending[:n], self.pending[len(self.pending) if n is None else n :]
        if n is None:
            self.held = False
        for task in todo:
            self._do(task)

    def _do(self, task: Task) -> None:
        fut, fn, args = task
        if not fut.running() and not fut.set_running_or_notify_cancel():
            return  # cancelled while waiting: never runs
        if self.broken:
            fut.set_exception(BrokenProcessPool("a worker died"))
            return
        self.ran += 1
        result = pickle.loads(pickle.dumps(fn(*pickle.loads(args))))
        fut.set_result(result if self.tamper is None else self.tamper(result))

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


@pytest.fixture
def redone(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Sizes of the checks the mirror had to redo at apply time (ledger._mirror_pages.verify_now)."""
    sizes: list[int] = []
    real = ledger._mirror_pages.verify_now

    def counting(checker: Any, epoch: int, raws: Any) -> Any:
        sizes.append(len(raws))
        return real(checker, epoch, raws)

    monkeypatch.setattr(ledger.mirror, "verify_now", counting)
    yield sizes


def open_mirror(path: Path, source: ForgedLog, procs: VerifierProcesses | None) -> tuple[Holdings, Mirror]:
    holdings = Holdings.open(path)
    holdings.procs = procs  # (the mirror is made with the holdings' workers)
    return holdings, holdings.mirror(PEER, source.vkey)


def apply_page(m: Mirror, source: ForgedLog, pending: Any, stop: int) -> None:
    while len(pending):
        took = m.apply(note=source.note(), entries=pending, proof=source.proof(stop))
        pending = pending.drop(took)


def stored(m: Mirror) -> list[tuple[bytes, bytes]]:
    """Every key and value the mirror stored."""
    return list(m.store._db.iterator())


def test_worker_results_make_the_same_store_checking_each_entry_once(tmp_path: Path) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(300)])
    procs = InlineProcs()
    h1, by_workers = open_mirror(tmp_path / "w", source, procs)
    h2, by_threads = open_mirror(tmp_path / "t", source, None)
    with h1, h2:
        for m in (by_workers, by_threads):
            m.apply(note=source.note(), entries=[], proof=source.proof(0))
            for start in range(0, source.size, 100):
                stop = min(source.size, start + 100)
                apply_page(m, source, m.preverify(source.page(start, stop)), stop)
            assert m.size == source.size and m.root_at(m.size) == source.root()
            assert m.verified == source.size
        assert procs.ran > 0
        assert stored(by_workers) == stored(by_threads)


def test_pages_fetched_before_their_keys_are_checked_ahead_once_the_keys_are_in(
    tmp_path: Path, redone: list[int]
) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(700)])
    procs = InlineProcs(held=True)
    holdings, m = open_mirror(tmp_path / "db", source, procs)
    with holdings:
        m.apply(note=source.note(), entries=[], proof=source.proof(0))
        pages = [m.preverify(source.page(start, start + 256)) for start in range(0, 768, 256)]
        procs.release(1)  # the first page's check; the others wait
        assert m.apply(note=source.note(), entries=pages[0], proof=source.proof(256)) == 1  # the root
        assert len(procs.pending) == 3  # pages 2 and 3, and the delegation again (its signer is in now)
        procs.release()  # from now on each check runs as it starts
        assert m.apply(note=source.note(), entries=pages[0].drop(1), proof=source.proof(256)) == 1  # delegation
        apply_page(m, source, pages[0].drop(2), 256)
        apply_page(m, source, pages[1], 512)
        apply_page(m, source, pages[2], source.size)
        assert redone == []  # nothing had to be checked again while applying
        assert m.verified == source.size  # each entry checked once
        assert procs.ran == 7  # 3 pages, the delegation, then the attestations of each page again
        assert m.size == source.size and m.root_at(m.size) == source.root()


def test_a_key_record_no_waiting_entry_names_checks_nothing_again(tmp_path: Path, redone: list[int]) -> None:
    acme = Org("acme")
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(10)], org=acme)
    source.append(Org("other").root_envelope())
    for i in range(300):
        source.append(acme.attestation(f"pkg-{i}@2"))
    procs = InlineProcs()
    holdings, m = open_mirror(tmp_path / "db", source, procs)
    with holdings:
        m.apply(note=source.note(), entries=[], proof=source.proof(0))
        apply_page(m, source, m.preverify(source.page(0, 12)), 12)
        before = procs.ran
        later = [m.preverify(source.page(start, start + 100)) for start in range(12, source.size, 100)]
        for i, page in enumerate(later):
            apply_page(m, source, page, min(source.size, 112 + 100 * i))
        assert procs.ran - before == len(later)  # other's root changed nothing for acme's entries
        assert redone == [] and m.verified == source.size


def test_pages_dropped_meanwhile_do_not_disturb_the_commits(tmp_path: Path) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(40)])
    procs = InlineProcs(held=True)
    holdings, m = open_mirror(tmp_path / "db", source, procs)
    with holdings:
        m.apply(note=source.note(), entries=[], proof=source.proof(0))
        first, dropped = m.preverify(source.page(0, 20)), m.preverify(source.page(20))
        procs.release(1)
        dropped.cancel()  # (a round that stops: its pages are dropped while one is applied)
        procs.release()
        apply_page(m, source, first, 20)
        assert m.tip.size == 20 and m.verified == 20


def test_a_check_made_under_fewer_keys_is_not_used(tmp_path: Path) -> None:
    # An attestation signed by acme's maintainer and, badly, by other's root: checked while
    # only acme's keys are known it passes; once other's root is in, it must not.
    acme, other = Org("acme"), Org("other")
    source = honest_log(PEER, ["pkg-a@1"], org=acme)
    two = sign_envelope(INTOTO, make_statement(subject=Artefact("pkg-b@1", "ab" * 32)), [acme.maint, other.root])
    sigs = tuple(s if s.keyid == acme.maint.key_id else Signature(s.keyid, bytes(64)) for s in two.signatures)
    source.append(other.root_envelope())
    source.append(Envelope(two.payload_type, two.payload, sigs))
    errors = []
    for name, procs in (("threads", None), ("workers", InlineProcs(running=True))):
        holdings, m = open_mirror(tmp_path / name, source, procs)
        with holdings:
            m.apply(note=source.note(), entries=[], proof=source.proof(0))
            apply_page(m, source, m.preverify(source.page(0, 3)), 3)
            if isinstance(procs, InlineProcs):
                procs.held = True
            root, late = m.preverify(source.page(3, 4)), m.preverify(source.page(4))  # before the root is in
            if isinstance(procs, InlineProcs):
                procs.release(1)
            assert m.apply(note=source.note(), entries=root, proof=source.proof(4)) == 1  # other's root
            if isinstance(procs, InlineProcs):
                procs.release()  # the check under way when the root came in ends only now
            with pytest.raises(ConsistencyError, match="does not verify") as info:
                m.apply(note=source.note(), entries=late, proof=[])
            errors.append((info.value.message, info.value.evidence["index"]))
            assert m.tip.size == 4
    assert errors[0] == errors[1] and errors[0][1] == 4


def test_a_worker_result_for_other_bytes_is_not_used(tmp_path: Path) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(40)])

    def swap(result: tuple[int, list[Any]]) -> tuple[int, list[Any]]:
        checked, items = result
        if len(items) > 10:
            items[5], items[6] = items[6], items[5]  # results of two entries handed back crossed
        return checked, items

    procs = InlineProcs(tamper=swap)
    h1, m = open_mirror(tmp_path / "w", source, procs)
    h2, ref = open_mirror(tmp_path / "t", source, None)
    with h1, h2:
        for mirror in (m, ref):
            mirror.apply(note=source.note(), entries=[], proof=source.proof(0))
            apply_page(mirror, source, mirror.preverify(source.page(0, 2)), 2)
            apply_page(mirror, source, mirror.preverify(source.page(2, source.size)), source.size)
        assert m.root_at(m.size) == source.root()
        assert stored(m) == stored(ref)
        assert m.verified == source.size + 2  # the two crossed ones were checked again here


def test_a_dead_worker_leaves_the_checks_to_this_process(tmp_path: Path) -> None:
    source = honest_log(PEER, [f"pkg-{i}@1" for i in range(40)])
    procs = InlineProcs(broken=True)
    holdings, m = open_mirror(tmp_path / "db", source, procs)
    with holdings:
        m.apply(note=source.note(), entries=[], proof=source.proof(0))
        apply_page(m, source, m.preverify(source.page(0, 2)), 2)
        apply_page(m, source, m.preverify(source.page(2, source.size)), source.size)
        assert m.root_at(m.size) == source.root() and m.verified == source.size
        assert procs.resets > 0


# --- refusals: the same with or without workers ------------------------------------------------

ACME = Org("acme")
FUZZ = honest_log(PEER, [f"pkg-{i}@1" for i in range(20)], org=ACME)
for _env in (Org("other").root_envelope(), *(ACME.attestation(f"pkg-{i}@2") for i in range(10))):
    FUZZ.append(_env)


def damaged(how: str, at: int, where: int, byte: int) -> ForgedLog:
    """FUZZ with entry ``at`` damaged (and the log signed over the damage, as a lying peer would)."""
    log = ForgedLog(FUZZ.origin, FUZZ.key, list(FUZZ.raws), FUZZ.ts)
    raw = bytearray(log.raws[at])
    e = Entry.from_bytes(log.raws[at])
    if how == "byte":
        raw[where % len(raw)] ^= byte or 1
        log.raws[at] = bytes(raw)
    elif how in ("signature", "signer"):  # (the entries after it chained again, as a lying peer would)
        sig = e.envelope.signatures[0]
        bad = Signature(sig.keyid, bytes(64)) if how == "signature" else Signature("sha256:" + "0" * 64, sig.sig)
        env = Envelope(e.envelope.payload_type, e.envelope.payload, (bad,))
        prev = e.prev
        for i in range(at, log.size):
            old = Entry.from_bytes(log.raws[i])
            new = Entry.build(seq=old.seq, prev=prev, ts=old.ts, envelope=env if i == at else old.envelope)
            log.raws[i], prev = new.raw, new.leaf_hash
    elif how == "time":
        log.raws[at] = Entry.build(seq=e.seq, prev=e.prev, ts=where, envelope=e.envelope).raw
    else:  # swapped with the next entry
        log.raws[at], log.raws[at + 1] = log.raws[at + 1], log.raws[at]
    return log


def outcome(path: Path, log: ForgedLog, procs: VerifierProcesses | None) -> tuple[object, ...]:
    holdings, m = open_mirror(path, log, procs)
    with holdings:
        m.apply(note=log.note(), entries=[], proof=log.proof(0))
        pages = [m.preverify(log.page(start, start + 8)) for start in range(0, log.size, 8)]
        try:
            for i, page in enumerate(pages):
                apply_page(m, log, page, min(log.size, 8 * (i + 1)))
        except TurtlesError as e:
            return type(e).__name__, e.message, e.evidence.get("index"), m.tip, stored(m)
        return "ok", m.tip, stored(m)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["byte", "signature", "signer", "time", "swap"]), st.integers(2, FUZZ.size - 2),
       st.integers(0, 10**6),
       st.integers(0, 255))
def test_damaged_pages_are_refused_alike_with_or_without_workers(how: str, at: int, where: int, byte: int) -> None:
    log = damaged(how, at, where, byte)
    with tempfile.TemporaryDirectory() as d:
        want = outcome(Path(d) / "t", log, None)
        assert outcome(Path(d) / "w", log, InlineProcs()) == want
