"""Ed25519 signature verification: the one rule every turtles node applies.

Every Ed25519 signature turtles checks -- envelope signatures, checkpoint notes,
cosignatures -- goes through :func:`ed25519_verify`, which calls libsodium rather than
OpenSSL (through ``cryptography``). Two reasons:

* **Speed.** libsodium verifies about twice as fast as OpenSSL here (~20,000/s against
  ~9,700/s on one core; see ``bench/raw.py``), and the call releases the GIL, so a thread
  pool uses both cores.
* **One rule on every node.** Ed25519 implementations disagree on edge cases (small-order
  keys and ``R`` points, non-canonical encodings, cofactored or cofactorless equations; see
  "Taming the many EdDSAs", Chalkias et al. 2020). A log's entries are re-verified by every
  mirror and every audit, so the rule must be one function, not "whatever library a node has".
  libsodium's rule is the strict one: ``S`` must be canonical (``S < L``), the public key
  and ``R`` must be canonical encodings of points that are not of small order, and the
  cofactorless equation ``[S]B = R + [k]A`` must hold with ``R`` compared byte for byte.
  Every signature an honest RFC 8032 signer makes passes it; OpenSSL accepts a few more
  (small-order keys and ``R`` points), which turtles refuses.

**Which libsodium.** Two copies can serve, and :data:`BACKEND` names the one in use:

* the system's shared library (Debian's ``libsodium23``, 1.0.18, which every machine of
  this kind has), called through ``ctypes`` with its detached verify;
* PyNaCl's bundled copy (libsodium 1.0.20), through its binding's combined-mode
  ``crypto_sign_open``, which copies the message twice.

The system copy verifies ~10% faster here (48.5 against 54 cpu us a signature; the
build's flags and the copies), so it is preferred -- but only if it is libsodium 1.0.18
or later, and only if it gives the expected answer for every :data:`KNOWN_ANSWERS`
vector at import (an honest signature, a corrupted one, a non-canonical ``S``, a
small-order key and a small-order ``R``, each of which some Ed25519 implementation
decides otherwise). The verify function (``crypto_sign/ed25519/ref10/open.c``) is the
same in libsodium 1.0.18 to 1.0.21. Otherwise, or with ``TURTLES_ED25519=pynacl`` in the
environment, PyNaCl's copy serves.

The rule is pinned by tests on both copies (Wycheproof, RFC 8032 vectors, and the
small-order cases in ``tests/ledger/test_ed25519.py``), so an upgrade that changed it
would fail the suite.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

ENV_BACKEND = "TURTLES_ED25519"
"""``pynacl``: use PyNaCl's bundled libsodium even where the system's would serve."""

SYSTEM_LIBRARIES = ("libsodium.so.26", "libsodium.so.23")
"""Sonames tried for the system's libsodium (1.0.19 and later: 26; 1.0.18: 23)."""

MIN_SYSTEM_VERSION = (1, 0, 18)

_RFC8032_2_KEY = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
_RFC8032_2_SIG = ("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
                  "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
_IDENTITY = "01" + "00" * 31

KNOWN_ANSWERS: tuple[tuple[str, str, str, str, bool], ...] = (
    # (what, public key, signature, message: hex, the rule's answer)
    ("RFC 8032 TEST 2", _RFC8032_2_KEY, _RFC8032_2_SIG, "72", True),
    ("TEST 2, one bit of S flipped", _RFC8032_2_KEY, _RFC8032_2_SIG[:-2] + "01", "72", False),
    ("TEST 2 with S + L (non-canonical S)", _RFC8032_2_KEY,
     _RFC8032_2_SIG[:64] + "f52db7415978abc61b2c2eb6aeebfca0387b2eaeb4302aeeb00d291612bb0c10", "72", False),
    ("the identity as key, R the identity, S = 0 (OpenSSL accepts it)", _IDENTITY, _IDENTITY + "00" * 32,
     "616e79", False),
    ("TEST 2's key, R the identity, S = k*a: the equation holds (OpenSSL accepts it)", _RFC8032_2_KEY,
     _IDENTITY + "675d054595fa17cb6a44e3ada6ca385e55667e41a63fdab0ac22d10000354002", "72", False),
)
"""Vectors on which Ed25519 implementations differ, with turtles' answer: a libsodium
that answers any of them otherwise is not used (``tests/ledger/test_ed25519.py`` derives
each one again)."""

Verify = Callable[[bytes, bytes, bytes], bool]


def _pynacl() -> Verify:
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
        try:
            crypto_sign_open(signature + message, public_raw)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True

    return verify


def _system() -> tuple[Verify, str] | None:
    """The system libsodium's detached verify and its version, or None if there is none
    that is recent enough."""
    for soname in SYSTEM_LIBRARIES:
        try:
            lib = ctypes.CDLL(soname)  # CDLL: each call releases the GIL
        except OSError:
            continue
        try:
            if lib.sodium_init() < 0:
                continue
            lib.sodium_version_string.restype = ctypes.c_char_p
            version = lib.sodium_version_string().decode("ascii")
            fn = lib.crypto_sign_verify_detached
        except (AttributeError, UnicodeDecodeError):
            continue
        try:
            numbers = tuple(int(x) for x in version.split("."))
        except ValueError:
            continue
        if numbers < MIN_SYSTEM_VERSION:
            continue
        fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p)
        fn.restype = ctypes.c_int

        def verify(public_raw: bytes, signature: bytes, message: bytes, _fn: Any = fn) -> bool:
            return bool(_fn(signature, message, len(message), public_raw) == 0)

        return verify, f"system libsodium {version} ({soname})"
    return None


def answers_known(verify: Verify) -> bool:
    """True if ``verify`` answers every :data:`KNOWN_ANSWERS` vector as the rule does."""
    return all(verify(bytes.fromhex(k), bytes.fromhex(s), bytes.fromhex(m)) is want
               for _, k, s, m, want in KNOWN_ANSWERS)


def _choose() -> tuple[Verify, str]:
    if os.environ.get(ENV_BACKEND, "") != "pynacl":
        found = _system()
        if found is not None and answers_known(found[0]):
            return found
    return _pynacl(), "PyNaCl's bundled libsodium"


_verify, BACKEND = _choose()
"""The libsodium in use, in words (a node logs it as it starts; the benchmarks note it)."""


def ed25519_verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public_raw``.

    Malformed input (wrong lengths, a key that is not a valid point) is simply invalid:
    this never raises.
    """
    if len(public_raw) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        return _verify(bytes(public_raw), bytes(signature), bytes(message))
    except (TypeError, ValueError, ctypes.ArgumentError):  # not bytes-like: invalid, as above
        return False


__all__ = ["BACKEND", "KNOWN_ANSWERS", "PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "answers_known", "ed25519_verify"]
