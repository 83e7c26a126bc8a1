"""Child process for the crash-safety test: appends forever, printing each acknowledgement.

Usage: python -m tests.ledger.crash_child DIR SEED

Prints one line per acknowledged append, ``ack <index> <record-id-hex>``, flushed only after
``Log.append``/``append_many`` returned (so the record is durable and checkpointed). The
parent SIGKILLs this process at random instants.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.entry import sign_record
from ledger.envelope import sign_envelope
from ledger.holdings import Holdings
from ledger.keys import SoftwareSigner
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy

ORIGIN = "crash.test/log"


def _key(directory: Path, name: str) -> SoftwareSigner:
    path = directory / f"{name}.pem"
    if not path.exists():
        path.write_bytes(SoftwareSigner.generate().to_pem())
    return SoftwareSigner.from_pem(path.read_bytes())


def main() -> None:
    directory, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    log_key, root, maint = _key(directory, "log"), _key(directory, "root"), _key(directory, "maint")
    holdings = Holdings.open(directory / "db", origin=ORIGIN, signer=log_key,
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


if __name__ == "__main__":
    main()
