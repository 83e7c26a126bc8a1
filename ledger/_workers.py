"""A small process pool: one pipe per worker process, no feeder or manager thread.

Why not ``concurrent.futures.ProcessPoolExecutor``: each task there crosses two threads of
the submitting process (a manager thread moving it to a queue, a feeder thread pickling
it) and each result a third hop through the manager, which unpickles it; for the
verification chunks of :mod:`ledger.procverify` that bookkeeping cost the node's GIL as
much as the work it sent away. Here the submitting thread pickles a task and writes it to
an idle worker's pipe itself; a reader thread per worker, blocked on its pipe, takes each
answer, sets the task's Future and hands that worker the next queued task.

Why not ``multiprocessing`` to start them: its ``spawn`` and ``forkserver`` children run
the parent's main module first (``python -m node.server`` imports the whole node, aiohttp
included: ~0.5 cpu s a worker, measured), and ``fork`` would copy a process that holds
threads and locks mid-use. A worker here is a fresh interpreter
(``python -c "import ledger._workers ..."``, :func:`main`) with the parent's ``sys.path``,
a socket pair for its pipe, and nothing of the parent but what a task names: it imports the
modules of the functions it is sent, and nothing else (~0.1 cpu s to start).

Invariants:
* A worker runs one task at a time and has at most one on its pipe, so a write never
  waits for a busy worker (and a worker's answer is always read: no two-way blocking).
* Tasks wait in one queue, in order, and go to whichever worker is free first.
* A worker that dies breaks the pool, as in ``ProcessPoolExecutor``: every task not
  answered fails with ``BrokenProcessPool`` and so does every later ``submit``; the owner
  makes a new pool. Closing fails the tasks not answered the same way.
* Workers leave on an empty message or when their pipe closes (so they never outlive the
  pool's process for longer than the task they are running), and ignore SIGINT: a Ctrl-C
  at a terminal reaches the whole process group, and it is the owner that stops them. Only
  a worker's reader closes the parent's end of its pipe, once the worker is gone (end of
  file).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any

# A task on the pipe: a message of a flag byte (1: a raw argument follows) and the pickled
# (fn, args), then that last argument of bytes as a message of its own; and the Future.
_Task = tuple[bytes, "bytes | memoryview | None", "Future[Any]"]
_RAW = (bytes, memoryview)
_PLAIN, _FOLLOWS = b"\x00", b"\x01"


def serve(conn: Connection, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """A worker's life: read a task, run it, write its outcome back, until the pipe closes.

    Bytes cross the pipe as they are, not pickled (a copy less each way, on chunks of tens
    of kilobytes): a task's last argument of bytes, and a result of bytes, come as a message
    of their own after the pickled rest, whose first byte says that one follows.
    """
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            head = conn.recv_bytes()
            if not head:  # the pool closes
                return
            raw = conn.recv_bytes() if head[:1] == _FOLLOWS else None
        except (EOFError, OSError):
            return
        value: Any = None
        try:
            fn, args = pickle.loads(memoryview(head)[1:])
            value = fn(*args) if raw is None else fn(*args, raw)
            outcome: tuple[BaseException | None, Any] = (None, None if type(value) is bytes else value)
        except Exception as e:  # the task's failure is its Future's, not the worker's
            outcome, value = (e, None), None
        try:
            answer = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            answer, value = pickle.dumps((RuntimeError(f"outcome cannot be pickled: {e!r}"), None)), None
        try:
            if type(value) is bytes:
                conn.send_bytes(_FOLLOWS + answer)
                conn.send_bytes(value)
            else:
                conn.send_bytes(_PLAIN + answer)
        except OSError:
            return


def main(argv: Sequence[str] | None = None) -> None:
    """A worker process's entry point: ``argv`` holds the file descriptor of its end of the
    pipe; the first message on it is the pickled ``(initializer, initargs)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int((sys.argv[1:] if argv is None else argv)[0]))
    try:
        initializer, initargs = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    serve(conn, initializer, initargs)


_BOOT = "import ledger._workers as w; w.main()"


def _start(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> tuple[subprocess.Popen[bytes],
                                                                                              Connection]:
    """One worker process and the parent's end of its pipe."""
    mine, theirs = socket.socketpair()
    with mine, theirs:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # import what the parent imports
        process = subprocess.Popen([sys.executable, "-c", _BOOT, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                                   stdin=subprocess.DEVNULL, env=env)
        conn = Connection(mine.detach())
    try:
        conn.send_bytes(pickle.dumps((initializer, initargs), pickle.HIGHEST_PROTOCOL))
    except BaseException:
        conn.close()
        process.kill()
        process.wait()
        raise
    return process, conn


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.sending = threading.Lock()  # held while writing to conn, and to close it
        self.task: _Task | None = None  # the one task on its pipe or running


class WorkerPool:
    """``size`` worker processes (started at once), each calling ``initializer(*initargs)``
    first (both picklable: a module-level function and its arguments)."""

    def __init__(self, size: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._broken: str | None = None
        self._workers: list[_Worker] = []
        self._readers: list[threading.Thread] = []
        try:
            for _ in range(size):
                self._workers.append(_Worker(*_start(initializer, initargs)))
        except BaseException:
            for w in self._workers:
                w.process.kill()
                w.conn.close()
                w.process.wait()
            raise
        for w in self._workers:
            reader = threading.Thread(target=self._read, args=(w,), name=f"worker-reader-{w.process.pid}",
                                      daemon=True)
            reader.start()
            self._readers.append(reader)

    @property
    def broken(self) -> bool:
        """True once a worker died or the pool was closed (then every ``submit`` raises)."""
        return self._broken is not None

    @property
    def _processes(self) -> dict[int, subprocess.Popen[bytes]]:
        """The worker processes by pid (as ``ProcessPoolExecutor._processes``)."""
        return {w.process.pid: w.process for w in self._workers}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a worker (``fn`` and ``args`` picklable; a last argument of
        ``bytes`` or ``memoryview`` is sent as it is, and arrives as ``bytes``).

        Raises:
            BrokenProcessPool: the pool is broken or closed.
        """
        raw = args[-1] if args and type(args[-1]) in _RAW else None
        if raw is None:
            head = _PLAIN + pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL)
        else:
            head = _FOLLOWS + pickle.dumps((fn, args[:-1]), pickle.HIGHEST_PROTOCOL)
        task: _Task = (head, raw, Future())
        with self._lock:
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            idle = next((w for w in self._workers if w.task is None), None)
            if idle is None:
                self._queue.append(task)
            else:
                task[2].set_running_or_notify_cancel()  # new: nobody could cancel it yet
                idle.task = task
        if idle is not None:
            self._send(idle, task)
        return task[2]

    def shutdown(self, *, wait: bool) -> None:
        """Stop: tasks not answered fail; workers leave (``wait``: wait for them to)."""
        self._break("the pool was closed")
        for w in self._workers:
            with w.sending, contextlib.suppress(OSError):  # OSError: already gone
                w.conn.send_bytes(b"")
        if wait:
            for w, reader in zip(self._workers, self._readers, strict=True):
                if reader is not threading.current_thread():
                    reader.join(10.0)
                try:
                    w.process.wait(5.0)
                except subprocess.TimeoutExpired:
                    w.process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        w.process.wait(1.0)

    # --- the parent's side of the pipes ------------------------------------------------------

    def _send(self, worker: _Worker, task: _Task) -> None:
        try:
            with worker.sending:
                worker.conn.send_bytes(task[0])
                if task[1] is not None:
                    worker.conn.send_bytes(task[1])
        except (OSError, ValueError):  # the worker is gone (its reader closed the pipe)
            self._break("a worker process ended")

    def _read(self, worker: _Worker) -> None:
        """A worker's reader thread: its answers, until the worker is gone."""
        try:
            while True:
                try:
                    head = worker.conn.recv_bytes()
                    raw = worker.conn.recv_bytes() if head[:1] == _FOLLOWS else None
                except (EOFError, OSError):
                    break
                try:
                    error, value = pickle.loads(memoryview(head)[1:])
                except Exception as e:  # e.g. an exception class that does not unpickle
                    error, value = RuntimeError(f"the answer cannot be unpickled: {e!r}"), None
                self._answer(worker, error, raw if raw is not None else value)
        finally:
            self._break("a worker process ended")  # unless the pool was closed first
            with worker.sending:
                worker.conn.close()
            with contextlib.suppress(subprocess.TimeoutExpired):  # reap it (it closed its end: it is leaving)
                worker.process.wait(5.0)

    def _answer(self, worker: _Worker, error: BaseException | None, value: Any) -> None:
        with self._lock:
            task = worker.task  # a worker has one task at a time: this answer is that task's
            if task is None:  # the pool broke meanwhile: that task failed already
                return
            worker.task = following = self._next()
        if following is not None:
            self._send(worker, following)
        if error is not None:
            task[2].set_exception(error)
        else:
            task[2].set_result(value)

    def _next(self) -> _Task | None:
        """The next queued task that was not cancelled, now running (under the lock)."""
        while self._queue and self._broken is None:
            task = self._queue.popleft()
            if task[2].set_running_or_notify_cancel():
                return task
        return None

    def _break(self, why: str) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = why
            running = [w.task for w in self._workers if w.task is not None]
            queued = list(self._queue)
            self._queue.clear()
            for w in self._workers:
                w.task = None
        for _, _, future in running:
            future.set_exception(BrokenProcessPool(why))
        for _, _, future in queued:
            if future.set_running_or_notify_cancel():
                future.set_exception(BrokenProcessPool(why))


__all__ = ["WorkerPool", "main", "serve"]
