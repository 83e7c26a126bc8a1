"""Ed25519 signature verification: the one rule every turtles node applies.

Every Ed25519 signature turtles checks -- envelope signatures, checkpoint notes,
cosignatures -- goes through :func:`ed25519_verify`, which calls libsodium (through
PyNaCl's binding) rather than OpenSSL (through ``cryptography``). Two reasons:

* **Speed.** libsodium verifies about twice as fast as OpenSSL here (~18,500/s against
  ~9,500/s on one core; see ``bench/raw.py``), and the call releases the GIL, so a thread
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

The rule is pinned by tests (Wycheproof, RFC 8032 vectors, and the small-order cases in
``tests/ledger/test_ed25519.py``), so a PyNaCl upgrade that changed it would fail the suite.
"""

from __future__ import annotations

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def ed25519_verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public_raw``.

    Malformed input (wrong lengths, a key that is not a valid point) is simply invalid:
    this never raises.
    """
    if len(public_raw) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        crypto_sign_open(bytes(signature) + bytes(message), bytes(public_raw))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


__all__ = ["PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "ed25519_verify"]
