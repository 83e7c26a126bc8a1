"""Verifying attestation envelopes in worker processes, for bulk appends and mirroring.

Why: in one CPython process every byte of Python holds the GIL. Signature verification
itself releases it (``ledger._ed25519``), but parsing the in-toto statement and the Python
around each signature do not, and with the sequencer's own work they make the GIL, not the
two cores, the limit of a thread pool (about 80 us of GIL per attestation against ~55 us of
signature). Worker processes have their own GIL: they run the very same
:func:`~ledger.verification.verify_envelope` on a copy of each envelope and send back only
what the log needs to admit, chain and index the record.

What crosses the pipe: to a worker, the payload type, payload and signatures of each
envelope and the DER of every key the parent's gatekeeper knows for its key ids; back, for
an attestation that verified, its signers, record id, subjects, predicate type, materials,
builder and the envelope's canonical msgpack (the bytes the entry will hold, made from the
copy that was verified). The parent rebuilds a *lean* :class:`~ledger.attestation.Attestation` (its
``statement`` left empty, as :func:`ledger.trust.attestations.lean` does for the trust
graph): the log never reads the statement; readers re-parse stored entries.

What does not: anything that is not an attestation, any envelope that fails, and any
envelope whose signer the parent does not know yet come back as ``None``, and the caller
verifies those itself, in its own process, so every refusal is raised by the same code,
with the same message, as without workers. A broken pool (a worker killed) is replaced,
and the chunk is verified in the caller's process instead.

Workers are started with ``forkserver`` (never ``fork``: a node's process holds threads and
locks that a forked child would inherit mid-use). As with any ``multiprocessing`` use, a
script that turns workers on must keep its top-level code under ``if __name__ ==
"__main__"``: each worker imports the main module.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation
from ledger.entry import Entry, LoggedRecord, Record
from ledger.envelope import Envelope, Signature
from ledger.errors import TurtlesError
from ledger.keys import KeyId, PublicKey
from ledger.verification import Gatekeeper, Prepared, verify_envelope

_Item = tuple[str, bytes, tuple[tuple[str, bytes], ...]]
_Parts = tuple[tuple[KeyId, ...], bytes, tuple[tuple[str, str], ...], str, tuple[tuple[str, str], ...], str | None,
               bytes]

_WORKER_KEYS: dict[bytes, PublicKey] = {}  # in a worker: DER -> parsed key, kept between chunks


class _KnownKeys:
    """The one part of a Gatekeeper a worker needs: the keys the parent knows."""

    def __init__(self, keys: dict[KeyId, PublicKey]) -> None:
        self._keys = keys

    def public_key(self, key_id: KeyId) -> PublicKey | None:
        return self._keys.get(key_id)

    def admit(self, *, record: Record, signers: tuple[KeyId, ...], origin: str, at: int) -> None:
        raise AssertionError("workers never admit")  # pragma: no cover

    def add(self, rec: LoggedRecord) -> None:
        raise AssertionError("workers never add")  # pragma: no cover


def exit_with(owner: int) -> None:
    """Worker initializer: leave when process ``owner`` (the node) is gone.

    A worker's parent is the forkserver, not the node, so a node killed with SIGKILL would
    otherwise leave its workers (and, through them, the forkserver) running for ever. A
    daemon thread looks once a second whether ``owner`` still runs (and is not a zombie).
    """

    def watch() -> None:
        while _alive(owner):
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-owner", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _key(der: bytes) -> PublicKey:
    key = _WORKER_KEYS.get(der)
    if key is None:
        if len(_WORKER_KEYS) > 4096:
            _WORKER_KEYS.clear()
        key = _WORKER_KEYS[der] = PublicKey.from_der(der)
    return key


def verify_chunk(keys: dict[str, bytes], items: Sequence[_Item]) -> list[_Parts | None]:
    """Verify each envelope (runs in a worker); None for what the caller must verify itself."""
    known = _KnownKeys({KeyId(kid): _key(der) for kid, der in keys.items()})
    out: list[_Parts | None] = []
    for ptype, payload, sigs in items:
        if ptype != PAYLOAD_TYPE:
            out.append(None)
            continue
        try:
            env = Envelope(ptype, payload, tuple(Signature(k, s) for k, s in sigs))
        except TurtlesError:
            out.append(None)
            continue
        out.append(_verified_parts(known, env))
    return out


def check_entries(keys: dict[str, bytes], raws: Sequence[bytes]) -> list[tuple[tuple[str, ...], _Parts | None] | None]:
    """For a mirror's page (runs in a worker): per raw entry, the key ids of its envelope
    that ``keys`` holds and, for an attestation that verified with them, its parts. None
    for an entry that does not parse or holds a key record (the caller does those); parts
    None when nothing was checked or the check failed (the mirror redoes it in order)."""
    known = _KnownKeys({KeyId(kid): _key(der) for kid, der in keys.items()})
    out: list[tuple[tuple[str, ...], _Parts | None] | None] = []
    for raw in raws:
        try:
            env = Entry.from_bytes(raw).envelope
        except TurtlesError:
            out.append(None)
            continue
        if env.payload_type != PAYLOAD_TYPE:
            out.append(None)
            continue
        ids = tuple(k for k in env.key_ids if k in keys)
        if not ids:
            out.append(((), None))  # no signer known yet: a key record ahead introduces it
            continue
        out.append((ids, _verified_parts(known, env)))
    return out


def _verified_parts(known: _KnownKeys, env: Envelope) -> _Parts | None:
    try:
        p = verify_envelope(known, env)
    except TurtlesError:
        return None
    a = p.record
    assert isinstance(a, Attestation)
    return (p.signers, p.record_id, tuple((s.name, s.sha256) for s in a.subjects), a.predicate_type,
            tuple((m.name, m.sha256) for m in a.materials), a.builder, env.to_msgpack())


def prepared(env: Envelope, parts: _Parts | None) -> Prepared | None:
    """The Prepared a worker's parts stand for (a lean attestation), or None."""
    if parts is None:
        return None
    signers, rid, subjects, ptype, materials, builder, packed = parts
    env.adopt_msgpack(packed)
    record = Attestation(tuple(Artefact(n, d) for n, d in subjects), ptype,
                         tuple(Artefact(n, d) for n, d in materials), builder, {})
    return Prepared(env, record, signers, rid)


class VerifierProcesses:
    """A pool of ``workers`` processes verifying chunks of envelopes (started on first use)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("VerifierProcesses needs at least one worker")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload([__name__])  # workers fork with this module imported
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=exit_with,
                                                 initargs=(os.getpid(),))
            return self._pool

    def submit_entries(self, keys: dict[str, bytes], raws: Sequence[bytes]) -> Future[Any]:
        """Start :func:`check_entries` on a mirror's raw entries (see ``ledger._mirror_pages``)."""
        return self.run(check_entries, keys, list(raws))

    def submit(self, gate: Gatekeeper, envelopes: Sequence[Envelope]) -> Future[list[_Parts | None]]:
        """Start verifying ``envelopes`` against the keys ``gate`` knows now."""
        keys: dict[str, bytes] = {}
        for env in envelopes:
            for s in env.signatures:
                if s.keyid not in keys:
                    key = gate.public_key(KeyId(s.keyid))
                    if key is not None:
                        keys[s.keyid] = key.der
        items = [(e.payload_type, e.payload, tuple((s.keyid, s.sig) for s in e.signatures)) for e in envelopes]
        return self.run(verify_chunk, keys, items)

    def run(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` in a worker (``fn`` a module-level function, ``args`` picklable); a
        pool found broken is replaced and the Future fails (its caller then checks the chunk
        itself)."""
        try:
            return self._executor().submit(fn, *args)
        except (BrokenProcessPool, RuntimeError) as e:
            self.reset()
            failed: Future[Any] = Future()
            failed.set_exception(e)
            return failed

    def collect(self, future: Future[list[_Parts | None]], envelopes: Sequence[Envelope]) -> list[Prepared | None]:
        """The chunk's results as Prepared (None: verify it in the caller). Never raises:
        a broken pool is replaced and the whole chunk handed back to the caller."""
        try:
            parts = future.result()
        except (BrokenProcessPool, RuntimeError, OSError):
            self.reset()
            return [None] * len(envelopes)
        return [prepared(env, p) for env, p in zip(envelopes, parts, strict=True)]

    def reset(self) -> None:
        """Replace a broken pool (the next submission starts new workers)."""
        self._stop(wait=False)

    def close(self) -> None:
        """Stop the workers."""
        self._stop(wait=True)

    def _stop(self, *, wait: bool) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)


__all__ = ["VerifierProcesses", "check_entries", "exit_with", "prepared", "verify_chunk"]
