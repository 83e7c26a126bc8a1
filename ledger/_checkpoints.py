"""A log's signed checkpoints and the high-water mark that guards them.

:class:`Checkpointer` signs a C2SP checkpoint note for a tree head, stores it, and
records the head in the high-water mark file beside the store
(:mod:`ledger.watermark`). On open it refuses a store that holds less than, or other than,
what the log once signed (a stale backup, a damaged tail): signing then would fork the log.
"""

from __future__ import annotations

import hashlib
import logging
import os

from ledger import merkle
from ledger.checkpoint import Checkpoint, sign_note
from ledger.errors import CorruptionError, StorageError
from ledger.note import NoteSigner
from ledger.store import Head, LogStore
from ledger.watermark import Mark, Watermark

_LOG = logging.getLogger("turtles.ledger.log")


class Checkpointer:
    """Signs and stores the checkpoints of the log held in ``store``."""

    def __init__(self, store: LogStore, signer: NoteSigner) -> None:
        self._store = store
        self._signer = signer
        self._watermark = _watermark_of(store)

    def sign(self, head: Head) -> str:
        """A signed checkpoint note of ``head``, not stored: the log puts it in the very
        WriteBatch that makes ``head`` durable, then calls :meth:`mark`. A note whose batch
        fails to commit is dropped unseen (the failed write stops the store's writes in this
        process, see :class:`ledger.store.LogStore`), so no two notes of one size ever leave it."""
        return sign_note(Checkpoint(self._store.origin, head.size, head.root).to_text(), [self._signer])

    def mark(self, head: Head) -> None:
        """Raise the high-water mark to ``head``, whose checkpoint is durably stored."""
        if self._watermark is not None:
            self._watermark.write(Mark(head.size, head.root))

    def sign_and_store(self, head: Head) -> str:
        """Sign a checkpoint of the durable ``head``, store it and raise the high-water mark;
        the note."""
        note = self.sign(head)
        self._store.put_checkpoint(head.size, note)
        self.mark(head)
        return note

    def check_watermark(self, head: Head) -> None:
        """Refuse a store that holds less than, or other than, what this log once signed."""
        mark = self._watermark.read() if self._watermark is not None else None
        if mark is None:
            return
        origin = self._store.origin
        if mark.size > head.size:
            raise CorruptionError(
                f"log {origin}: the store holds {head.size} entries but a checkpoint of "
                f"size {mark.size} was signed: acknowledged data was lost; refusing to sign a fork",
                hint="restore the store from a copy at least as new, or re-mirror it from a peer",
                head_size=head.size, signed_size=mark.size,
            )
        root = merkle.tree_hash(mark.size, self._store.hashes)
        if root != mark.root:
            raise CorruptionError(
                f"log {origin}: the store's tree of size {mark.size} is not the one this log signed",
                expected=mark.root, calculated=root,
            )

    def ensure(self, head: Head) -> str:
        """The stored checkpoint for the durable ``head``, signing it if a crash lost it."""
        latest = self._store.latest_checkpoint()
        if latest is not None and latest[0] == head.size:
            return latest[1]
        if latest is not None and latest[0] > head.size:
            # A checkpoint was signed over a larger tree than the store holds: the store was
            # restored from a stale backup. Signing now would fork the log (RELIABILITY S6).
            raise CorruptionError(
                f"log {self._store.origin}: head is at size {head.size} but a checkpoint of size "
                f"{latest[0]} was signed; refusing to sign a fork",
                hint="restore the store from a copy at least as new, or re-mirror it from a peer",
                head_size=head.size, checkpoint_size=latest[0],
            )
        return self.sign_and_store(head)

    def close(self) -> None:
        """Close the high-water mark file."""
        if self._watermark is not None:
            try:
                self._watermark.close()
            except StorageError as e:  # the mark was synced when written; closing adds nothing
                _LOG.warning("%s", e.message)


def _watermark_of(store: LogStore) -> Watermark | None:
    """The high-water mark file beside the store (None for a store without a directory)."""
    if store.directory is None:
        return None
    name = "turtles-mark-" + hashlib.sha256(store.origin.encode()).hexdigest()[:16]
    return Watermark(os.path.join(store.directory, name))


__all__ = ["Checkpointer"]
