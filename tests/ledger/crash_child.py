"""Child process for the crash-safety test: appends forever, printing each acknowledgement.

Usage: python -m tests.ledger.crash_child DIR SEED [between]

Prints one line per acknowledged append, ``ack <index> <record-id-hex>``, flushed only after
``Log.append``/``append_many`` returned (so the record is durable and checkpointed). The
parent SIGKILLs this process at random instants.

``between``: the kill is aimed between the two stages of a group commit. The log key stops
signing after a few checkpoints (it prints ``held`` and sleeps), while envelopes keep being
submitted one by one without waiting, so the sequencer keeps committing groups that no
checkpoint covers (``committed <size>`` after each). Each acknowledgement also prints the
checkpoint it came with (``note <base64>``). The parent kills it once it has seen commits
after ``held``.
"""

from __future__ import annotations

import base64
import hashlib
import random
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.entry import sign_record
from ledger.envelope import sign_envelope
from ledger.holdings import Holdings
from ledger.keys import PublicKey, SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy

ORIGIN = "crash.test/log"
_PRINT = threading.Lock()


def _say(line: str) -> None:
    with _PRINT:
        print(line, flush=True)


class _StopsSigning:
    """The log key; once ``left`` is set, it signs that many checkpoints and then never returns."""

    def __init__(self, key: SoftwareSigner) -> None:
        self._key = key
        self.left: int | None = None

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    def sign(self, data: bytes) -> bytes:
        if self.left is not None:
            self.left -= 1
        if self.left is not None and self.left < 0:
            _say("held")
            time.sleep(3600)
        return self._key.sign(data)


def _key(directory: Path, name: str) -> SoftwareSigner:
    path = directory / f"{name}.pem"
    if not path.exists():
        path.write_bytes(SoftwareSigner.generate().to_pem())
    return SoftwareSigner.from_pem(path.read_bytes())


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    between = sys.argv[3:] == ["between"]
    rng = random.Random(seed)
    log_key, root, maint = _key(directory, "log"), _key(directory, "root"), _key(directory, "maint")
    signer = _StopsSigning(log_key)
    holdings = Holdings.open(directory / "db", origin=ORIGIN, signer=signer,
                             roots=RootsPolicy.any_self_signed(), create=True)
    log = holdings.own
    assert log is not None
    if log.size == 0:
        for env in (
            sign_record(RootRecord("crash", root.public_key, False, 1), [root]),
            sign_record(Delegation(
                issuer=root.key_id, subject=maint.public_key, name="maint", org="crash",
                artefacts=("pkg-*",), purposes=("release",), max_depth=0, not_before=0,
                not_after=None, created=1), [root]),
        ):
            res = log.append(env)
            print(f"ack {res.index} {hashlib.sha256(env.pae()).hexdigest()}", flush=True)
    counter = rng.randrange(1 << 40)
    if between:
        signer.left = rng.randrange(4)
        _submit_forever(log, maint, rng, counter)
    while True:
        batch = []
        # Small, varied batches with pauses: kills land in every phase of an append while
        # the log stays small enough for the parent to audit it in full after every kill.
        time.sleep(rng.random() * 0.02)
        for _ in range(rng.choice((1, 1, 3, 12))):
            counter += 1
            digest = hashlib.sha256(counter.to_bytes(8, "big")).hexdigest()
            stmt = make_statement(subject=Artefact(f"pkg-{counter}", digest))
            batch.append(sign_envelope(INTOTO, stmt, [maint]))
        results = log.append_many(batch)
        for env, res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                print(f"error {res}", flush=True)
                sys.exit(3)
            print(f"ack {res.index} {hashlib.sha256(env.pae()).hexdigest()}", flush=True)


def _submit_forever(log: Log, maint: SoftwareSigner, rng: random.Random, counter: int) -> None:
    """Submit one envelope at a time without waiting for it, printing commits and acks."""
    commit = log.store.commit

    def committed(batch: object) -> None:
        commit(batch)  # type: ignore[arg-type]
        _say(f"committed {batch.head.size}")  # type: ignore[attr-defined]

    log.store.commit = committed  # type: ignore[method-assign]

    def told(env_hash: str, fut: Future[AppendResult]) -> None:
        if fut.exception() is None:
            res = fut.result()
            _say(f"note {base64.b64encode(res.checkpoint.encode()).decode()}")
            _say(f"ack {res.index} {env_hash}")

    while True:
        counter += 1
        digest = hashlib.sha256(counter.to_bytes(8, "big")).hexdigest()
        env = sign_envelope(INTOTO, make_statement(subject=Artefact(f"pkg-{counter}", digest)), [maint])
        env_hash = hashlib.sha256(env.pae()).hexdigest()
        log.submit(env).add_done_callback(lambda f, h=env_hash: told(h, f))
        time.sleep(rng.random() * 0.01)


if __name__ == "__main__":
    main()
