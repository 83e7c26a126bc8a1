"""The PKCS#11 context: one loaded module driven by one worker thread, with session handling.

Invariants:
* Every PKCS#11 call a :class:`Pkcs11Context` makes runs on its one worker thread. python-pkcs11
  initialises modules without locking callbacks, and SoftHSM2 then crashes when two threads call
  it at once (RELIABILITY H1).
* A process holds at most one live context per module. PKCS#11 state is per process: a second
  ``C_Initialize`` is refused with :class:`~ledger.errors.HSMError`, rather than two contexts
  sharing one library behind each other's backs.
* After ``fork()`` the child never touches the parent's sessions. Its first call re-initialises
  the module and logs in afresh (H2).
* A lost session, a lost login or a finalised module is re-opened with bounded backoff, and
  ``CKR_USER_ALREADY_LOGGED_IN`` counts as success. A rejected PIN is never retried (W6).
* A lost device (``CKR_GENERAL_ERROR``, a removed token, a session lost twice) re-initialises the
  module (``C_Finalize`` + ``C_Initialize``): SoftHSM2 sees its token files again only then (W6).
* A PIN never appears in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11.exceptions as p11e
from pkcs11 import Attribute, ObjectClass, TokenFlag

# The private constructor is used on purpose: ``pkcs11.lib()`` caches one object per path for the
# whole process, so two owners could not tell whether the module is theirs to finalise.
from pkcs11._pkcs11 import lib as _load_module

from ledger._pkcs11errors import (
    OUTAGE_HINT,
    PIN_REJECTED,
    SESSION_LOST,
    ModuleDown,
    NoToken,
    StaleSession,
    needs_reinit,
    quietly,
    reason,
)
from ledger.errors import HSMError, KeyFormatError, NotFoundError
from ledger.pkcs11uri import Pin, Pkcs11Uri, _describe_key, _TokenKey, as_pin

_log = logging.getLogger("ledger.hsm")  # the logger name operators know, kept across the split
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a context re-opens lost sessions: ``attempts`` tries, doubling delays between them."""

    attempts: int = 4
    first_delay: float = 0.05
    max_delay: float = 1.0
    call_timeout: float = 120.0


class _Session:
    """One open session and the key objects found through it (worker thread only)."""

    def __init__(self, session: Any, *, pin: Pin | None) -> None:
        self.session = session
        self.pin = pin  # the PIN this session logged in with, if any
        self.fresh = True  # opened during the current attempt
        self._objects: dict[tuple[ObjectClass, str | None, bytes | None], Any] = {}

    def find(self, uri: Pkcs11Uri, cls: ObjectClass, token: _TokenKey) -> Any:
        """The one object of class ``cls`` with the URI's label and/or id."""
        key = (cls, uri.object, uri.id)
        if key not in self._objects:
            attrs: dict[Attribute, Any] = {Attribute.CLASS: cls}
            if uri.object is not None:
                attrs[Attribute.LABEL] = uri.object
            if uri.id is not None:
                attrs[Attribute.ID] = uri.id
            found = list(self.session.get_objects(attrs))
            what = f"{cls.name.lower().replace('_', ' ')} {_describe_key(uri)} in {token}"
            if len(found) > 1:
                raise KeyFormatError(f"ambiguous key reference: {len(found)} objects match {what}")
            if not found:
                if not self.fresh:
                    raise StaleSession(what)
                raise NotFoundError(f"no {what}", token=token.token, label=uri.object)
            self._objects[key] = found[0]
        return self._objects[key]


# --- the context: one worker thread per module ------------------------------------------------


class Pkcs11Context:
    """A loaded PKCS#11 module, driven by exactly one worker thread.

    Calls from any thread are queued to the worker and wait for its result. Sessions are opened
    lazily, one per token selector, and re-opened with bounded backoff when lost. Close it (or use
    it as a context manager): closing finalises the module so the process may load it again.
    """

    def __init__(self, module: str, *, retry: RetryPolicy | None = None) -> None:
        if not os.path.isfile(module):
            raise HSMError(f"PKCS#11 module not found: {module}", module=module)
        self._module = module
        self._retry = retry or RetryPolicy()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the worker thread alone:
        self._lib: Any = None
        self._must_reinit = False
        self._sessions: dict[_TokenKey, _Session] = {}
        self._rejected: dict[_TokenKey, Pin] = {}
        self._seen: set[_TokenKey] = set()  # tokens found once: their absence is an outage

    @property
    def module(self) -> str:
        """Path of the PKCS#11 module."""
        return self._module

    def __repr__(self) -> str:
        return f"Pkcs11Context({self._module!r}, {'closed' if self._closed else 'open'})"

    def __enter__(self) -> Pkcs11Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(lib)`` on the worker thread with the loaded python-pkcs11 ``lib`` (no retry)."""
        return self._call(lambda: self._wrapped(fn))

    def with_session(
        self, uri: Pkcs11Uri, fn: Callable[[Any], _T], *, pin: Pin | str | None = None
    ) -> _T:
        """Run ``fn(session)`` on the worker with a read-write session on the URI's token.

        The session is logged in when a PIN is given. ``fn`` is re-run on a fresh session if the
        session is lost, so it must be idempotent.
        """
        return self._with_state(uri, lambda state: fn(state.session), pin=as_pin(pin))

    def close(self) -> None:
        """Stop the worker, close the sessions and finalise the module. Idempotent."""
        if os.getpid() != self._pid:
            self._closed = True  # never used in this child: nothing here is ours to release
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._jobs.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._retry.call_timeout)

    # -- plumbing (callers' side) --

    def _with_state(self, uri: Pkcs11Uri, fn: Callable[[_Session], _T], *, pin: Pin | None) -> _T:
        token = _TokenKey.of(uri)
        what = f"{token}" + (f" (key {_describe_key(uri)})" if uri.object or uri.id else "")
        return self._call(lambda: self._attempt(token, fn, pin, what))

    def _wrapped(self, fn: Callable[[Any], _T]) -> _T:
        lib = self._library()
        try:
            return fn(lib)
        except p11e.PKCS11Error as e:
            self._must_reinit |= needs_reinit(e)  # not retried here, but the next call recovers
            raise HSMError(
                f"PKCS#11 {type(e).__name__} in {self._module}: {e}", module=self._module
            ) from e

    def _call(self, fn: Callable[[], _T]) -> _T:
        self._check_fork()
        if self._closed:
            raise HSMError(f"PKCS#11 context for {self._module} is closed", module=self._module)
        if threading.current_thread() is self._thread:
            return fn()  # re-entered from the worker itself: queueing would deadlock
        with self._lock:
            if self._closed:
                raise HSMError(f"PKCS#11 context for {self._module} is closed", module=self._module)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="pkcs11-worker", daemon=True
                )
                self._thread.start()
            future: Future[_T] = Future()
            self._jobs.put((fn, future))
        try:
            return future.result(timeout=self._retry.call_timeout)
        except TimeoutError as e:
            raise HSMError(
                f"PKCS#11 module {self._module} did not answer within {self._retry.call_timeout:g}s",
                module=self._module,
            ) from e

    def _check_fork(self) -> None:
        if os.getpid() == self._pid:
            return
        # In a forked child: the worker thread did not survive, locks may be held by threads that
        # no longer exist, and the sessions belong to the parent. Start over, never closing them.
        _log.info(
            "PKCS#11 context for %s used after fork(): re-initialising in the child", self._module
        )
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._thread = None
        self._sessions = {}
        self._must_reinit = self._lib is not None

    # -- the worker thread --

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._shutdown()
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to the caller, who re-raises it
                future.set_exception(e)
            # Idle, the worker must not keep the last job (and the signer in its closure) alive.
            del job, fn, future

    def _shutdown(self) -> None:
        for state in self._sessions.values():
            quietly(state.session.close)
        self._sessions.clear()
        if self._lib is not None:
            quietly(self._lib.finalize)
            self._lib = None

    def _library(self) -> Any:
        if self._lib is None:
            try:
                self._lib = _load_module(self._module)
            except p11e.PKCS11Error as e:
                if "already initialized" in str(e):
                    raise HSMError(
                        f"PKCS#11 module {self._module} is already initialised in this process: "
                        "open one Pkcs11Context per module and share it",
                        module=self._module,
                    ) from e
                raise HSMError(
                    f"cannot load PKCS#11 module {self._module}: {e}", module=self._module
                ) from e
        elif self._must_reinit:
            self._sessions = {}  # C_Finalize closes them all
            quietly(self._lib.finalize)  # "not initialised" when the module reset itself
            try:
                self._lib.initialize()
            except p11e.PKCS11Error as e:  # _must_reinit stays set: the next call tries again
                raise ModuleDown(
                    f"cannot re-initialise PKCS#11 module {self._module}: {type(e).__name__} {e}",
                    module=self._module, hint=OUTAGE_HINT,
                ) from e  # fmt: skip
        self._must_reinit = False
        return self._lib

    def _attempt(
        self, token: _TokenKey, fn: Callable[[_Session], _T], pin: Pin | None, what: str
    ) -> _T:
        delay = self._retry.first_delay
        for attempt in range(1, self._retry.attempts + 1):
            try:
                state = self._session(token, pin)
                try:
                    return fn(state)
                finally:
                    state.fresh = False
            except StaleSession as e:
                lost: Exception = e
                delay = 0.0  # not a fault: just make sure on a fresh session
            except NoToken as e:
                if token not in self._seen:
                    raise  # misconfiguration, not an outage: fail fast
                lost = e  # gone since it was found: a re-initialised module looks again
                self._must_reinit = True
            except ModuleDown as e:
                lost = e
            except SESSION_LOST as e:
                lost = e
                self._must_reinit |= attempt > 1  # lost again on a fresh session
            except p11e.PKCS11Error as e:
                if not needs_reinit(e):
                    raise HSMError(
                        f"PKCS#11 {type(e).__name__} on {what} in {self._module}: {e}",
                        token=token.token,
                    ) from e
                self._must_reinit = True
                lost = e
            self._drop(token)
            if attempt < self._retry.attempts:
                level = logging.INFO if isinstance(lost, StaleSession) else logging.WARNING
                _log.log(level, "PKCS#11 %s on %s; %s (attempt %d of %d)", reason(lost), token,
                         "re-initialising the module" if self._must_reinit else "re-opening",
                         attempt + 1, self._retry.attempts)  # fmt: skip
                time.sleep(delay)
                delay = min(2 * delay, self._retry.max_delay) or self._retry.first_delay
        raise HSMError(
            f"{what} in {self._module} unusable after {self._retry.attempts} attempts: {reason(lost)}",
            token=token.token, module=self._module, hint=OUTAGE_HINT if self._must_reinit else None,
        ) from lost  # fmt: skip

    def _session(self, token: _TokenKey, pin: Pin | None) -> _Session:
        state = self._sessions.get(token)
        if state is not None and (pin is None or pin == state.pin):
            return state
        if state is not None and state.pin is not None:
            # The token would accept anything now (login is per application), so a PIN that
            # differs from the one it logged in with is refused here rather than ignored.
            raise HSMError(
                f"PIN rejected for {token}: not the PIN its session logged in with",
                token=token.token,
            )
        if state is not None:
            self._drop(token)  # a public session, but this caller needs to log in
        slot_token = self._find_token(token)
        if pin is None:
            session = slot_token.open(rw=True)
        else:
            if self._rejected.get(token) == pin:
                raise HSMError(
                    f"PIN rejected for {token} earlier; not retried with the same PIN",
                    token=token.token,
                )
            try:
                session = slot_token.open(rw=True, user_pin=pin.reveal())
            except p11e.UserAlreadyLoggedIn:
                # Login is per application: another of our sessions is logged in, so a session
                # opened without a PIN is a user session too.
                session = slot_token.open(rw=True)
            except PIN_REJECTED as e:
                self._rejected[token] = pin
                _log.warning(
                    "PIN rejected for %s (%s); it will not be retried", token, type(e).__name__
                )
                raise HSMError(
                    f"PIN rejected for {token} ({type(e).__name__})", token=token.token
                ) from e
        state = _Session(session, pin=pin)
        self._sessions[token] = state
        return state

    def _find_token(self, want: _TokenKey) -> Any:
        lib = self._library()
        found, present = [], []
        for slot in lib.get_slots(token_present=True):
            tok = slot.get_token()
            if tok.flags & TokenFlag.TOKEN_INITIALIZED:
                present.append(tok.label)
                if want.matches(slot, tok):
                    found.append(tok)
        if len(found) != 1:
            problem = "no" if not found else f"{len(found)} tokens match:"
            raise NoToken(
                f"{problem} {want} in {self._module} (tokens present: {', '.join(map(repr, present)) or 'none'})",
                token=want.token, module=self._module,
            )  # fmt: skip
        self._seen.add(want)
        return found[0]

    def _drop(self, token: _TokenKey) -> None:
        state = self._sessions.pop(token, None)
        if state is not None:
            quietly(state.session.close)


__all__ = [
    "Pkcs11Context",
    "RetryPolicy",
]
