"""The benchmark world: one log, one root, one delegated maintainer, many attestations.

Keys come from fixed seeds so that signatures are reproducible (Ed25519 is deterministic)
and the signing work can be reused between runs: the attestation signatures are made once,
by two processes in parallel, and kept in a cache directory (``$TURTLES_BENCH_CACHE``,
default ``~/.cache/turtles-bench``) as 64-byte signatures only -- the payloads are rebuilt
from their index. Every attestation is a distinct record (its own subject name and
digest) with its own signature, and the log verifies every one of them when appending.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation, make_statement
from ledger.entry import sign_record
from ledger.envelope import Envelope, Signature, pae
from ledger.holdings import Holdings
from ledger.keys import Signer, SoftwareSigner
from ledger.log import AppendResult, Log
from ledger.records import Delegation, RootRecord
from ledger.trust import RootsPolicy

ORIGIN = "bench.turtles/log"
CHUNK = 10_000
"""Attestations per cache file (and per unit of parallel signing)."""


def _seeded(label: str) -> SoftwareSigner:
    seed = hashlib.sha256(b"turtles-bench/" + label.encode()).digest()
    return SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


LOG_KEY = _seeded("log")
ROOT_KEY = _seeded("root")
MAINT_KEY = _seeded("maint")

# The statement of attestation i differs from this template only in its name and digest.
_NAME, _DIGEST = "pkg-@@@@@@@@@@", "f" * 64
_TEMPLATE = make_statement(subject=Artefact(_NAME, _DIGEST))


def attestation_payload(i: int) -> bytes:
    """The in-toto statement of attestation ``i`` (subject ``pkg-i``, a digest of ``i``)."""
    digest = hashlib.sha256(b"turtles-bench/artefact/%d" % i).hexdigest()
    return _TEMPLATE.replace(_NAME.encode(), b"pkg-%d" % i).replace(_DIGEST.encode(), digest.encode())


def _sign_chunk(chunk: int) -> bytes:
    """Signatures of attestations ``chunk*CHUNK .. +CHUNK``, concatenated (worker process)."""
    data = []
    for i in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        data.append(MAINT_KEY.sign(pae(PAYLOAD_TYPE, attestation_payload(i))))
    return b"".join(data)


def _cache_dir() -> Path:
    base = os.environ.get("TURTLES_BENCH_CACHE") or os.path.expanduser("~/.cache/turtles-bench")
    path = Path(base) / MAINT_KEY.key_id.removeprefix("sha256:")[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_signed(count: int, *, procs: int = 2) -> None:
    """Make sure the signatures of attestations ``0 .. count`` are cached (sign the missing)."""
    cache = _cache_dir()
    missing = [c for c in range(-(-count // CHUNK)) if not (cache / f"{c:06d}.sig").exists()]
    if not missing:
        return
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for chunk, sigs in zip(missing, pool.map(_sign_chunk, missing), strict=True):
            tmp = cache / f"{chunk:06d}.sig.tmp"
            tmp.write_bytes(sigs)
            tmp.replace(cache / f"{chunk:06d}.sig")


def attestations(start: int, stop: int) -> Iterator[Envelope]:
    """Signed envelopes of attestations ``start <= i < stop`` (call :func:`ensure_signed` first)."""
    cache = _cache_dir()
    kid = MAINT_KEY.key_id
    for chunk in range(start // CHUNK, -(-stop // CHUNK)):
        sigs = (cache / f"{chunk:06d}.sig").read_bytes()
        lo, hi = max(start, chunk * CHUNK), min(stop, (chunk + 1) * CHUNK)
        for i in range(lo, hi):
            off = (i - chunk * CHUNK) * 64
            yield Envelope(PAYLOAD_TYPE, attestation_payload(i), (Signature(kid, sigs[off : off + 64]),))


def attestation_list(start: int, stop: int) -> list[Envelope]:
    """:func:`attestations` as a list, signing what the cache lacks."""
    ensure_signed(stop)
    return list(attestations(start, stop))


@dataclass
class World:
    """An open Holdings whose own log holds the root and the maintainer's delegation."""

    holdings: Holdings
    path: Path

    @property
    def log(self) -> Log:
        """The own log."""
        assert self.holdings.own is not None
        return self.holdings.own

    def close(self) -> None:
        """Stop the sequencer, release the store."""
        self.holdings.close()


def grow(world: World, size: int, *, chunk: int = 8192) -> None:
    """Append fresh attestations until the log holds ``size`` entries (signing what is missing).

    Raises:
        RuntimeError: the log refused one of them (it never should).
    """
    start, stop = world.log.size - 2, size - 2
    ensure_signed(stop)
    for lo in range(start, stop, chunk):
        results = world.log.append_many(list(attestations(lo, min(stop, lo + chunk))))
        bad = [r for r in results if not isinstance(r, AppendResult) or r.duplicate]
        if bad:
            raise RuntimeError(f"the log refused a fresh attestation: {bad[0]}")


def bootstrap_envelopes() -> list[Envelope]:
    """The root record and the maintainer's delegation every benchmark log starts with."""
    return [
        sign_record(RootRecord("bench", ROOT_KEY.public_key, False, 1), [ROOT_KEY]),
        sign_record(
            Delegation(
                issuer=ROOT_KEY.key_id, subject=MAINT_KEY.public_key, name="maint", org="bench",
                artefacts=("pkg-*",), purposes=("release",), max_depth=0, not_before=0,
                not_after=None, created=1,
            ),
            [ROOT_KEY],
        ),
    ]


def open_world(path: Path, *, log_key: Signer = LOG_KEY, verify_processes: int = 0) -> World:
    """Create (or reopen) the benchmark log at ``path``."""
    holdings = Holdings.open(path, origin=ORIGIN, signer=log_key, roots=RootsPolicy.any_self_signed(), create=True,
                             verify_processes=verify_processes)
    world = World(holdings, path)
    if world.log.size == 0:
        for env in bootstrap_envelopes():
            world.log.append(env)
    return world


# Refuse at import to run with a template no node would accept.
Attestation.from_payload(attestation_payload(0))
