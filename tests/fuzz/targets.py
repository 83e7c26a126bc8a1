"""Fuzz targets: every decoder that reads bytes a peer, a client or a disk can control.

Each target takes arbitrary bytes and feeds them to one decoder (sometimes after choosing a
variant with the first byte). The contract, checked by :func:`run_target`, is RELIABILITY
P2/P4: whatever the bytes, the decoder returns or raises a ledger error that blames the input
(:class:`~ledger.errors.InputError` or :class:`~ledger.errors.UntrustedError`): never another
exception, a crash, a hang or an unbounded allocation.

The same targets run under Hypothesis in CI (``test_fuzz.py``, bounded examples) and under
atheris/libFuzzer for long runs (``atheris_fuzz.py``); both start from ``corpus/<target>/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ledger.attestation import Attestation
from ledger.bundle import Bundle
from ledger.checkpoint import (
    Checkpoint,
    cosigner_vkey,
    open_note,
    parse_verifier_key,
    split_note,
    verifier_key,
    verify_cosignature,
    verify_note,
)
from ledger.encoding import decode
from ledger.entry import Entry
from ledger.envelope import Envelope
from ledger.errors import InputError, UntrustedError
from ledger.hsm import parse_pkcs11_uri
from ledger.keys import PublicKey, SoftwareSigner, parse_key_id
from ledger.records import KINDS, parse_key_record
from ledger.tiles import (
    BundleId,
    TileId,
    decode_bundle,
    decode_tile,
    hash_from_tile,
    parse_tile_path,
)
from ledger.witness import AddCheckpoint, Evidence

CORPUS = Path(__file__).resolve().parent / "corpus"
SHARED = "_hostile"  # corpus folder of hostile inputs every target runs on
ALLOWED = (InputError, UntrustedError)
ORIGIN = "fuzz.turtles/log"


def _ed25519(seed: str) -> SoftwareSigner:
    return SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest()))


def _p256(seed: str) -> SoftwareSigner:
    scalar = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % (2**255) + 1
    return SoftwareSigner(ec.derive_private_key(scalar, ec.SECP256R1()))


# Fixed keys, so that the corpus (made by make_corpus.py) holds notes and signatures that verify.
LOG_KEY = _ed25519("fuzz log key")
WITNESS_KEY = _ed25519("fuzz witness key")
P256_KEY = _p256("fuzz p256 key")
LOG_VKEY = verifier_key(ORIGIN, LOG_KEY.public_key.raw)
WITNESS_VKEY = cosigner_vkey("fuzz.witness", WITNESS_KEY.public_key.raw)
_LOG_VERIFIER = parse_verifier_key(LOG_VKEY)
_WITNESS_VERIFIER = parse_verifier_key(WITNESS_VKEY)
_KINDS = sorted(KINDS)


def _text(data: bytes) -> str:
    # surrogateescape: invalid UTF-8 becomes lone surrogates, which str-taking parsers must
    # refuse cleanly too (they may meet such strings from other Python callers).
    return data.decode("utf-8", "surrogateescape")


def _split(data: bytes) -> tuple[int, bytes]:
    return (data[0], data[1:]) if data else (0, b"")


def t_msgpack(data: bytes) -> None:
    decode(data)


def t_entry(data: bytes) -> None:
    Entry.from_bytes(data)


def t_envelope_json(data: bytes) -> None:
    Envelope.from_json(data)


def t_envelope_msgpack(data: bytes) -> None:
    Envelope.from_msgpack(data)


def t_record(data: bytes) -> None:
    """First byte picks the record kind; the rest is its payload."""
    kind, payload = _split(data)
    parse_key_record(_KINDS[kind % len(_KINDS)], payload)


def t_attestation(data: bytes) -> None:
    Attestation.from_payload(data)


def t_checkpoint(data: bytes) -> None:
    Checkpoint.parse(_text(data))


def t_note(data: bytes) -> None:
    """Split, verify against the log key and a witness key, and open a signed note."""
    split_note(data)
    verify_note(data, [_LOG_VERIFIER, _WITNESS_VERIFIER], now=1_700_000_000)
    Checkpoint.parse(open_note(data, LOG_VKEY))


def t_cosignature(data: bytes) -> None:
    """A checkpoint body, a newline-free cosignature line after the last blank line."""
    text = _text(data)
    body, _, line = text.rpartition("\n\n")
    verify_cosignature(body + "\n", line, _WITNESS_VERIFIER, now=1_700_000_000)


def t_vkey(data: bytes) -> None:
    parse_verifier_key(_text(data))


def t_tile_path(data: bytes) -> None:
    parse_tile_path(_text(data))


def t_tile(data: bytes) -> None:
    """First byte: the tile's width - 1; then its data, and a hash read from it."""
    width, body = _split(data)
    tile = TileId(0, 0, width + 1)
    hashes = decode_tile(tile, body)
    hash_from_tile(tile, body, 0, len(hashes) - 1)


def t_bundle(data: bytes) -> None:
    """First byte: the bundle's width - 1; then the bundle, whose entries are parsed."""
    width, body = _split(data)
    for raw in decode_bundle(BundleId(0, width + 1), body):
        Entry.from_bytes(raw)


def t_public_key(data: bytes) -> None:
    """First byte even: DER SubjectPublicKeyInfo; odd: PEM."""
    kind, body = _split(data)
    if kind % 2:
        PublicKey.from_pem(body)
    else:
        PublicKey.from_der(body)


def t_signature(data: bytes) -> None:
    """First byte picks Ed25519 or P-256; the rest is a signature over a fixed message."""
    kind, sig = _split(data)
    key = (LOG_KEY if kind % 2 else P256_KEY).public_key
    key.verify(signature=sig, data=b"fuzz message")


def t_key_id(data: bytes) -> None:
    parse_key_id(_text(data))


def t_pkcs11_uri(data: bytes) -> None:
    parse_pkcs11_uri(_text(data))


def t_add_checkpoint(data: bytes) -> None:
    AddCheckpoint.parse(data)


def t_evidence(data: bytes) -> None:
    Evidence.from_json(data)


def t_bundle_file(data: bytes) -> None:
    Bundle.from_bytes(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("t_") and callable(fn)
}


class Finding(AssertionError):
    """A target raised something other than an input error."""


def run_target(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; raise :class:`Finding` on a contract violation."""
    try:
        TARGETS[name](data)
    except ALLOWED:
        return
    except Exception as e:
        raise Finding(f"{name}: {type(e).__module__}.{type(e).__name__}: {str(e)[:300]} "
                      f"(input {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})") from e


def corpus(name: str) -> list[tuple[str, bytes]]:
    """The committed corpus of target ``name`` and the shared hostile inputs: (path, bytes)."""
    out = []
    for folder in (CORPUS / name, CORPUS / SHARED):
        if folder.is_dir():
            out += sorted((f"{folder.name}/{p.name}", p.read_bytes()) for p in folder.iterdir())
    return out


__all__ = ["ALLOWED", "CORPUS", "SHARED", "TARGETS", "Finding", "corpus", "run_target"]
