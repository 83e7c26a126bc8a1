"""Detect ECDSA nonce reuse: two signatures by one key that share ``r`` (RELIABILITY C2).

A P-256 signature is ``(r, s)`` with ``r = x(kG) mod n`` and ``s = k^-1 (z + r d) mod n``; two
signatures with one nonce ``k`` share ``r`` and give away ``k = (z1 - z2) / (s1 - s2)`` and then
the private key ``d = (s1 k - z1) / r``. The detector is pure (no I/O): it takes what a monitor
holds -- (public key, signed bytes, DER signature) triples -- and returns one
:class:`NonceReuse` per pair found, carrying the recovered private key as a proof anyone can
check against the public key (:meth:`NonceReuse.proves`).

No core module has this yet; it lives with the tests until a monitor needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ledger.keys import PublicKey

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class NonceReuse:
    """Two signatures by ``key`` sharing ``r``; ``private_value`` is the key they expose."""

    key: PublicKey
    r: int
    first: tuple[bytes, bytes]  # (signed bytes, DER signature)
    second: tuple[bytes, bytes]
    private_value: int | None

    def proves(self) -> bool:
        """Whether the recovered private value is the private key of ``key``."""
        return self.private_value is not None and _public_of(self.private_value) == self.key


def _z(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest(), "big") % N


def _public_of(d: int) -> PublicKey | None:
    if not 0 < d < N:
        return None
    return PublicKey.from_crypto(ec.derive_private_key(d, ec.SECP256R1()).public_key())


def _recover(key: PublicKey, r: int, a: tuple[bytes, int], b: tuple[bytes, int]) -> int | None:
    (z1, s1), (z2, s2) = (_z(a[0]), a[1]), (_z(b[0]), b[1])
    for s2x in (s2, N - s2):  # (r, n - s) is the same signature mathematically
        if (s1 - s2x) % N == 0:
            continue
        k = (z1 - z2) * pow(s1 - s2x, -1, N) % N
        d = (s1 * k - z1) * pow(r, -1, N) % N
        if _public_of(d) == key:
            return d
    return None


def repeated_nonces(signatures: Iterable[tuple[PublicKey, bytes, bytes]]) -> list[NonceReuse]:
    """Every pair of P-256 signatures by one key that share ``r`` (Ed25519 ones are skipped:
    its nonces are derived from the message). Signatures that are not DER are skipped."""
    seen: dict[tuple[str, int], tuple[bytes, bytes, int]] = {}
    found = []
    for key, data, der in signatures:
        if key.alg != "p256":
            continue
        try:
            r, s = decode_dss_signature(der)
        except ValueError:
            continue
        earlier = seen.get((key.key_id, r))
        if earlier is None:
            seen[(key.key_id, r)] = (data, der, s)
            continue
        if earlier[0] == data and earlier[2] in (s, N - s):
            continue  # the same message signed again with the same nonce: nothing leaks
        d = _recover(key, r, (earlier[0], earlier[2]), (data, s))
        found.append(NonceReuse(key, r, (earlier[0], earlier[1]), (data, der), d))
    return found


__all__ = ["N", "NonceReuse", "repeated_nonces"]
