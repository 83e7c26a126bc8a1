"""How :class:`~ledger.pkcs11ctx.Pkcs11Context` sorts python-pkcs11 errors, and its private errors.

Invariants:
* The class of an error decides its recovery, never its text; the one exception is
  CKR_CRYPTOKI_NOT_INITIALIZED, which python-pkcs11 reports as a bare ``PKCS11Error``.
* No message made here carries a PIN: they name tokens, keys, modules and error classes only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pkcs11.exceptions as p11e

from ledger.errors import HSMError

_log = logging.getLogger("ledger.hsm")

# A fresh session may succeed. The same error again on a fresh session is taken as DEVICE_LOST.
SESSION_LOST = (
    p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.UserNotLoggedIn, p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
)  # fmt: skip
# Only a re-initialised module may succeed: once its token files vanish SoftHSM2 answers every
# call with CKR_GENERAL_ERROR, even after they are back, until C_Finalize + C_Initialize.
DEVICE_LOST = (
    p11e.GeneralError, p11e.DeviceRemoved, p11e.DeviceError, p11e.DeviceMemory,
    p11e.TokenNotPresent, p11e.TokenNotRecognised,
)  # fmt: skip
PIN_REJECTED = (
    p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked, p11e.PinExpired,
)  # fmt: skip
OUTAGE_HINT = "is the token present? The module is re-initialised on each call until it answers"


class StaleSession(Exception):
    """A reused session no longer sees a key that it saw before: its login was lost."""


class NoToken(HSMError):
    """No (or no single) token matches: final at first, but may be transient after a loss."""


class ModuleDown(HSMError):
    """``C_Initialize`` failed while re-initialising the module; a later one may succeed."""


def is_uninitialised(e: p11e.PKCS11Error) -> bool:
    """Whether ``e`` is CKR_CRYPTOKI_NOT_INITIALIZED (the module was finalised under us)."""
    return type(e) is p11e.PKCS11Error and "not initialized" in str(e)


def needs_reinit(e: p11e.PKCS11Error) -> bool:
    """Whether only a re-initialised module may recover from ``e``."""
    return isinstance(e, DEVICE_LOST) or is_uninitialised(e)


def reason(e: BaseException) -> str:
    """A short account of why an attempt failed, for the error that ends the retries."""
    if isinstance(e, NoToken):
        return e.message
    if isinstance(e, ModuleDown) and e.__cause__ is not None:
        return f"{type(e.__cause__).__name__} re-initialising the module"
    return type(e).__name__


def quietly(fn: Callable[[], object]) -> None:
    """Best-effort cleanup of something that may already be gone."""
    try:
        fn()
    except p11e.PKCS11Error as e:
        _log.debug("PKCS#11 cleanup: %s", type(e).__name__)


__all__ = [
    "DEVICE_LOST",
    "OUTAGE_HINT",
    "PIN_REJECTED",
    "SESSION_LOST",
    "ModuleDown",
    "NoToken",
    "StaleSession",
    "is_uninitialised",
    "needs_reinit",
    "quietly",
    "reason",
]
