"""S3: power loss, simulated by dropping everything not fsynced (see power_loss.py).

One node session (open: LevelDB recovery; then 9 appends, each acknowledged) runs under
strace; the trace is replayed over the starting copy of the data directory and a power-cut
image is built after every durability-relevant event (each fsync/fdatasync of a file or of the
directory, each create, rename and unlink), in two variants: ``strict`` (the directory as of
its last fsync) and ``relaxed`` (every directory operation kept). Each image is opened as a
restarted node: the audit passes, every record acknowledged before the cut is at its index,
and every checkpoint acknowledged before the cut is stored exactly as it was signed.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest

from ledger.errors import TurtlesError
from tests.reliability.power_loss import TRACED, Disk, calls_of, materialise
from tests.reliability.scoreboard import Recorder
from tests.reliability.strace_faults import run_child
from tests.reliability.world import (
    Keys,
    attestation,
    build_world,
    check_world,
    extend_world,
    read_acks,
)

APPENDS = 8  # after the first one


@pytest.mark.slow
@pytest.mark.scenario("S3", outcome="survived")
def test_power_cut_after_every_durability_event(tmp_path: Path, score: Recorder) -> None:
    template = tmp_path / "template"
    build_world(template, 8)
    extend_world(template, 4)
    (template / "next.json").write_bytes(attestation(Keys.load(template).maint, 999).to_json())
    world = tmp_path / "run" / "world"
    world.parent.mkdir()
    shutil.copytree(template, world)
    run = run_child("session", world, ["-xx", "-s", "100000000", "-e", "trace=" + ",".join(TRACED)],
                    count=APPENDS)
    assert run.returncode == 0 and len(run.acks) == APPENDS + 1, run.stderr[-2000:]

    disk = Disk.load(template / "db", str(world / "db"))
    acked = read_acks(template)
    notes: dict[int, str] = {}
    images: set[str] = set()
    problems: list[str] = []
    cuts = 0
    calls = calls_of(run.trace)
    for i, call in enumerate([*calls, None]):  # None: the state at the end of the trace
        kind = "end" if call is None else disk.apply(call)
        if kind == "stdout":
            _take_acks(disk.stdout[-1], acked, notes)
            continue
        if kind not in ("sync", "dirsync", "create", "rename", "unlink", "end"):
            continue
        cuts += 1
        for strict in (True, False):
            files = {n: inode.synced for n, inode in (disk.durable_names if strict else disk.names).items()}
            digest = hashlib.sha256(repr(sorted((n, hashlib.sha256(d).digest()) for n, d in files.items())).encode()).hexdigest()
            if digest in images:
                continue
            images.add(digest)
            image = materialise(template, disk, tmp_path / "images" / f"{i}-{'strict' if strict else 'relaxed'}", strict=strict)
            what = f"cut after call {i} ({kind} {call.name if call else ''}, {'strict' if strict else 'relaxed'})"
            try:
                check_world(image, acked, acked_notes=notes)
                score.tried("S3", "survived", evidence=f"{what}: {len(acked)} acknowledged records kept")
            except (AssertionError, TurtlesError) as e:
                problems.append(f"{what}: {e}")
                score.failed("S3", f"{what}: {e}", lost=1)
            shutil.rmtree(image)
    print(f"{len(calls)} calls, {cuts} cut points, {len(images)} distinct images")
    assert cuts > 2 * APPENDS, "the trace holds fewer durability events than the appends need"
    assert not problems, "\n".join(problems)
    # The replay is faithful: it ends where the real run ended, byte for byte.
    real = {f.name: f.read_bytes() for f in (world / "db").iterdir()}
    assert {n: bytes(i.data) for n, i in disk.names.items()} == real
    # And the check has teeth: losing the last synced bytes of the log loses an acknowledgement.
    image = materialise(template, disk, tmp_path / "images" / "control", strict=False)
    newest = max((image / "db").glob("*.log"))
    newest.write_bytes(newest.read_bytes()[:-500])  # into the last entries batch
    with pytest.raises((AssertionError, TurtlesError)):
        check_world(image, acked, acked_notes=notes)


def _take_acks(chunk: str, acked: dict[int, str], notes: dict[int, str]) -> None:
    for line in chunk.splitlines():
        parts = line.split(" ")
        if parts[0] == "ack" and len(parts) == 4:
            assert acked.setdefault(int(parts[1]), parts[2]) == parts[2]
        elif parts[0] == "note" and len(parts) == 3:
            note = base64.b64decode(parts[2]).decode()
            notes[int(note.split("\n")[1])] = note
