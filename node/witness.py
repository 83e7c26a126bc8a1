"""Witnessing on a node: cosigning peers' checkpoints, collecting cosignatures on the own log,
and acting on evidence.

:class:`NodeWitness` joins the pure :class:`~ledger.witness.Witness` (state in the node's
LevelDB) to the rest of the node:

* **witness side** -- :meth:`NodeWitness.add_checkpoint` answers C2SP ``add-checkpoint``
  for the logs of the configured peers; :meth:`NodeWitness.cosign_mirrored` cosigns a
  peer's checkpoint once the replicator has mirrored and re-verified every entry under it,
  with a consistency proof the mirror computes itself.
* **log side** -- :meth:`NodeWitness.push_request` / :meth:`NodeWitness.push_reply` run the
  C2SP client protocol against a peer's witness (learning its size from 409 replies) and
  merge the returned cosignatures into the note ``GET /checkpoint`` serves.
* **evidence** -- :meth:`NodeWitness.record` persists every evidence (LevelDB, synced),
  exposes it at ``GET /v1/equivocations``, counts it, and marks the origin equivocating in
  the trust graph when the evidence proves a split view (:func:`~ledger.witness.verify_evidence`).

Invariants: a cosignature is only ever added to the served note after it verifies under
the peer's cosigner key; trust is withdrawn from an origin only on evidence anyone can
re-check offline (an unproven failure pauses replication and is reported, no more).
Every method that touches LevelDB is synchronous: call it in a thread from async code.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiohttp import web

from ledger.checkpoint import (
    Checkpoint,
    NoteVerifier,
    add_signatures,
    cosigner_vkey,
    parse_verifier_key,
    split_note,
    verify_cosignature,
    verify_note,
)
from ledger.errors import CorruptionError, InputError, NotFoundError, TurtlesError, UnavailableError
from ledger.holdings import Holdings
from ledger.keys import Signer
from ledger.mirror import Mirror
from ledger.witness import (
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    Evidence,
    EvidenceStore,
    SizeConflictError,
    Witness,
    WitnessStore,
    verify_evidence,
)
from node.client import Reply
from node.config import PeerConfig
from node.metrics import Registry
from node.state import CHECKPOINTS, CONFIG, EQUIVOCATIONS, METRICS, RUNTIME

log = logging.getLogger("turtles.witness")


class NodeWitness:
    """A node's witness and cosignature collector. Build with :meth:`for_app` or directly."""

    def __init__(
        self,
        holdings: Holdings,
        *,
        name: str,
        signer: Signer,
        peers: Sequence[PeerConfig],
        enabled: bool = True,
        quorum: int = 0,
        serve: Callable[[str], None] | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
        metrics: Registry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holdings = holdings
        self.name = name
        self.enabled = enabled
        self.peers = {p.origin: p for p in peers}
        self.core = Witness(
            WitnessStore(holdings.db), name=name, signer=signer,
            logs={p.origin: p.vkey for p in peers}, on_evidence=self.record, clock=clock,
        )
        self.evidence = EvidenceStore(holdings.db)
        # Each peer's witness key: its log key's raw bytes under the cosignature/v1 type.
        self.cosigners: dict[str, NoteVerifier] = {
            p.origin: parse_verifier_key(cosigner_vkey(p.origin, parse_verifier_key(p.vkey).public_raw))
            for p in peers
        }
        self.cosigners[name] = parse_verifier_key(self.core.vkey)
        self._serve = serve
        self._publish = publish
        self._metrics = metrics or Registry()
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._collected: tuple[int, dict[str, str]] = (-1, {})
        # [witness] quorum: how many peer witnesses must cosign an own checkpoint for it to
        # count as witnessed (at least one); turtles_witnessed_size is the largest such size.
        self.quorum = max(quorum, 1)
        self._witnessed_size = -1
        self._metrics.gauge(
            "turtles_witness_quorum", "Peer witness cosignatures an own checkpoint needs to count as witnessed"
        ).set(self.quorum)
        self._recorded: set[tuple[str, str, str | None, str | None, int | None]] = set()
        for ev in self.evidence.all():
            self._take(ev, persist=False)

    # --- evidence -------------------------------------------------------------------------------

    def record(self, evidence: Evidence) -> None:
        """Persist, publish, count and act on ``evidence`` (idempotent per incident)."""
        self._take(evidence, persist=True)

    def _take(self, ev: Evidence, *, persist: bool) -> None:
        key = (ev.origin, ev.kind, ev.older, ev.newer, ev.index)
        with self._lock:
            if key in self._recorded:
                return
            self._recorded.add(key)
        if persist:
            self.evidence.add(ev)
            log.warning("evidence against %s (%s): %s", ev.origin, ev.kind, ev.message)
        self._metrics.counter("turtles_evidence_total", "Evidence recorded, by log and kind", ("origin", "kind")).inc(
            origin=ev.origin, kind=ev.kind
        )
        if self._publish is not None:
            self._publish(ev.to_dict())
        peer = self.peers.get(ev.origin)
        if peer is not None and verify_evidence(ev, peer.vkey):
            self.holdings.update(self.holdings.graph.mark_equivocating, ev.origin, ev)

    # --- witness side -------------------------------------------------------------------------

    def add_checkpoint(self, request: AddCheckpoint, *, source: str | None = None) -> str:
        """C2SP add-checkpoint for a peer's log (see :meth:`ledger.witness.Witness.add_checkpoint`)."""
        if not self.enabled:
            raise NotFoundError("this node does not witness other logs ([witness] enabled = false)")
        body = self.core.add_checkpoint(request, source=source)
        self._count(request.note, "made")
        return body

    def cosign_mirrored(self, mirror: Mirror, note: str, *, source: str | None = None) -> None:
        """Cosign ``note`` of a mirrored log whose entries the mirror holds up to its size.

        Also records which known witnesses cosigned the note (``set_witnessed``).

        Raises:
            ConsistencyError, WitnessProofError: the note contradicts what this witness
                cosigned before (the evidence is recorded).
        """
        cp = Checkpoint.parse(split_note(note)[0])
        if self.enabled and mirror.size >= cp.size:
            for _ in range(3):  # another request may move the stored size between read and check
                old = self.core.size(cp.origin)
                if old > cp.size or self._holds(cp):
                    break
                proof = tuple(mirror.consistency_proof(old, cp.size))
                try:
                    self.core.add_checkpoint(AddCheckpoint(old, proof, note), source=source)
                except SizeConflictError:
                    continue
                self._count(note, "made")
                break
        cosigners = self._cosigners_of(note)
        if self.enabled and mirror.size >= cp.size:
            cosigners.add(self.name)
        if cosigners:
            self.holdings.update(self.holdings.graph.set_witnessed, cp.origin, cp.size, cosigners)

    def _holds(self, cp: Checkpoint) -> bool:
        """Whether ``cp`` is exactly the checkpoint cosigned last (nothing new to sign)."""
        stored = self.core.cosigned(cp.origin)
        if stored is None:
            return False
        held = Checkpoint.parse(split_note(stored)[0])
        return (held.size, held.root) == (cp.size, cp.root)

    def crosscheck(self, origin: str, note: str, *, source: str | None = None) -> list[Evidence]:
        """Compare a note of ``origin`` gossiped by a peer with the mirror and the witness state."""
        found: list[Evidence] = []
        mirror = self.holdings.mirrors.get(origin)
        if mirror is not None:
            ev = mirror.crosscheck(note, source=source)
            if ev is not None:
                self.record(ev)
                found.append(ev)
        ev = self.core.crosscheck(note, source=source)
        if ev is not None:
            found.append(ev)
        return found

    def witnessed_notes(self) -> dict[str, str]:
        """The latest cosigned note of every witnessed log, with this node's cosignature."""
        notes = {o: self.core.cosigned_note(o) for o in self.core.origins}
        return {o: n for o, n in notes.items() if n is not None}

    def cosigned_notes(self) -> dict[str, str]:
        """The latest cosigned note of every witnessed log (the monitoring view)."""
        notes = {o: self.core.cosigned(o) for o in self.core.origins}
        return {o: n for o, n in notes.items() if n is not None}

    def _cosigners_of(self, note: str) -> set[str]:
        """Names of known witnesses whose cosignatures on ``note`` verify (none if any is bad)."""
        try:
            opened = verify_note(note, list(self.cosigners.values()), now=int(self._clock()))
        except TurtlesError:
            return set()
        return {s.name for s in opened.signatures if s.verified and s.timestamp is not None}

    # --- log side -------------------------------------------------------------------------------

    def push_request(self, peer: str) -> AddCheckpoint | None:
        """The add-checkpoint request for the own log's latest checkpoint to ``peer``'s witness.

        None when there is no own log, or the witness already cosigned the current checkpoint.

        Raises:
            CorruptionError: the witness cosigned a larger tree than the own log holds: the
                store was restored from a stale copy (RELIABILITY S6).
        """
        own = self.holdings.own
        if own is None:
            return None
        note = own.checkpoint()
        cp = Checkpoint.parse(split_note(note)[0])
        old = self._known.get(peer, 0)
        with self._lock:
            if old == cp.size and peer in self._collected[1] and self._collected[0] == cp.size:
                return None  # this witness already cosigned the current checkpoint
        if old > cp.size:
            raise CorruptionError(
                f"witness {peer} cosigned {own.origin} at size {old}, beyond the own log's {cp.size}",
                hint="the store was restored from a stale copy: re-mirror it from a peer before appending",
                current_size=cp.size, cosigned_size=old,
            )
        return AddCheckpoint(old, tuple(own.consistency_proof(old, cp.size)), note)

    def push_reply(self, peer: str, request: AddCheckpoint, reply: Reply) -> bool:
        """Take ``peer``'s answer to :meth:`push_request`; True when done, False to retry now.

        Raises:
            UnavailableError: the witness refused or answered something unusable.
        """
        if reply.status == 409 and reply.content_type == SIZE_CONTENT_TYPE:
            text = reply.body.decode("ascii", "replace")
            if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 21:
                raise UnavailableError(f"witness {peer}: malformed size in 409 reply {text[:40]!r}")
            size = int(text[:-1])
            retry = self._known.get(peer, 0) != size
            self._known[peer] = size
            return not retry
        if reply.status != 200:
            raise UnavailableError(f"witness {peer} refused the checkpoint: HTTP {reply.status} "
                                   f"{reply.body[:200].decode('utf-8', 'replace')}")
        text, _ = split_note(request.note)
        cp = Checkpoint.parse(text)
        verifier = self.cosigners.get(peer)
        lines = reply.body.decode("utf-8", "replace").splitlines()
        good = [ln for ln in lines if verifier is not None and _cosigns(text, ln, verifier, self._clock())]
        if not good:
            raise UnavailableError(f"witness {peer} answered no valid cosignature by its key")
        self._known[peer] = cp.size
        with self._lock:
            size, lines_by = self._collected
            if size != cp.size:
                size, lines_by = cp.size, {}
            lines_by[peer] = good[0]
            self._collected = (size, lines_by)
            merged = add_signatures(request.note, list(lines_by.values()))
            names = set(lines_by)
        if self._serve is not None:
            self._serve(merged)
        self.holdings.update(self.holdings.graph.set_witnessed, cp.origin, cp.size, names)
        if len(names) >= self.quorum and cp.size > self._witnessed_size:
            self._witnessed_size = cp.size
            self._metrics.gauge(
                "turtles_witnessed_size", "Largest own-log size whose checkpoint reached the witness quorum"
            ).set(cp.size)
        self._metrics.counter(
            "turtles_cosignatures_total", "Cosignatures made or collected", ("origin", "role")
        ).inc(origin=peer, role="collected")
        return True

    def _count(self, note: str, role: str) -> None:
        origin = note.split("\n", 1)[0]
        self._metrics.counter(
            "turtles_cosignatures_total", "Cosignatures made or collected", ("origin", "role")
        ).inc(origin=origin, role=role)


def _cosigns(text: str, line: str, verifier: NoteVerifier, now: float) -> bool:
    try:
        verify_cosignature(text, line, verifier, now=int(now))
    except TurtlesError:
        return False
    return True


WITNESS = web.AppKey("turtles.node_witness", NodeWitness)


async def witness_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: build the node's :class:`NodeWitness` once the holdings are open.

    Install it after the app's own holdings context and before ``replication_ctx``.
    """
    config, runtime = app[CONFIG], app[RUNTIME]
    holdings = runtime.open_holdings()
    if runtime.signer is None:
        raise InputError("the node's log key is not loaded: the witness cannot sign")
    served = app[CHECKPOINTS]
    witness = await asyncio.to_thread(
        NodeWitness, holdings, name=config.node.origin, signer=runtime.signer, peers=config.peers,
        enabled=config.witness.enabled, quorum=config.witness.quorum, serve=served.set, publish=app[EQUIVOCATIONS].add,
        metrics=app[METRICS],
    )
    app[WITNESS] = witness
    yield


__all__ = ["WITNESS", "NodeWitness", "witness_ctx"]
