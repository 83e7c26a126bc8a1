"""What a caller hands the sequencer, and what it gets back.

A :class:`Request` is one envelope waiting to be appended. Callers of ``Log.submit`` wait
on a :class:`~concurrent.futures.Future`; ``Log.append_many`` queues thousands at a time,
and a Future per envelope (a Condition and an RLock each) costs more than the rest of its
bookkeeping, so its requests carry no Future except the last of each group. The sequencer
takes requests in queue order and fires a request's Future only once every request queued
before it holds its outcome (refusals and old duplicates are noted at once and told at the
end of their batch), so once that one Future is done, the whole group is.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from ledger.envelope import Envelope
from ledger.errors import TurtlesError
from ledger.verification import Prepared


@dataclass(frozen=True)
class AppendResult:
    """Where a record landed and the checkpoint that covers it."""

    index: int
    leaf_hash: bytes
    checkpoint: str
    size: int
    duplicate: bool = False

    @classmethod
    def appended(cls, index: int, leaf_hash: bytes, checkpoint: str, size: int) -> AppendResult:
        """``AppendResult(index, leaf_hash, checkpoint, size)`` without the frozen dataclass
        ``__init__`` (one call per field): the sequencer makes one per entry."""
        r: AppendResult = object.__new__(cls)
        object.__setattr__(r, "__dict__", {"index": index, "leaf_hash": leaf_hash, "checkpoint": checkpoint,
                                           "size": size, "duplicate": False})
        return r


class Request:
    """One envelope to append; its outcome is set exactly once, by the sequencer."""

    __slots__ = ("envelope", "future", "outcome", "prepared")

    def __init__(self, envelope: Envelope, prepared: Prepared | None, future: Future[AppendResult] | None) -> None:
        self.envelope = envelope
        self.prepared = prepared
        self.future = future
        self.outcome: AppendResult | TurtlesError | None = None

    def start(self) -> bool:
        """False if the caller cancelled it while it was queued (it is then dropped)."""
        return self.future is None or self.future.set_running_or_notify_cancel()

    def resolve(self, result: AppendResult) -> None:
        """The envelope is durable and covered by a stored checkpoint."""
        self.note(result)
        self.notify()

    def reject(self, error: TurtlesError) -> None:
        """The envelope was not appended, for this reason."""
        self.note(error)
        self.notify()

    def note(self, outcome: AppendResult | TurtlesError) -> None:
        """Record the outcome now and tell the waiter later (:meth:`notify`): the sequencer
        answers refusals and old duplicates at the end of their batch, so that a request's
        Future never fires before the requests queued ahead of it have their outcomes."""
        self.outcome = outcome

    def notify(self) -> None:
        """Hand the recorded outcome to the Future, if there is one."""
        if self.future is None or self.outcome is None:
            return
        if isinstance(self.outcome, TurtlesError):
            self.future.set_exception(self.outcome)
        else:
            self.future.set_result(self.outcome)

    @property
    def done(self) -> bool:
        """True once resolved or rejected."""
        return self.outcome is not None


__all__ = ["AppendResult", "Request"]
