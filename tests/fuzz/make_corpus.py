"""Write the seed corpus of every fuzz target to ``tests/fuzz/corpus/<target>/`` and the hostile
inputs every target also runs on to ``tests/fuzz/corpus/_hostile/``.

Usage: ``python -m tests.fuzz.make_corpus`` (the output is committed; re-run after a format
change). Seeds are valid inputs made with the fixed keys of :mod:`tests.fuzz.targets`, plus the
hostile inputs every decoder must refuse cheaply: msgpack bombs (huge declared lengths, deep
nesting, wide headers), JSON nesting bombs, NaN/huge numbers, duplicate keys, trailing bytes.
A file is named by the first 16 hex digits of its SHA-256, so re-running is idempotent. Inputs
that fuzzing found to break a decoder are added by hand as ``crash-<sha256 prefix>`` (re-running
keeps them): the corpus replay runs them, the mutation strategies leave them out.
"""

from __future__ import annotations

import hashlib
import json
import struct

from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, make_statement
from ledger.bundle import Bundle, BundledLog, BundledRecord
from ledger.checkpoint import Checkpoint, add_signatures, cosign, note_signer, sign_note
from ledger.encoding import encode
from ledger.entry import Entry, sign_record
from ledger.envelope import sign_envelope
from ledger.keys import SoftwareSigner
from ledger.merkle import leaf_hash
from ledger.records import Delegation, Endorsement, KeyRecord, Revocation, RootRecord, Rotation
from ledger.tiles import encode_bundle
from ledger.witness import AddCheckpoint, same_size_evidence
from tests.fuzz.targets import (
    _KINDS,
    CORPUS,
    LOG_KEY,
    LOG_VKEY,
    ORIGIN,
    P256_KEY,
    SHARED,
    TARGETS,
    WITNESS_KEY,
    WITNESS_VKEY,
)

T0 = 1_700_000_000_000


class _Raw:
    """A software key as the raw Ed25519 signer ``cosign`` wants."""

    def __init__(self, key: SoftwareSigner) -> None:
        self._key = key

    @property
    def public_raw(self) -> bytes:
        return self._key.public_key.raw

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


BOMBS = [
    b"", b"\x00", b"\xc0", b"\xc1", b"\xff" * 64,
    b"\xdd\xff\xff\xff\xff",  # array of 4 Gi items
    b"\xdf\xff\xff\xff\xff",  # map of 4 Gi entries
    b"\xdb\xff\xff\xff\xff",  # str of 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xcb" + struct.pack(">d", 1.5),  # a float
    b"\x91" * 5000 + b"\xc0",  # 5000 nested arrays
    b"\x81\xa1a" * 3000 + b"\xc0",  # 3000 nested maps
    b"\xdc\x00\x01\xc0",  # array16 of 1: non-canonical width
    b"\xcd\x00\x01",  # uint16 1: non-canonical width
    b"\x82\xa1b\xc0\xa1a\xc0",  # keys out of order
    b"\x82\xa1a\xc0\xa1a\xc0",  # duplicate key
    b"\x81\x01\xc0",  # integer key
    b"\xc0\xc0",  # trailing bytes
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"payloadType":"x","payload":"","signatures":[{"sig":"AA=="}],"payloadType":"y"}',
    b'{"x": NaN}', b'{"x": 1e999999}', b'{"x": -Infinity}', b'{"x": 1.5}',
    b'{"x": ' + b"9" * 5000 + b"}",
    b"\xef\xbb\xbf{}", b"\xed\xa0\x80", b"null", b"[]", b"{}", b'"\\ud800"',
]


def _statement(name: str) -> bytes:
    return make_statement(subject=Artefact(name, hashlib.sha256(name.encode()).hexdigest()),
                          materials=(Artefact("src.tar", "ab" * 32),))


def _records() -> list[KeyRecord]:
    root, maint = LOG_KEY, P256_KEY
    return [
        RootRecord("acme", root.public_key, True, T0),
        Delegation(issuer=root.key_id, subject=maint.public_key, name="maint", org="acme",
                   artefacts=("lib-?", "pkg-*"), purposes=("build", "release"), max_depth=1,
                   not_before=T0, not_after=T0 + 10**9, created=T0),
        Endorsement(endorser=root.key_id, org="other", root=maint.key_id, purposes=("release",),
                    not_before=T0, not_after=None, created=T0),
        Revocation(issuer=root.key_id, target=maint.key_id, since=T0, reason="key lost", created=T0),
        Rotation(old=root.key_id, new=maint.public_key, created=T0),
    ]


def seeds() -> dict[str, list[bytes]]:
    """Valid seeds per target (the bombs are added to every target)."""
    records = _records()
    envs = [sign_record(records[0], [LOG_KEY]), sign_envelope(INTOTO, _statement("pkg-1"), [P256_KEY])]
    entries = [Entry.build(seq=i, prev=bytes(32) if i == 0 else leaf_hash(b"x"), ts=T0 + i, envelope=e).raw
               for i, e in enumerate(envs)]
    cp = Checkpoint(ORIGIN, 5, hashlib.sha256(b"root").digest()).to_text()
    note = sign_note(cp, [note_signer(ORIGIN, LOG_KEY)])
    line = cosign(cp, "fuzz.witness", _Raw(WITNESS_KEY), 1_699_999_000)
    other = sign_note(Checkpoint(ORIGIN, 5, hashlib.sha256(b"other").digest()).to_text(), [note_signer(ORIGIN, LOG_KEY)])
    bundle = Bundle("cd" * 32, (BundledLog(ORIGIN, "v", note),), (BundledRecord(ORIGIN, 0, entries[0], (b"\x01" * 32,)),))
    slsa02 = json.dumps({
        "_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "a", "digest": {"sha256": "ef" * 32}}],
        "predicate": {"materials": [{"uri": "git+https://x", "digest": {"sha256": "01" * 32}}]},
    }).encode()
    return {
        "msgpack": [encode(v) for v in (0, -1, 2**64 - 1, -(2**63), "", "é", b"\x00", [1, [2, [3]]],
                                        {"a": 1, "b": {"c": None}}, True, [None] * 20)],
        "entry": entries,
        "envelope_json": [e.to_json() for e in envs],
        "envelope_msgpack": [e.to_msgpack() for e in envs],
        "record": [bytes([_KINDS.index(type(r).payload_type())]) + r.to_payload() for r in records],
        "attestation": [_statement("pkg-1"), slsa02],
        "checkpoint": [cp.encode(), Checkpoint(ORIGIN, 0, bytes(32), ("ext line",)).to_text().encode()],
        "note": [note.encode(), add_signatures(note, [line]).encode(), other.encode()],
        "cosignature": [(cp + "\n" + line).encode()],
        "vkey": [b"fuzz.turtles/log+00000000+AQ==", LOG_VKEY.encode(), WITNESS_VKEY.encode()],
        "tile_path": [p.encode() for p in ("tile/0/000", "tile/0/x001/234.p/5", "tile/entries/x123/x456/789",
                                           "tile/3/000.p/255", "tile/entries/000")],
        "tile": [bytes([0]) + b"\x11" * 32, bytes([3]) + b"\x22" * 128, bytes([255]) + b"\x33" * 8192],
        "bundle": [bytes([len(entries) - 1]) + encode_bundle(entries), bytes([0]) + encode_bundle([b"x"])],
        "public_key": [b"\x00" + LOG_KEY.public_key.der, b"\x00" + P256_KEY.public_key.der,
                       b"\x01" + LOG_KEY.public_key.to_pem(), b"\x01" + P256_KEY.public_key.to_pem()],
        "signature": [b"\x01" + LOG_KEY.sign(b"fuzz message"), b"\x00" + P256_KEY.sign(b"fuzz message")],
        "key_id": [LOG_KEY.key_id.encode(), P256_KEY.key_id.encode()],
        "pkcs11_uri": [u.encode() for u in (
            "pkcs11:token=test;object=root", "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
            "pkcs11:token=A%20b;id=%01%02%03?module-path=/usr/lib/x.so&pin-value=1234",
            "pkcs11:slot-id=3;library-version=1.23;vendor-x=y?vendor-z=1&vendor-z=2")],
        "add_checkpoint": [AddCheckpoint(3, (b"\x01" * 32, b"\x02" * 32), note).to_bytes(),
                           AddCheckpoint(0, (), note).to_bytes()],
        "evidence": [same_size_evidence(ORIGIN, note, other).to_json().encode()],
        "bundle_file": [bundle.to_bytes()],
    }


def main() -> None:
    all_seeds = seeds()
    assert set(all_seeds) == set(TARGETS), set(TARGETS) ^ set(all_seeds)
    for name, items in [*all_seeds.items(), (SHARED, BOMBS)]:
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for data in items:
            (folder / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)
    print(f"wrote the corpus of {len(all_seeds)} targets to {CORPUS}")


if __name__ == "__main__":
    main()
