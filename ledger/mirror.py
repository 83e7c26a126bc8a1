"""A verified copy of a peer's log, applied page by page under its signed checkpoints.

:meth:`Mirror.apply` takes a signed checkpoint ``note`` of the peer's log, the next page of raw entries (the
leaves at ``[tip, tip + len(entries))``) and a consistency proof from ``tip + len(entries)`` to the
checkpoint's size. It checks, before writing anything:

1. the note verifies under the log's vkey and names this log;
2. each entry parses, has the right ``seq``, chains to the previous leaf (``prev``) and does not go back in
   time;
3. the Merkle root over every stored entry plus the page is a prefix of the checkpoint's tree (the proof; when
   the page ends at the checkpoint's size, the roots are equal);
4. each record re-verifies (signatures, and admission against this log's own records at the entry's timestamp:
   :func:`ledger.log.logged_from_entry`, the same rules the origin's sequencer applied).

Then it commits the entries, their stored hashes, index rows and the new head in one synced batch and feeds
the records to the gate. Parsing and the signature checks (step 4 without admission) run in worker processes
or a thread pool (:mod:`ledger._mirror_pages`), which hand back what the ordered work needs
(:mod:`ledger._mirror_checks`). Pass the page as raw bytes, or start it earlier with :meth:`Mirror.preverify`
(a replicator does so for the next pages while this one is applied) and pass the ``PendingPage``. Like the
sequencer, a key record ends a commit: a call applies the page up to and including its first key record and
returns how many entries it took; call again with the rest (the same proof still holds).

Invariants:
* Every call is atomic: a failure leaves the store and the gate exactly as they were and raises with evidence
  (:class:`~ledger.errors.ConsistencyError`, ``exhibit`` an :class:`~ledger.witness.Evidence`, ``index`` where
  the data diverged).
* Everything stored is verified and is a proven prefix of a checkpoint the log signed, consistent with every
  checkpoint stored before. A checkpoint note is stored once the entries reach its size (so stored notes never
  exceed the stored entries).
* Reads (:class:`~ledger.reader.LogReader`) stop at the size of the latest stored checkpoint, so every entry
  or proof served is covered by a signed note; :attr:`tip` is the stored size, which is ahead while a catch-up
  is under way. The state is all in the store: after an interruption the mirror resumes from :attr:`tip`, and
  nothing it holds is verified again (:attr:`verified` counts the signature checks this object made).
* Each entry's envelope is checked once against the keys it is admitted under; a check made ahead under other
  keys (a key record was taken in meanwhile), or not made, or failed, is made again under the current keys
  before admission. What is stored is the raw bytes this process holds: a worker's result counts only if it
  hashed the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ledger import merkle
from ledger._mirror_checks import (
    EPOCH,
    IDS,
    KEY,
    LEAF,
    LOGGED,
    NAMES,
    PREV,
    ROWS,
    SEQ,
    TS,
    Checked,
    Item,
)
from ledger._mirror_pages import Checker, Learned, Pages, PendingPage, Tally, verify_now
from ledger._mirror_tree import page_root
from ledger.checkpoint import Checkpoint, open_note, parse_verifier_key
from ledger.entry import Entry, LoggedRecord
from ledger.errors import (
    ConsistencyError,
    InputError,
    NoteError,
    NotFoundError,
    ProofError,
    TurtlesError,
)
from ledger.keys import KeyId
from ledger.procverify import VerifierProcesses
from ledger.reader import LogReader
from ledger.store import Batch, Head, LogStore
from ledger.verification import Gatekeeper
from ledger.witness import Evidence, SplitView, fork_split, proof_evidence, same_size_evidence

KIND = "mirror"


class Mirror(LogReader):
    """The mirror of one peer log. Make one with :meth:`create`, then open it."""

    def __init__(self, store: LogStore, *, vkey: str, gate: Gatekeeper, procs: VerifierProcesses | None = None) -> None:
        meta = store.meta()
        if meta is None:
            raise NotFoundError(f"no mirror of {store.origin!r} in this store")
        if meta.get("kind") != KIND or meta.get("vkey") != vkey:
            raise InputError(
                f"log {store.origin!r} is stored as {meta.get('kind')} with key {meta.get('vkey')}, "
                f"not as a mirror with key {vkey}"
            )
        super().__init__(store)
        self.vkey = vkey
        self._gate = gate
        self._lock = threading.Lock()
        self._epoch = 0  # key records taken into the gate by this object (see _mirror_pages)
        self._tally = Tally()
        self._checker = Checker(self.origin, gate, self._current_epoch, self._tally, procs)
        self._pages = Pages()  # pages started and not applied yet
        self._learned = Learned(gate)  # the key ids each epoch brought
        self._tip = self._head
        self._last_ts = 0 if self._tip.size == 0 else Entry.from_bytes(store.entry(self._tip.size - 1)).ts
        self._target: str | None = None
        self._checkpoint = None
        self._head = Head(0, merkle.EMPTY_ROOT, bytes(32))
        latest = store.latest_checkpoint()  # never above the tip: notes are stored once reached
        if latest is not None:
            self._cover(*latest)

    @classmethod
    def create(cls, store: LogStore, *, vkey: str) -> None:
        """Write the meta of a new, empty mirror of ``store.origin`` signed by ``vkey``."""
        if store.meta() is not None:
            raise InputError(f"log {store.origin!r} already exists in this store")
        parse_verifier_key(vkey)
        store.create({"origin": store.origin, "vkey": vkey, "kind": KIND})

    # --- state -------------------------------------------------------------------------------

    def checkpoint(self) -> str | None:
        """The latest verified checkpoint note whose entries are all held (None when empty)."""
        return self._checkpoint

    @property
    def tip(self) -> Head:
        """The stored head: entries verified so far, possibly beyond :meth:`checkpoint`."""
        return self._tip

    @property
    def target(self) -> str | None:
        """The verified checkpoint a catch-up under way is heading for (this process only)."""
        return self._target

    @property
    def verified(self) -> int:
        """Envelopes whose signatures this object checked (each entry once, unless a key
        record it was checked before changed the keys it is admitted under)."""
        return self._tally.value

    def preverify(self, entries: Sequence[bytes]) -> PendingPage:
        """Start parsing and checking the signatures of a page that follows the one being
        applied (in worker processes or the thread pool); returns at once. Pass the result
        to :meth:`apply`."""
        return self._pages.add(PendingPage(entries, self._checker.start(entries)))

    def _current_epoch(self) -> int:
        return self._epoch

    # --- applying ------------------------------------------------------------------------------

    def apply(
        self, *, note: str, entries: Sequence[bytes] | PendingPage, proof: Sequence[bytes],
        source: str | None = None,
    ) -> int:
        """Verify a page of entries under the checkpoint ``note`` and store it; see the module doc.

        Returns:
            How many entries were stored (all, or up to the first key record).

        Raises:
            NoteError: ``note`` does not verify under the vkey or names another log.
            InputError: the page runs past the checkpoint's size.
            ConsistencyError: the data contradicts the held state or the checkpoint
                (``exhibit``, ``index``, ``older``, ``newer``, ``proof``).
            StorageError: the store failed (nothing was written).
        """
        cp = self._open(note)
        with self._lock:
            tip = self._tip
            base = tip.size + len(entries)
            if cp.size < base:
                if entries:
                    raise InputError(f"page ends at {base}, past the checkpoint's size {cp.size}")
                evidence = self._compare_held(note, cp, source)
                if evidence is not None:
                    raise self._error(evidence)
                return 0
            pending = entries if isinstance(entries, PendingPage) else self.preverify(entries)
            checked = pending.results() if len(pending) else []
            items, leaves, count = self._chain(tip, checked, note, source)
            hashes = merkle.stored_hashes_for_leaves(tip.size, leaves, self.stored_hashes)
            root = page_root(base, tip.size, hashes, self.stored_hashes)
            try:
                merkle.verify_consistency(base, cp.size, proof, root, cp.root)
            except ProofError as e:
                raise self._error(self._proof_failure(note, cp, proof, bool(entries), source), e.message) from e
            if count:
                self._commit(tip, base, items[:count], pending.raws()[:count], hashes, root, note, source)
                pending.applied(count)
                self._renew()
            if self._tip.size == cp.size:
                if self._checkpoint is None or self._head.size < cp.size:
                    self._store.put_checkpoint(cp.size, note)
                    self._cover(cp.size, note)
                self._target = None
            else:
                self._target = note
            return count

    def _chain(
        self, tip: Head, checked: Sequence[Checked], note: str, source: str | None
    ) -> tuple[list[Item], list[bytes], int]:
        """The page's items and leaf hashes, and how many entries the commit takes (up to and
        including its first key record), once every entry parses and chains."""
        items: list[Item] = []
        leaves: list[bytes] = []
        count = 0
        seq, prev, last_ts = tip.size, tip.last, self._last_ts
        for c in checked:
            if isinstance(c, TurtlesError):
                raise self._error(self._bad(note, seq, f"entry {seq} does not parse: {c.message}", source)) from c
            if c[SEQ] != seq or c[PREV] != prev or c[TS] < last_ts:
                problem = (
                    f"entry {seq} claims seq {c[SEQ]}" if c[SEQ] != seq
                    else f"entry {seq} does not chain to the previous leaf" if c[PREV] != prev
                    else f"entry {seq} goes back in time ({c[TS]} < {last_ts})"
                )
                raise self._error(self._bad(note, seq, problem, source))
            prev, last_ts = c[LEAF], c[TS]
            items.append(c)
            leaves.append(prev)
            seq += 1
            if c[KEY] and not count:
                count = len(leaves)
        return items, leaves, count or len(leaves)

    def _commit(
        self, tip: Head, base: int, chunk: Sequence[Item], raws: Sequence[bytes],
        hashes: list[tuple[int, int, bytes]], root: bytes, note: str, source: str | None,
    ) -> None:
        start, stop = tip.size, tip.size + len(chunk)
        gate, origin, epoch = self._gate, self.origin, self._epoch
        items: list[Item | TurtlesError] = list(chunk)
        # Checks made ahead under other keys (or not made, or failed) are redone now, together.
        stale = [i for i, c in enumerate(chunk) if self._stale(c, epoch)]
        if stale:
            redone = verify_now(self._checker, epoch, [raws[i] for i in stale])
            for i, r in zip(stale, redone, strict=True):
                items[i] = r
        logged: list[LoggedRecord] = []
        rows: list[tuple[bytes, bytes]] = []
        admit, seq = gate.admit, start
        try:
            for c in items:
                if isinstance(c, TurtlesError):
                    raise c
                rec = c[LOGGED]
                assert rec is not None and rec.index == seq
                # The same admission as ledger.verification.logged_from_entry, at the entry's time.
                admit(record=rec.record, signers=rec.signers, origin=origin, at=rec.ts)
                logged.append(rec)
                rows += c[ROWS]
                seq += 1
        except TurtlesError as e:
            msg = f"entry {seq} is in the signed tree but its record does not verify: {e.message}"
            raise self._error(self._bad(note, seq, msg, source, kind="bad-record")) from e
        if stop == base:  # the whole page: every hash made is inside it
            head, kept = Head(stop, root, chunk[-1][LEAF]), hashes
        else:
            head = Head(stop, page_root(stop, start, hashes, self.stored_hashes), chunk[-1][LEAF])
            kept = [(lv, ix, h) for lv, ix, h in hashes if ((ix + 1) << lv) <= stop]
        self._store.commit(Batch(list(zip(range(start, stop), raws, strict=True)), kept, rows, head))
        self._tip, self._last_ts = head, chunk[-1][TS]
        for rec in logged:
            gate.add(rec)
        if chunk[-1][KEY]:
            self._epoch += 1  # only now: a check that read the new epoch saw the new keys
            self._learned.bumped()

    def _renew(self) -> None:
        """After key records: check again, under the keys known now, the entries of the pages
        waiting whose checks saw other keys of theirs (or none), if any of theirs is known
        (nothing to do for checks made since the last key record)."""

        def stale(c: Item) -> bool:
            known = self._known(c)
            return bool(known) and known != c[IDS]

        self._pages.renew(self._epoch, self._learned, stale)

    def _stale(self, c: Item, epoch: int) -> bool:
        """Whether the check made ahead for ``c`` cannot be used now (see ledger._mirror_pages)."""
        return c[LOGGED] is None or (c[EPOCH] != epoch and c[IDS] != self._known(c))

    def _known(self, c: Item) -> tuple[str, ...]:
        """The key ids ``c``'s envelope names that the gate knows now."""
        public_key = self._gate.public_key
        return tuple(k for k in c[NAMES] if public_key(KeyId(k)) is not None)

    # --- comparing views -----------------------------------------------------------------------

    def crosscheck(self, note: str, *, source: str | None = None) -> Evidence | None:
        """Compare a checkpoint of this log seen elsewhere (gossip) with what is held.

        Returns evidence when it contradicts the held entries or the pending target; None
        when it agrees or cannot be compared yet. A note that does not verify is ignored.
        """
        try:
            cp = self._open(note)
        except NoteError:
            return None
        with self._lock:
            if cp.size <= self._tip.size:
                return self._compare_held(note, cp, source)
            target = self._target
        if target is not None:
            held = Checkpoint.parse(open_note(target, self.vkey))
            if held.size == cp.size and held.root != cp.root:
                return same_size_evidence(self.origin, target, note, source=source)
        return None

    def prefix_evidence(
        self, *, note: str, size: int, proof: Sequence[bytes], source: str | None = None
    ) -> Evidence | None:
        """Evidence of a fork if ``proof`` (the peer's, from ``size`` to ``note``'s size) reaches
        the note's root from a root at ``size`` other than the held one.

        Requires ``size`` to be at most the size of :meth:`checkpoint`. Use a ``size`` that is
        not a power of two: for those a proof leaves the prefix root out.
        """
        cp = self._open(note)
        held = self._checkpoint
        if held is None or not 0 < size <= self._head.size or size > cp.size:
            return None
        split = fork_split(
            size, self.root_at(size), self.consistency_proof(size, self._head.size), cp.size, cp.root, proof
        )
        if split is None:
            return None
        return Evidence(
            self.origin, "fork", f"{self.origin}: the tree of size {cp.size} differs from the held one at size {size}",
            older=held, newer=note, proof=tuple(proof), split=split, source=source,
        )

    def _compare_held(self, note: str, cp: Checkpoint, source: str | None) -> Evidence | None:
        """Check a checkpoint no larger than the tip against the stored tree."""
        local = merkle.tree_hash(cp.size, self.stored_hashes)
        if local == cp.root:
            return None
        held = self._checkpoint
        if held is not None and cp.size <= self._head.size:
            split = SplitView(cp.size, local, tuple(self.consistency_proof(cp.size, self._head.size)), cp.root, ())
            return Evidence(
                self.origin, "fork" if cp.size < self._head.size else "equivocation",
                f"{self.origin}: checkpoint of size {cp.size} has a root the held tree does not give",
                older=held, newer=note, split=split, source=source,
            )
        return Evidence(
            self.origin, "inconsistent",
            f"{self.origin}: checkpoint of size {cp.size} has a root the stored entries do not give",
            older=held, newer=note, source=source,
        )

    def _proof_failure(
        self, note: str, cp: Checkpoint, proof: Sequence[bytes], paged: bool, source: str | None
    ) -> Evidence:
        held = self._checkpoint
        tip = self._tip.size
        settled = held is not None and self._head.size == tip
        if paged:
            return self._bad(note, tip, f"entries from {tip} do not rebuild the checkpoint of size {cp.size}", source)
        if held is not None and settled:
            if cp.size == tip and cp.root != self._tip.root:
                return same_size_evidence(self.origin, held, note, source=source)
            return proof_evidence(self.origin, held, note, proof, source=source)
        return Evidence(
            self.origin, "bad-proof", f"{self.origin}: consistency proof from {tip} to {cp.size} does not verify",
            older=held, newer=note, proof=tuple(proof), source=source,
        )

    # --- helpers ---------------------------------------------------------------------------------

    def _open(self, note: str) -> Checkpoint:
        cp = Checkpoint.parse(open_note(note, self.vkey))
        if cp.origin != self.origin:
            raise NoteError(f"checkpoint names the log {cp.origin[:200]!r}, not {self.origin!r}")
        return cp

    def _cover(self, size: int, note: str) -> None:
        """Make the stored checkpoint of ``size`` the one reads are bounded by."""
        last = bytes(32) if size == 0 else Entry.from_bytes(self._store.entry(size - 1)).leaf_hash
        self._head = Head(size, merkle.tree_hash(size, self.stored_hashes), last)
        self._checkpoint = note

    def _bad(self, note: str, index: int, message: str, source: str | None, *, kind: str = "bad-entries") -> Evidence:
        return Evidence(self.origin, kind, f"{self.origin}: {message}", older=self._checkpoint, newer=note,
                        index=index, source=source)

    def _error(self, evidence: Evidence, detail: str | None = None) -> ConsistencyError:
        message = evidence.message + (f" ({detail})" if detail else "")
        return ConsistencyError(
            message, origin=self.origin, older=evidence.older, newer=evidence.newer,
            proof=list(evidence.proof), index=evidence.index, exhibit=evidence,
        )


__all__ = ["KIND", "Mirror"]
