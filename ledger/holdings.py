"""Everything a node holds: one LevelDB, its own log, its mirrors, and the trust state.

Two kinds of trust state, on purpose:

* **Admission** is per log. A log admits a record only if its signers are rooted in
  records *of that same log* (a root the log declares, or a key delegated from one). This
  makes admission deterministic: a mirror replaying a peer's log reaches the same decision
  the peer did, whatever other logs the mirror happens to hold.
* **Verdicts** use one global :class:`~ledger.trust.TrustGraph` over every log held, so a
  chain can cross from one organisation's log into another's (a join). Its attestations
  are not held in memory: :class:`StoreAttestationIndex` reads them from the store's
  artefact and key indexes, up to each log's durable size.

Invariant: a record reaches the global graph only after it is durable in its log.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ledger._hash_cache import share_budget
from ledger.attestation import Attestation
from ledger.entry import LoggedRecord, Record
from ledger.errors import NotFoundError
from ledger.keys import KeyId, PublicKey, Signer
from ledger.log import Log
from ledger.mirror import Mirror
from ledger.procverify import VerifierProcesses
from ledger.reader import LogReader
from ledger.store import Database
from ledger.trust import RootsPolicy, TrustGraph, admit
from ledger.trust.admission import SignerPaths
from ledger.trust.attestations import lean

T = TypeVar("T")

HASH_CACHE_BYTES = 256 << 20
"""Default budget of a node's stored-hash caches, all logs together: every level of two
logs of two million entries each (32 bytes a hash, two hashes an entry)."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


class StoreAttestationIndex:
    """Attestations read from the store's indexes; holds nothing per record.

    Implements :class:`ledger.trust.attestations.AttestationIndex` over the logs that
    ``readers`` returns when asked (mirrors are added at run time). Only entries below a
    log's durable size count: a mirror stores entries beyond its checkpoint while it
    catches up, and a verdict must rest on records a signed checkpoint covers.
    """

    def __init__(self, readers: Callable[[], Iterable[LogReader]]) -> None:
        self._readers = readers

    def add(self, rec: LoggedRecord) -> None:
        """Nothing to do: the store indexed ``rec`` in the batch that made it durable."""

    def for_digest(self, sha256_hex: str) -> Sequence[LoggedRecord]:
        """Attestations with a subject of this digest (64 lowercase hex digits, else none)."""
        if not _HEX64.fullmatch(sha256_hex):
            return []
        return [r for log in self._readers() for r in _attestations(log, log.by_artefact(sha256_hex))]

    def by_signer(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        """Attestations signed by ``key_id`` (the key index also lists records about it)."""
        return [
            r for log in self._readers() for r in _attestations(log, log.by_key(key_id)) if key_id in r.signers
        ]


def _attestations(log: LogReader, indexes: list[int]) -> Iterator[LoggedRecord]:
    """The signed attestations among entries ``indexes`` of ``log`` below its size, in order."""
    size = log.size
    for i in sorted({i for i in indexes if i < size}):
        for rec in log.logged_records(i, i + 1):
            if isinstance(rec.record, Attestation) and rec.signers:
                yield lean(rec)


class LogGate:
    """Admission state of one log (implements :class:`ledger.log.Gatekeeper`).

    Every record added is also forwarded to ``on_add`` (the node's global graph).
    """

    def __init__(self, roots: RootsPolicy, on_add: Callable[[LoggedRecord], None] | None = None) -> None:
        self.graph = TrustGraph()
        self.roots = roots
        self._on_add = on_add
        self._memo = SignerPaths()

    def public_key(self, key_id: KeyId) -> PublicKey | None:
        """A key introduced by this log's records."""
        return self.graph.public_key(key_id)

    def key_table(self) -> dict[KeyId, PublicKey]:
        """Every key this log's records introduced (for verifying worker processes)."""
        return self.graph.key_table()

    def admit(self, *, record: Record, signers: tuple[KeyId, ...], origin: str, at: int) -> None:
        """Raise unless this log's own records admit ``signers`` to append ``record``."""
        admit(self.graph, record=record, signers=signers, origin=origin, at=at, roots_policy=self.roots,
              memo=self._memo)

    def add(self, rec: LoggedRecord) -> None:
        """Take a durable record into this log's state and the global graph.

        Admission depends on key records only, so attestations (the bulk of a log) go to
        the global graph alone: one in-memory copy per release, not two.
        """
        if not isinstance(rec.record, Attestation):
            self.graph.add(rec)
        if self._on_add is not None:
            self._on_add(rec)


class Holdings:
    """A node's ledger state. Open with :meth:`open`; close to release the LevelDB lock."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.graph = TrustGraph(StoreAttestationIndex(self.logs))
        self.own: Log | None = None
        self._mirrors: dict[str, Mirror] = {}
        # The global graph is written by sequencer/replication threads and read by queries;
        # every write and every query holds this lock (queries take milliseconds).
        self._graph_lock = threading.RLock()
        self._sharing = threading.Lock()  # one share_hash_cache at a time
        self.procs: VerifierProcesses | None = None  # shared by the own log and the mirrors
        self._hash_cache_bytes = HASH_CACHE_BYTES  # all the logs' stored-hash caches together

    def _add_to_graph(self, rec: LoggedRecord) -> None:
        with self._graph_lock:
            self.graph.add(rec)

    def read(self, query: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``query(*args, **kwargs)`` holding the graph lock (a consistent snapshot).

        Every read of :attr:`graph` from a thread other than the one appending must go
        through here (explain, impact, trace, bundles).
        """
        with self._graph_lock:
            return query(*args, **kwargs)

    def update(self, change: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a change to :attr:`graph` (e.g. ``graph.mark_equivocating``) under the lock."""
        with self._graph_lock:
            return change(*args, **kwargs)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        origin: str | None = None,
        signer: Signer | None = None,
        roots: RootsPolicy | None = None,
        create: bool = False,
        clock: Callable[[], int] | None = None,
        verify_processes: int = 0,
        hash_cache_bytes: int = HASH_CACHE_BYTES,
    ) -> Holdings:
        """Open the LevelDB at ``path``, replay every log into the trust state, open them.

        Args:
            path: the LevelDB directory.
            origin: this node's own log (None for a store of mirrors only).
            signer: the Ed25519 key that signs the own log's checkpoints.
            roots: which root records the own log admits.
            create: create the own log if it does not exist.
            clock: time source in Unix ms (tests).
            verify_processes: worker processes verifying large ``append_many`` calls on
                the own log and mirrored pages (0: threads only; see :mod:`ledger.procverify`).
            hash_cache_bytes: memory for the stored-hash caches of all the logs together,
                shared out by :meth:`share_hash_cache` (0: proofs read every hash from the store).

        Raises:
            StoreLockedError: another process holds the store.
            CorruptionError: a stored log does not replay.
        """
        Path(path).mkdir(parents=True, exist_ok=True)
        db = Database(path)
        try:
            self = cls(db)
            self.procs = VerifierProcesses(verify_processes) if verify_processes > 0 else None
            self._hash_cache_bytes = hash_cache_bytes
            for name in db.origins():
                meta = db.log(name).meta() or {}
                if name != origin and meta.get("kind") == "mirror":
                    self._open_mirror(name, str(meta["vkey"]))
            if origin is not None:
                if signer is None:
                    raise NotFoundError("opening the own log needs its signing key")
                self.own = self._open_own(origin, signer, roots or RootsPolicy.any_self_signed(), create, clock)
            self.share_hash_cache()
        except BaseException:
            db.close()
            raise
        return self

    def _open_own(
        self, origin: str, signer: Signer, roots: RootsPolicy, create: bool, clock: Callable[[], int] | None,
    ) -> Log:
        gate = LogGate(roots, self._add_to_graph)
        store = self.db.log(origin)
        _replay(LogReader(store), gate)
        kw: dict[str, Any] = {"procs": self.procs}
        if clock:
            kw["clock"] = clock
        if store.meta() is None:
            if not create:
                raise NotFoundError(f"no log {origin!r} in {self.db.path}", hint="run `turtles log init`")
            log = Log.create(self.db, origin, signer=signer, gate=gate, **kw)
        else:
            log = Log(store, signer=signer, gate=gate, **kw)
        log.set_hash_cache_bytes(0)  # until share_hash_cache gives it its share
        return log

    def _open_mirror(self, origin: str, vkey: str) -> Mirror:
        gate = LogGate(RootsPolicy.any_self_signed(), self._add_to_graph)
        store = self.db.log(origin)
        _replay(LogReader(store), gate)
        mirror = Mirror(store, vkey=vkey, gate=gate, procs=self.procs)
        mirror.set_hash_cache_bytes(0)  # until share_hash_cache gives it its share
        self._mirrors[origin] = mirror
        return mirror

    def mirror(self, origin: str, vkey: str) -> Mirror:
        """The mirror of ``origin``, created empty on first use."""
        if origin in self._mirrors:
            return self._mirrors[origin]
        if self.own is not None and origin == self.own.origin:
            raise NotFoundError(f"{origin} is this node's own log, not a mirror")
        Mirror.create(self.db.log(origin), vkey=vkey)
        mirror = self._open_mirror(origin, vkey)
        self.share_hash_cache()
        return mirror

    def share_hash_cache(self) -> None:
        """Share the node's stored-hash cache budget out among its logs by their sizes now
        (:func:`ledger._hash_cache.share_budget`: the most levels that fit, the smallest
        first). A log that grows keeps its share (its lowest levels leave as they outgrow
        it) until the next call; a node calls this periodically. Levels that no longer fit
        are dropped; those that now fit are read."""
        with self._sharing:
            logs = list(self.logs())
            for log, budget in zip(logs, share_budget([r.size for r in logs], self._hash_cache_bytes), strict=True):
                if log.hash_cache_budget != budget:
                    log.set_hash_cache_bytes(budget)

    @property
    def hash_cache_bytes(self) -> int:
        """The budget of all the logs' stored-hash caches together."""
        return self._hash_cache_bytes

    @property
    def mirrors(self) -> dict[str, Mirror]:
        """Mirrors by origin."""
        return dict(self._mirrors)

    def logs(self) -> Iterator[LogReader]:
        """The own log first, then every mirror."""
        if self.own is not None:
            yield self.own
        yield from tuple(self._mirrors.values())  # mirrors may be added meanwhile

    def reader(self, origin: str) -> LogReader:
        """The log (own or mirror) named ``origin``."""
        for log in self.logs():
            if log.origin == origin:
                return log
        raise NotFoundError(f"this node holds no log {origin!r}")

    def close(self) -> None:
        """Stop the sequencer and release the store."""
        if self.own is not None:
            self.own.close()
        if self.procs is not None:
            self.procs.close()
        self.db.close()

    def __enter__(self) -> Holdings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replay(reader: LogReader, gate: LogGate) -> None:
    """Feed a stored log's records into ``gate`` (they were verified when appended)."""
    for rec in reader.logged_records(0, reader.size):
        gate.add(rec)


__all__ = ["HASH_CACHE_BYTES", "Holdings", "LogGate", "StoreAttestationIndex"]
