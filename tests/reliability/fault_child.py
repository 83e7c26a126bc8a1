"""One storage operation on a world, run in a child process that the fault tests trace.

Usage: ``python -m tests.reliability.fault_child MODE DIR [COUNT]``

The child imports everything, loads its keys and (except in ``open`` mode) opens the store
first, prints ``ready`` and waits for ``go`` on stdin, so that a tracer attached in between
(``strace -p``; it counts syscalls per syscall and per thread from the moment it attaches)
sees the operation under test and nothing before it. Then, by MODE:

``append``      append the envelope in ``DIR/next.json``; retry it once in the same process
                if the first attempt raised a ledger error.
``append-more`` as ``append``, then append COUNT further attestations (keeps going after an
                error, as a live node would).
``session``     as ``append-more``, but the store is opened after ``go`` (the tracer sees the
                LevelDB recovery too).
``checkpoint``  the store's head has no signed checkpoint (a crash lost it): open the own log,
                which signs and stores the checkpoint for the head.
``open``        open the store (LevelDB recovery and the trust-state replay), read the head.

Output, one line each, flushed: ``ack INDEX RID SHA256(NOTE)`` after an append returned,
``note SIZE BASE64(NOTE)`` for every checkpoint acknowledged, ``ack-open SIZE ROOT`` after
``open``, ``error CLASS MESSAGE`` for a ledger error (then exit status 3 unless a later
attempt succeeded). Anything else raised is a bug: traceback on stderr, exit status 1.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

from ledger.envelope import Envelope
from ledger.errors import TurtlesError
from ledger.holdings import Holdings, LogGate
from ledger.log import AppendResult, Log
from ledger.store import Database
from ledger.trust import RootsPolicy
from tests.reliability.world import ORIGIN, Keys, attestation, open_holdings, rid_of


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _ack(env: Envelope, res: AppendResult) -> None:
    note = res.checkpoint.encode()
    _say(f"note {res.size} {base64.b64encode(note).decode()}")
    _say(f"ack {res.index} {rid_of(env)} {hashlib.sha256(note).hexdigest()}")


def _error(e: TurtlesError) -> None:
    _say(f"error {type(e).__name__} {e.message}".replace("\n", " "))


def _append(holdings: Holdings, env: Envelope, attempts: int) -> bool:
    log = holdings.own
    assert log is not None
    for _ in range(attempts):
        try:
            res = log.append(env, timeout=60)
        except TurtlesError as e:
            _error(e)
            continue
        _ack(env, res)
        return True
    return False


def main() -> int:
    mode, directory = sys.argv[1], Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    keys = Keys.load(directory)
    try:
        return _run(mode, directory, keys, count)
    except TurtlesError as e:
        _error(e)
        return 3


def _go() -> bool:
    _say("ready")
    return sys.stdin.readline().strip() == "go"


def _run(mode: str, directory: Path, keys: Keys, count: int) -> int:
    # Whatever a mode does before _go() happens before the tracer attaches. Only the
    # operation under test runs after it, so that the main thread's syscall counts are
    # the operation's own (strace counts per syscall and per thread).
    if mode == "open":
        if not _go():
            return 2
        with open_holdings(directory, keys) as holdings:
            assert holdings.own is not None
            _say(f"ack-open {holdings.own.size} {holdings.own.head.root.hex()}")
        return 0
    if mode == "checkpoint":
        with Database(directory / "db") as db:
            store = db.log(ORIGIN)
            if not _go():
                return 2
            log = Log(store, signer=keys.log, gate=LogGate(RootsPolicy.any_self_signed()))
            signed = log.checkpoint()
            assert signed is not None
            note = signed.encode()
            log.close()
            _say(f"note {log.size} {base64.b64encode(note).decode()}")
            _say(f"ack-checkpoint {log.size} {hashlib.sha256(note).hexdigest()}")
        return 0
    env = Envelope.from_json((directory / "next.json").read_bytes())
    extra = [attestation(keys.maint, 10_000 + i) for i in range(count)]
    if mode == "session" and not _go():
        return 2
    with open_holdings(directory, keys) as holdings:
        if mode != "session" and not _go():
            return 2
        ok = _append(holdings, env, 2)
        for more in extra:
            ok = _append(holdings, more, 1) and ok
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
