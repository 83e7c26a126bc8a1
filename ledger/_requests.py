"""What a caller hands the sequencer, and what it gets back.

A :class:`Request` is one envelope waiting to be appended. Callers of ``Log.submit`` wait
on a :class:`~concurrent.futures.Future`; ``Log.append_many`` queues thousands at a time,
and a Future per envelope (a Condition and an RLock each) costs more than the rest of its
bookkeeping, so its requests carry no Future except the last of each group: the sequencer
resolves requests strictly in queue order, so once that one is done, every request before
it holds its outcome.
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
        self.outcome = result
        if self.future is not None:
            self.future.set_result(result)

    def reject(self, error: TurtlesError) -> None:
        """The envelope was not appended, for this reason."""
        self.outcome = error
        if self.future is not None:
            self.future.set_exception(error)

    @property
    def done(self) -> bool:
        """True once resolved or rejected."""
        return self.outcome is not None


__all__ = ["AppendResult", "Request"]
