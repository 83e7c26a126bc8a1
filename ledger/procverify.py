"""Verifying attestation envelopes in worker processes, for bulk appends and mirroring.

Why: in one CPython process every byte of Python holds the GIL. Signature verification
itself releases it (``ledger._ed25519``), but parsing the in-toto statement and the Python
around each signature do not, and with the sequencer's own work they make the GIL, not the
two cores, the limit of a thread pool (about 80 us of GIL per attestation against ~55 us of
signature). Worker processes have their own GIL: they verify a copy of each envelope and
send back only what the log needs to admit, chain and index the record.

What crosses the pipe, for a bulk append (:meth:`VerifierProcesses.submit`): one msgpack
blob per chunk (:func:`_request`), written to the pipe as it is (not pickled; see
:mod:`ledger._workers`): the DER of every key the parent's gatekeeper knows for the chunk's
key ids and, per attestation with a known signer, its payload and signatures.
The worker (:func:`verify_attestations`) makes the check :func:`verify_envelope` makes for
an attestation, written out for these fields (:func:`attestation_parts`: the PAE once, each
known key's ``verify``, the statement read by :func:`ledger.attestation.lean_fields`; tests
pin it to :func:`verify_envelope`), and answers with one blob: per attestation that
verified, its signers, record id, subjects, predicate type, materials, builder, its
subjects' index row heads and, unless every envelope of the chunk holds it already (those
of a msgpack batch body do), the envelope's canonical msgpack (the bytes the entry will
hold, made from the copy that was verified), with the signer sets, predicate types and
builders of the chunk given once. The parent (:meth:`VerifierProcesses.collect`, the one
loop per envelope on its GIL) rebuilds a *lean* :class:`~ledger.attestation.Attestation`
(its ``statement`` left empty, as :func:`ledger.trust.attestations.lean` does for the
trust graph): the log never reads the statement; readers re-parse stored entries.
Mirrored pages make the same check through :func:`attestation_parts`
(``ledger._mirror_checks``); :meth:`VerifierProcesses.run` runs any module-level function.

What does not: anything that is not an attestation, any envelope that fails, any envelope
whose signer the parent does not know yet, and anything the worker has the least doubt
about come back as ``None``, and the caller verifies those itself, in its own process, so
every refusal is raised by the same code, with the same message, as without workers. A
broken pool (a worker killed) is replaced, and the chunk is verified in the caller's
process instead.

Workers are fresh interpreters (never ``fork``: a node's process holds threads and locks
that a forked child would inherit mid-use) that import only what their tasks name, in a
:class:`~ledger._workers.WorkerPool` (a pipe per worker, no feeder or manager thread).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from itertools import starmap
from typing import Any

import msgpack

from ledger._workers import WorkerPool
from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation, lean_fields
from ledger.encoding import is_unicode
from ledger.envelope import Envelope, pack_fields, pae
from ledger.errors import TurtlesError
from ledger.keys import KeyId, PublicKey
from ledger.verification import Gatekeeper, Prepared, attestation_heads, subject_head

_Parts = tuple[tuple[KeyId, ...], bytes, tuple[tuple[str, str], ...], str, tuple[tuple[str, str], ...], str | None,
               bytes]

_WORKER_KEYS: dict[bytes, PublicKey] = {}  # in a worker: DER -> parsed key, kept between chunks


def exit_with(owner: int) -> None:
    """Worker initializer: leave when process ``owner`` (the node) is gone.

    A worker leaves when its pipe closes, which a node killed with SIGKILL does too; but a
    worker in the middle of a long task would only see it at the end, and a wedged one
    never. A daemon thread looks once a second whether ``owner`` still runs (and is not a
    zombie).
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


def worker_key(der: bytes) -> PublicKey:
    """The key of ``der``, parsed once per worker process (a bounded cache)."""
    key = _WORKER_KEYS.get(der)
    if key is None:
        if len(_WORKER_KEYS) > 4096:
            _WORKER_KEYS.clear()
        key = _WORKER_KEYS[der] = PublicKey.from_der(der)
    return key


def verify_attestations(request: bytes) -> bytes:
    """Verify a chunk of attestations (runs in a worker); the request (see :func:`_request`)
    and the answer are one msgpack blob each, so crossing the pipe costs a copy.

    The answer: the distinct signer tuples, the distinct predicate types and builders, and
    per item None (the caller verifies it) or the :data:`_Parts` of an attestation that
    verified, its signers, predicate type and builder given as indexes into those tables
    (so that the caller shares one object for each, as the records it keeps do), followed
    by its subjects' index row heads (:func:`~ledger.verification.subject_head`: the
    hashing of the record's index rows, done here rather than on the sequencer).
    """
    keys, items, pack = msgpack.unpackb(request, use_list=False)
    known = {kid: worker_key(der) for kid, der in keys.items()}
    sets: dict[tuple[KeyId, ...], int] = {}
    names: dict[str | None, int] = {}
    rows: list[tuple[object, ...] | None] = []
    for item in items:
        parts = None if item is None else attestation_parts(known, *item, pack=pack)
        if parts is None:
            rows.append(None)
            continue
        signers, rid, subjects, ptype, materials, builder, packed = parts
        rows.append((sets.setdefault(signers, len(sets)), rid, subjects, names.setdefault(ptype, len(names)),
                     materials, names.setdefault(builder, len(names)), packed,
                     [subject_head(digest) for _, digest in subjects]))
    answer: bytes = msgpack.packb((list(sets), list(names), rows))
    return answer


def attestation_parts(
    known: Mapping[str, PublicKey], payload: bytes, sigs: tuple[tuple[str, bytes], ...], *, pack: bool = True
) -> _Parts | None:
    """What :func:`verify_envelope` returns for ``Envelope(PAYLOAD_TYPE, payload, sigs)``
    (fields an Envelope checked in the caller) against a gate knowing ``known``, as parts;
    None for anything else (a failure, no known signer, or a key not under its own id).
    ``pack=False`` leaves the envelope's canonical bytes out (``b""``): a mirror already
    holds them, in the entry it read."""
    data = pae(PAYLOAD_TYPE, payload)
    signers: list[KeyId] = []
    try:
        for kid, sig in sigs:
            key = known.get(kid)
            if key is None:
                continue
            if key.key_id != kid:  # verify_envelope looks keys up by their id: let it decide
                return None
            key.verify(signature=sig, data=data)  # the check Envelope.verify makes
            if key.key_id not in signers:
                signers.append(key.key_id)
        if not signers:
            return None
        subjects, ptype, materials, builder = lean_fields(payload)
        packed = pack_fields(PAYLOAD_TYPE, payload, sigs) if pack else b""
    except TurtlesError:
        return None
    return tuple(signers), hashlib.sha256(data).digest(), subjects, ptype, materials, builder, packed


def _request(gate: Gatekeeper, envelopes: Sequence[Envelope]) -> memoryview:
    """The request :func:`verify_attestations` reads: the DER of every key ``gate`` knows for
    the envelopes' key ids, per envelope its payload and ``(keyid, sig)`` pairs, or None
    when it is not an attestation or no signer is known (the worker could only hand it back),
    and whether the worker packs the envelopes (not when every attestation of the chunk
    holds its canonical bytes already, as those of a msgpack batch body do)."""
    keys: dict[str, bytes] = {}
    known: dict[str, bool] = {}
    items: list[tuple[bytes, tuple[tuple[str, bytes], ...]] | None] = []
    pack = False
    for env in envelopes:
        if env.payload_type != PAYLOAD_TYPE:
            items.append(None)
            continue
        pack = pack or env.packed() is None
        signatures = env.signatures
        if len(signatures) == 1:  # the common case, without a comprehension's call
            sigs: tuple[tuple[str, bytes], ...] = ((signatures[0].keyid, signatures[0].sig),)
        else:
            sigs = tuple([(s.keyid, s.sig) for s in signatures])
        any_known = False
        for kid, _ in sigs:
            ok = known.get(kid)
            if ok is None:
                ok = known[kid] = _ship_key(gate, kid, keys)
            any_known = any_known or ok
        items.append((env.payload, sigs) if any_known else None)
    packer = msgpack.Packer(autoreset=False)
    try:
        packer.pack((keys, items, pack))
    except UnicodeEncodeError:  # a key id that is not valid Unicode: that envelope stays here
        keys = {k: v for k, v in keys.items() if is_unicode(k)}
        packer.reset()
        packer.pack((keys, [i if i is not None and all(is_unicode(k) for k, _ in i[1]) else None for i in items],
                     pack))
    request: memoryview = packer.getbuffer()  # the packer's own bytes: no copy until the pipe's
    return request


def _ship_key(gate: Gatekeeper, kid: str, keys: dict[str, bytes]) -> bool:
    """Put the DER of the key ``gate`` knows for ``kid`` in ``keys``; False if it knows none."""
    key = gate.public_key(KeyId(kid))
    if key is None:
        return False
    keys[kid] = key.der
    return True


class VerifierProcesses:
    """A pool of ``workers`` processes verifying chunks of envelopes (started on first use)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("VerifierProcesses needs at least one worker")
        self.workers = workers
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    def _executor(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(self.workers, exit_with, (os.getpid(),))
            return self._pool

    def submit(self, gate: Gatekeeper, envelopes: Sequence[Envelope]) -> Future[bytes]:
        """Start verifying ``envelopes`` against the keys ``gate`` knows now (read the
        outcome with :meth:`collect`)."""
        return self.run(verify_attestations, _request(gate, envelopes))

    def run(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` in a worker (``fn`` a module-level function, ``args`` picklable); a
        pool found broken is replaced and the Future fails (its caller then checks the chunk
        itself)."""
        try:
            return self._executor().submit(fn, *args)
        except (BrokenProcessPool, RuntimeError, OSError) as e:  # OSError: no new worker could start
            self.reset()
            failed: Future[Any] = Future()
            failed.set_exception(e)
            return failed

    def collect(self, future: Future[bytes], envelopes: Sequence[Envelope]) -> list[Prepared | None]:
        """The outcome of :meth:`submit` as Prepared (None: verify it in the caller). Never
        raises: a broken pool is replaced and the whole chunk handed back to the caller."""
        try:
            answer = future.result()
        except BrokenProcessPool:
            self.reset()
            return [None] * len(envelopes)
        except Exception:  # the task itself failed (never, short of a bug): the caller verifies all
            return [None] * len(envelopes)
        sets, names, rows = msgpack.unpackb(answer, use_list=False)
        out: list[Prepared | None] = []
        lean, made = Attestation.lean, Prepared.made
        # One tight loop: it runs once per envelope, on the node's GIL.
        for env, row in zip(envelopes, rows, strict=True):
            if row is None:
                out.append(None)
                continue
            signers, rid, subjects, ptype, materials, builder, packed, heads = row
            if packed:
                env.adopt_msgpack(packed)
            record = lean(tuple(starmap(Artefact, subjects)), names[ptype],
                          tuple(starmap(Artefact, materials)) if materials else (), names[builder])
            signed = sets[signers]
            out.append(made(env, record, signed, rid, attestation_heads(rid, signed, heads)))
        return out

    def reset(self) -> None:
        """Replace a broken pool (the next submission starts new workers); a healthy one (a
        replacement another caller made already) is kept."""
        with self._lock:
            pool = self._pool
            if pool is None or not pool.broken:
                return
            self._pool = None
        pool.shutdown(wait=False)

    def close(self) -> None:
        """Stop the workers."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


__all__ = [
    "VerifierProcesses",
    "attestation_parts",
    "exit_with",
    "verify_attestations",
    "worker_key",
]
