"""Crash safety: SIGKILL an appending process at random instants, 24 times.

After every kill and restart: every acknowledged record is present at its acknowledged
index, a from-scratch audit passes, and the new checkpoint is consistent with the last one
seen before the kill (RELIABILITY S1, issue 2 item 9). The seed is printed so a failure
reproduces.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.audit import audit_log
from ledger.checkpoint import Checkpoint, open_note
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
