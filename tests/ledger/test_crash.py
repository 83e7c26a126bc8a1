"""Crash safety: SIGKILL an appending process at random instants, 24 times.

After every kill and restart: every acknowledged record is present at its acknowledged
index, a from-scratch audit passes, and the new checkpoint is consistent with the last one
seen before the kill (RELIABILITY S1, issue 2 item 9). The seed is printed so a failure
reproduces.

A second test aims the kill between the two stages of the pipelined group commit: groups
committed by the sequencer that no checkpoint covers yet (the child's log key stops
signing). After the restart they are all there, the high-water mark check passes, and the
checkpoint signed on open covers them and is consistent with every checkpoint handed out
before the kill.
"""

from __future__ import annotations

import base64
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ledger.audit import audit_log
from ledger.checkpoint import Checkpoint, open_note, split_note
from ledger.entry import Entry
from ledger.holdings import Holdings, LogGate
from ledger.keys import SoftwareSigner
from ledger.log import logged_from_entry
from ledger.merkle import verify_consistency
from ledger.trust import RootsPolicy
from tests.ledger.crash_child import ORIGIN

KILLS = 24
ROOT = Path(__file__).resolve().parents[2]


def _run_child(directory: Path, seed: int, run_for: float) -> list[tuple[int, str]]:
    """Start the child, let it append for ``run_for`` seconds, SIGKILL it; return its acks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_child", str(directory), str(seed)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(run_for)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}): {err[-2000:]}"
    acks = []
    for line in out.splitlines():
        if line.startswith("ack ") and line.count(" ") == 2:  # a line cut by the kill is ignored
            _, index, rid = line.split()
            if len(rid) == 64:
                acks.append((int(index), rid))
    return acks


def _check(directory: Path, acked: dict[int, str], last_note: str | None) -> str:
    signer = SoftwareSigner.from_pem((directory / "log.pem").read_bytes())
    with Holdings.open(directory / "db", origin=ORIGIN, signer=signer,
                       roots=RootsPolicy.any_self_signed()) as holdings:
        log = holdings.own
        assert log is not None
        for index, rid in acked.items():
            entry = Entry.from_bytes(log.store.entry(index))
            assert entry.record_id.hex() == rid, f"acknowledged record at {index} changed"
        audit_log(log.store, vkey=log.vkey, new_gate=lambda: LogGate(RootsPolicy.any_self_signed()),
                  prepare=lambda gate, entry: logged_from_entry(gate, ORIGIN, entry))
        note = log.checkpoint()
        new = Checkpoint.parse(open_note(note, log.vkey))
        if last_note is not None:
            old = Checkpoint.parse(open_note(last_note, log.vkey))
            assert new.size >= old.size
            verify_consistency(old.size, new.size, log.consistency_proof(old.size, new.size),
                               old.root, new.root)
        return note


@pytest.mark.slow
def test_sigkill_at_random_instants(tmp_path: Path) -> None:
    seed = int(os.environ.get("TURTLES_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed: {seed} (set TURTLES_CRASH_SEED to reproduce)")
    rng = random.Random(seed)
    acked: dict[int, str] = {}
    last_note: str | None = None
    for i in range(KILLS):
        # The first run needs time to start up and write the first records.
        for index, rid in _run_child(tmp_path, seed + i, (1.5 if i == 0 else 0.3) + rng.random()):
            assert acked.setdefault(index, rid) == rid, f"index {index} acknowledged twice for different records"
        last_note = _check(tmp_path, acked, last_note)
    assert len(acked) > KILLS, "the child acknowledged too few appends for the test to mean anything"


def _run_between(directory: Path, seed: int) -> tuple[list[tuple[int, str]], list[str], int]:
    """Run the child in ``between`` mode; SIGKILL it once it has committed groups that no
    checkpoint covers. Its acks, the checkpoints they came with, and the largest size it
    committed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_child", str(directory), str(seed), "between"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    acks: list[tuple[int, str]] = []
    notes: list[str] = []
    committed, after_hold, held = 0, 0, False
    deadline = time.monotonic() + 60
    while after_hold < 3 and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1).rstrip("\n")
        except queue.Empty:
            continue
        kind, _, rest = line.partition(" ")
        if kind == "held":
            held = True
        elif kind == "committed":
            committed = max(committed, int(rest))
            after_hold += held
        elif kind == "note":
            notes.append(base64.b64decode(rest).decode())
        elif kind == "ack":
            index, rid = rest.split()
            acks.append((int(index), rid))
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    reader.join(10)
    assert after_hold >= 3, f"the child committed {after_hold} groups after its key stopped signing: {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL, f"child ended by itself ({proc.returncode}): {err[-2000:]}"
    return acks, notes, committed


@pytest.mark.slow
def test_sigkill_between_commit_and_checkpoint(tmp_path: Path) -> None:
    seed = int(os.environ.get("TURTLES_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed: {seed} (set TURTLES_CRASH_SEED to reproduce)")
    acked: dict[int, str] = {}
    for index, rid in _run_child(tmp_path, seed, 1.5):  # a log with records and checkpoints
        acked[index] = rid
    last_note = _check(tmp_path, acked, None)
    for i in range(3):
        acks, notes, committed = _run_between(tmp_path, seed + 1 + i)
        for index, rid in acks:
            assert acked.setdefault(index, rid) == rid, f"index {index} acknowledged twice for different records"
        covered = max([Checkpoint.parse(split_note(n)[0]).size for n in (last_note, *notes)])
        assert committed > covered, "the kill did not land between a commit and its checkpoint"
        note = _check(tmp_path, acked, last_note)  # opens (the mark's check), audits, checks acks
        new = Checkpoint.parse(split_note(note)[0])
        assert new.size >= committed, f"committed {committed} entries but the store holds {new.size}"
        signer = SoftwareSigner.from_pem((tmp_path / "log.pem").read_bytes())
        with Holdings.open(tmp_path / "db", origin=ORIGIN, signer=signer,
                           roots=RootsPolicy.any_self_signed()) as holdings:
            log = holdings.own
            assert log is not None and log.size == new.size and log.checkpoint() == note
            for handed in notes:  # every checkpoint handed out before the kill is a prefix
                old = Checkpoint.parse(open_note(handed, log.vkey))
                verify_consistency(old.size, new.size, log.consistency_proof(old.size, new.size),
                                   old.root, new.root)
        last_note = note
