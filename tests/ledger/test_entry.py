"""Log entries (ledger.entry): the hashed leaf ``{v, seq, prev, ts, env}``, strict parsing
(RELIABILITY P4), every relied-on field inside the leaf hash (RELIABILITY L5), and record
identity independent of signature bytes (RELIABILITY C2)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.attestation import PAYLOAD_TYPE as INTOTO
from ledger.attestation import Artefact, Attestation, make_statement
from ledger.encoding import decode, encode
from ledger.entry import (
    ENTRY_VERSION,
    MAX_ENTRY_BYTES,
    ZERO_HASH,
    Entry,
    _pack_uint,
    parse_record,
    record_id,
    sign_record,
)
from ledger.entry import _fast_entry as entry_fast_path
from ledger.envelope import Envelope, Signature, pae, sign_envelope
from ledger.errors import (
    EncodingError,
    EnvelopeError,
    InputError,
    ProofError,
    RecordError,
    SignatureError,
    TooLargeError,
    TurtlesError,
)
from ledger.keys import SoftwareSigner
from ledger.records import (
    Delegation,
    Endorsement,
    KeyRecord,
    Revocation,
    RootRecord,
    Rotation,
    required_signers,
)

# RFC 8032 section 7.1 TEST 1 / TEST 2 secret keys: deterministic Ed25519 signatures, so the
# pinned entry below is reproducible anywhere.
SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
ROOT = SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(SEED_1))
MAINT = SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(SEED_2))
P256 = SoftwareSigner.generate("p256")
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
T0 = 1_700_000_000_000


def _root_env() -> Envelope:
    return sign_record(RootRecord("acme", ROOT.public_key, True, T0), [ROOT])


def _entry(seq: int = 7, prev: bytes = b"\x11" * 32, ts: int = T0 + 5, env: Envelope | None = None) -> Entry:
    return Entry.build(seq=seq, prev=prev, ts=ts, envelope=env or _root_env())


# --- build / from_bytes ------------------------------------------------------------------------


def test_build_and_parse() -> None:
    e = _entry()
    assert decode(e.raw) == {"v": ENTRY_VERSION, "seq": 7, "prev": b"\x11" * 32, "ts": T0 + 5,
                             "env": e.envelope.to_value()}
    assert e.leaf_hash == merkle.leaf_hash(e.raw) == hashlib.sha256(b"\x00" + e.raw).digest()
    parsed = Entry.from_bytes(e.raw)
    assert parsed == e
    assert parsed.envelope.verify({ROOT.key_id: ROOT.public_key}) == (ROOT.key_id,)


def test_pinned_entry() -> None:
    # Deterministic inputs (RFC 8032 key, fixed times): the leaf hash of this entry is part of
    # the log format. If it changes, every existing log stops verifying.
    e = Entry.build(seq=0, prev=ZERO_HASH, ts=T0, envelope=_root_env())
    assert ENTRY_VERSION == 1
    assert bytes(32) == ZERO_HASH
    assert len(e.raw) == 372
    assert e.record_id.hex() == hashlib.sha256(e.envelope.pae()).hexdigest()
    assert e.leaf_hash.hex() == PINNED_LEAF_HASH


# Recorded from this implementation when the format was fixed (a regression pin, not an
# external vector).
PINNED_LEAF_HASH = "fe6cd09118be0cffff064e183cc75a7dc996c2146b913eaef61d0673d1e273d2"


envelopes = st.builds(
    lambda ptype, payload, sigs: Envelope(ptype, payload, tuple(Signature(k, s) for k, s in sigs)),
    st.text(min_size=1, max_size=30),
    st.binary(max_size=200),
    st.lists(st.tuples(st.text(min_size=1, max_size=10), st.binary(min_size=1, max_size=80)),
             min_size=1, max_size=4, unique_by=lambda t: t[0]),
)


@settings(max_examples=200)
@given(st.integers(0, (1 << 63) - 1), st.binary(min_size=32, max_size=32),
       st.integers(0, (1 << 63) - 1), envelopes)
def test_round_trip(seq: int, prev: bytes, ts: int, env: Envelope) -> None:
    e = Entry.build(seq=seq, prev=prev, ts=ts, envelope=env)
    parsed = Entry.from_bytes(e.raw)
    assert (parsed.seq, parsed.prev, parsed.ts, parsed.envelope) == (seq, prev, ts, env)
    assert parsed.raw == e.raw and parsed.leaf_hash == e.leaf_hash
    assert parsed.record_id == record_id(env.payload_type, env.payload)


@settings(max_examples=300)
@given(st.integers(0, (1 << 63) - 1), st.binary(min_size=32, max_size=32),
       st.integers(0, (1 << 63) - 1), envelopes)
def test_build_spells_out_the_generic_canonical_encoding(seq: int, prev: bytes, ts: int, env: Envelope) -> None:
    # Entry.build and Envelope.to_msgpack write the bytes directly; they must be exactly
    # what the generic canonical encoder makes of the same values.
    generic = {"v": 1, "seq": seq, "prev": prev, "ts": ts, "env": env.to_value()}
    assert Entry.build(seq=seq, prev=prev, ts=ts, envelope=env).raw == encode(generic)
    assert env.to_msgpack() == encode(env.to_value())


def test_a_lone_surrogate_in_a_key_id_cannot_be_encoded() -> None:
    env = Envelope(INTOTO, b"{}", (Signature("k\ud800", b"s"),))
    with pytest.raises(EncodingError, match="not valid Unicode"):
        Entry.build(seq=0, prev=ZERO_HASH, ts=T0, envelope=env)


def _strict(raw: bytes) -> object:
    """Entry.from_bytes without its C fast path (the strict reader alone)."""
    import ledger.entry as entry_module

    fast = entry_module._fast_entry
    entry_module._fast_entry = lambda raw: None  # type: ignore[assignment]
    try:
        return _parsed(raw)
    finally:
        entry_module._fast_entry = fast


def _parsed(raw: bytes) -> object:
    try:
        e = Entry.from_bytes(raw)
    except TurtlesError as err:
        return type(err).__name__, err.message
    return e.seq, e.prev, e.ts, e.envelope, e.raw, e.leaf_hash


@settings(max_examples=150)
@given(st.integers(0, (1 << 63) - 1), st.binary(min_size=32, max_size=32), st.integers(0, (1 << 63) - 1),
       envelopes, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sdi")),
                           max_size=3))
def test_the_fast_reader_agrees_with_the_strict_one(
    seq: int, prev: bytes, ts: int, env: Envelope, edits: list[tuple[int, int, str]]
) -> None:
    raw = bytearray(Entry.build(seq=seq, prev=prev, ts=ts, envelope=env).raw)
    assert _parsed(bytes(raw)) == _strict(bytes(raw))
    for pos, byte, op in edits:  # damaged, truncated or padded entries: same answer, same error
        i = pos % (len(raw) + 1)
        if op == "s" and i < len(raw):
            raw[i] = byte
        elif op == "d" and i < len(raw):
            del raw[i]
        else:
            raw.insert(i, byte)
        assert _parsed(bytes(raw)) == _strict(bytes(raw))


def test_the_fast_reader_refuses_what_the_strict_one_refuses() -> None:
    good = _entry()
    assert entry_fast_path(good.raw) is not None  # a valid entry takes the fast path
    value = decode(good.raw)
    cases = [
        {**value, "seq": True},  # a bool where an int goes
        {**value, "v": 2},
        {k: value[k] for k in reversed(list(value))},  # keys out of order (msgpack keeps the order)
        {**value, "extra": 1},
    ]
    for case in cases:
        raw = msgpack.packb(case, use_bin_type=True)
        assert _parsed(raw) == _strict(raw) and isinstance(_parsed(raw), tuple) and len(_parsed(raw)) == 2
    wide = good.raw.replace(b"\xa3seq\x07", b"\xa3seq\xcc\x07")  # a wider int than needed
    assert _parsed(wide) == _strict(wide) and _parsed(wide)[0] == "EncodingError"  # type: ignore[index]
    twice = b"\x86" + good.raw[1:] + b"\xa1v\x01"  # a key twice
    assert _parsed(twice) == _strict(twice) and _parsed(twice)[0] == "EncodingError"  # type: ignore[index]


def test_hash_chain() -> None:
    entries: list[Entry] = []
    prev = ZERO_HASH
    for seq in range(4):
        env = sign_envelope(INTOTO, make_statement(subject=Artefact(f"a{seq}", "ab" * 32)), [MAINT])
        entries.append(Entry.build(seq=seq, prev=prev, ts=T0 + seq, envelope=env))
        prev = entries[-1].leaf_hash
    for before, after in itertools.pairwise(entries):
        assert Entry.from_bytes(after.raw).prev == before.leaf_hash


# --- strictness ----------------------------------------------------------------------------------


def _value() -> dict[str, Any]:
    return decode(_entry().raw)  # type: ignore[no-any-return]


def _parse_value(value: Any) -> Entry:
    return Entry.from_bytes(encode(value))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda v: v.pop("v"), "fields"),
        (lambda v: v.pop("seq"), "fields"),
        (lambda v: v.pop("prev"), "fields"),
        (lambda v: v.pop("ts"), "fields"),
        (lambda v: v.pop("env"), "fields"),
        (lambda v: v.update(extra=1), "fields"),
        (lambda v: v.update(v=2), "entry.v"),
        (lambda v: v.update(v=0), "entry.v"),
        (lambda v: v.update(v=True), "entry.v"),  # True == 1 in Python; not here
        (lambda v: v.update(v="1"), "entry.v"),
        (lambda v: v.update(v=None), "entry.v"),
        (lambda v: v.update(seq=-1), "entry.seq"),
        (lambda v: v.update(seq="7"), "entry.seq"),
        (lambda v: v.update(seq=True), "entry.seq"),
        (lambda v: v.update(seq=None), "entry.seq"),
        (lambda v: v.update(seq=1 << 63), "entry.seq"),
        (lambda v: v.update(prev=b"\x11" * 31), "entry.prev"),
        (lambda v: v.update(prev=b"\x11" * 33), "entry.prev"),
        (lambda v: v.update(prev=b""), "entry.prev"),
        (lambda v: v.update(prev="11" * 32), "entry.prev"),
        (lambda v: v.update(prev=None), "entry.prev"),
        (lambda v: v.update(ts=-1), "entry.ts"),
        (lambda v: v.update(ts=False), "entry.ts"),
        (lambda v: v.update(ts="now"), "entry.ts"),
        (lambda v: v.update(ts=1 << 63), "entry.ts"),
    ],
)
def test_bad_entry_fields(mutate: Callable[[dict[str, Any]], Any], where: str) -> None:
    value = _value()
    mutate(value)
    with pytest.raises(EncodingError, match=where):
        _parse_value(value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda env: env.clear(),
        lambda env: env.update(extra=1),
        lambda env: env.pop("payload"),
        lambda env: env.update(payload="text"),
        lambda env: env.update(payloadType=b"bytes"),
        lambda env: env.update(signatures=[]),
        lambda env: env["signatures"][0].pop("keyid"),  # one byte form: keyid always present
        lambda env: env["signatures"][0].update(sig="text"),
        lambda env: env["signatures"][0].update(sig=b""),
        lambda env: env["signatures"].append(dict(env["signatures"][0])),  # duplicate keyid
    ],
)
def test_bad_envelope_inside_entry(mutate: Callable[[dict[str, Any]], Any]) -> None:
    value = _value()
    mutate(value["env"])
    with pytest.raises(EnvelopeError):
        _parse_value(value)


def test_env_must_be_a_map() -> None:
    bad: Any
    for bad in ([], b"", "env", None):
        with pytest.raises(EnvelopeError):
            _parse_value(dict(_value(), env=bad))


def test_not_an_entry() -> None:
    for bad in ([1, 2], "entry", None, 1):
        with pytest.raises(EncodingError, match="fields"):
            _parse_value(bad)


def test_non_canonical_bytes_are_refused() -> None:
    raw = _entry().raw
    with pytest.raises(EncodingError):
        Entry.from_bytes(raw + b"\x00")
    with pytest.raises(EncodingError):
        Entry.from_bytes(raw[:-1])
    # The same map with two keys swapped: same content, another byte form.
    value = _value()
    swapped = bytearray(b"\x85")
    for k in ["env", "prev", "seq", "ts", "v"][::-1]:
        swapped += encode(k) + encode(value[k])
    with pytest.raises(EncodingError, match="order"):
        Entry.from_bytes(bytes(swapped))


def test_oversize_entry_is_refused() -> None:
    with pytest.raises(TooLargeError):
        Entry.from_bytes(bytes(MAX_ENTRY_BYTES + 1))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_input_errors(data: bytes) -> None:
    with contextlib.suppress(EncodingError, EnvelopeError, TooLargeError):
        Entry.from_bytes(data)


def test_build_checks_its_fields() -> None:
    env = _root_env()
    for kwargs, where in (
        ({"seq": -1}, "seq"), ({"seq": True}, "seq"), ({"prev": b"x"}, "prev"),
        ({"prev": "00" * 32}, "prev"), ({"ts": -5}, "ts"), ({"ts": 1 << 63}, "ts"),
    ):
        args: dict[str, Any] = {"seq": 0, "prev": ZERO_HASH, "ts": 0, "envelope": env}
        args.update(kwargs)
        with pytest.raises(EncodingError, match=where):
            Entry.build(**args)


# --- L5: every relied-on field is inside the hashed leaf -----------------------------------------


def _set_sig(v: dict[str, Any], i: int, **kw: Any) -> None:
    v["env"]["signatures"][i].update(kw)


def _flip(b: bytes, i: int = 0) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:] if i == 0 else b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "v": lambda v: v.update(v=2),
    "seq": lambda v: v.update(seq=v["seq"] + 1),
    "seq-to-zero": lambda v: v.update(seq=0),
    "prev": lambda v: v.update(prev=_flip(v["prev"], 31)),
    "prev-zero": lambda v: v.update(prev=ZERO_HASH),
    "ts": lambda v: v.update(ts=v["ts"] + 1),
    "ts-backdated": lambda v: v.update(ts=0),
    "env.payload": lambda v: v["env"].update(payload=_flip(v["env"]["payload"], 5)),
    "env.payloadType": lambda v: v["env"].update(payloadType="application/vnd.turtles.root.v1+msgpack"),
    "env.keyid": lambda v: _set_sig(v, 0, keyid=MAINT.key_id),
    "env.keyid-empty": lambda v: _set_sig(v, 0, keyid=""),
    "env.sig": lambda v: _set_sig(v, 0, sig=_flip(v["env"]["signatures"][0]["sig"], 10)),
    "env.sig-added": lambda v: v["env"]["signatures"].append({"keyid": "x", "sig": b"s"}),
    "env.sig-removed": lambda v: v["env"]["signatures"].pop(),
    "env.sig-reordered": lambda v: v["env"]["signatures"].reverse(),
}


def _two_signed_entry() -> Entry:
    env = sign_record(Rotation(ROOT.key_id, MAINT.public_key, T0), [ROOT, MAINT])
    return _entry(env=env)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutating_any_field_changes_the_leaf_or_fails(name: str) -> None:
    original = _two_signed_entry()
    value = copy.deepcopy(decode(original.raw))
    MUTATIONS[name](value)
    mutated = encode(value)
    assert mutated != original.raw
    try:
        parsed = Entry.from_bytes(mutated)
    except InputError:
        return
    assert parsed.leaf_hash != original.leaf_hash
    # Nothing outside the leaf: the parsed entry rebuilds to exactly the bytes it came from.
    rebuilt = Entry.build(seq=parsed.seq, prev=parsed.prev, ts=parsed.ts, envelope=parsed.envelope)
    assert rebuilt.raw == mutated
    # And the mutated leaf is not the one the tree holds.
    leaves = [original.leaf_hash, merkle.leaf_hash(b"other")]
    root = merkle.root_hash(leaves)
    merkle.verify_inclusion(original.leaf_hash, 0, 2, merkle.inclusion_proof(leaves, 0, 2), root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(parsed.leaf_hash, 0, 2, merkle.inclusion_proof(leaves, 0, 2), root)


def test_every_byte_flip_changes_the_leaf_or_fails() -> None:
    original = _two_signed_entry()
    accepted = 0
    for i in range(len(original.raw)):
        for bit in (0, 7):
            raw = bytearray(original.raw)
            raw[i] ^= 1 << bit
            try:
                parsed = Entry.from_bytes(bytes(raw))
            except InputError:
                continue
            accepted += 1
            assert parsed.leaf_hash != original.leaf_hash
            assert Entry.build(seq=parsed.seq, prev=parsed.prev, ts=parsed.ts,
                               envelope=parsed.envelope).raw == bytes(raw)
    assert accepted > 0  # flips inside byte strings parse; they must still change the leaf


def test_mutated_signature_fails_verification_but_keeps_the_record_id() -> None:
    e = _two_signed_entry()
    value = decode(e.raw)
    _set_sig(value, 0, sig=_flip(value["env"]["signatures"][0]["sig"], 3))
    bad = Entry.from_bytes(encode(value))
    assert bad.record_id == e.record_id
    with pytest.raises(SignatureError):
        bad.envelope.verify({ROOT.key_id: ROOT.public_key, MAINT.key_id: MAINT.public_key})


# --- record identity (C2) --------------------------------------------------------------------------


def test_record_id_is_the_hash_of_the_pae() -> None:
    env = _root_env()
    assert record_id(env.payload_type, env.payload) == hashlib.sha256(pae(env.payload_type, env.payload)).digest()
    assert record_id("a", b"b") != record_id("b", b"a")
    assert record_id("a", b"1 b") != record_id("a 1", b"b")  # PAE is length-prefixed


def test_record_id_ignores_signatures() -> None:
    env = sign_record(Rotation(ROOT.key_id, MAINT.public_key, T0), [ROOT])
    cosigned = env.with_signature(MAINT)
    assert record_id(env.payload_type, env.payload) == record_id(cosigned.payload_type, cosigned.payload)
    a, b = _entry(env=env), _entry(env=cosigned)
    assert a.record_id == b.record_id and a.leaf_hash != b.leaf_hash


def test_malleated_ecdsa_signature_keeps_the_record_id() -> None:
    env = sign_envelope(INTOTO, make_statement(subject=Artefact("x", "cd" * 32)), [P256])
    r, s = decode_dss_signature(env.signatures[0].sig)
    twin = Envelope(env.payload_type, env.payload,
                    (Signature(P256.key_id, encode_dss_signature(r, P256_N - s)),))
    assert twin.verify({P256.key_id: P256.public_key}) == (P256.key_id,)  # accepted (ledger.keys)
    a, b = _entry(env=env), _entry(env=twin)
    assert a.record_id == b.record_id
    assert a.leaf_hash != b.leaf_hash


# --- records inside envelopes ------------------------------------------------------------------------

RECORDS: list[KeyRecord] = [
    RootRecord("acme", ROOT.public_key, True, T0),
    Delegation(issuer=ROOT.key_id, subject=MAINT.public_key, name="m", org="acme",
               artefacts=("pkg-*",), purposes=("release",), max_depth=0, not_before=T0,
               not_after=None, created=T0),
    Endorsement(ROOT.key_id, "other", MAINT.key_id, ("build", "release"), T0, T0 + 1, T0),
    Revocation(ROOT.key_id, MAINT.key_id, T0, "compromised", T0),
    Rotation(ROOT.key_id, MAINT.public_key, T0),
]


@pytest.mark.parametrize("record", RECORDS, ids=[r.kind for r in RECORDS])
def test_sign_record_and_parse_record(record: KeyRecord) -> None:
    signers = [ROOT, MAINT] if isinstance(record, Rotation) else [ROOT]
    env = sign_record(record, signers)
    assert env.payload_type == record.payload_type()
    assert env.payload == record.to_payload()
    assert env.verify({s.key_id: s.public_key for s in signers}) == tuple(required_signers(record))
    assert parse_record(env) == record
    entry = Entry.from_bytes(_entry(env=env).raw)
    assert parse_record(entry.envelope) == record


def test_parse_record_attestation() -> None:
    stmt = make_statement(subject=Artefact("pkg-1@1.0", "ef" * 32), materials=(Artefact("lib", "01" * 32),))
    record = parse_record(sign_envelope(INTOTO, stmt, [MAINT]))
    assert isinstance(record, Attestation)
    assert record.digests == ("ef" * 32,)
    assert record.materials == (Artefact("lib", "01" * 32),)


def test_parse_record_refuses_unknown_types_and_bad_payloads() -> None:
    for ptype in ("application/json", "application/vnd.turtles.root.v2+msgpack", "text/plain"):
        with pytest.raises(RecordError) as info:
            parse_record(sign_envelope(ptype, b"{}", [ROOT]))
        assert info.value.field == "payloadType"  # type: ignore[attr-defined]
    # A key record type with an attestation inside, and the other way round.
    stmt = make_statement(subject=Artefact("a", "ab" * 32))
    with pytest.raises(InputError):
        parse_record(sign_envelope(RootRecord.payload_type(), stmt, [ROOT]))
    with pytest.raises(RecordError):
        parse_record(sign_envelope(INTOTO, RECORDS[0].to_payload(), [ROOT]))


def test_sign_record_needs_a_signer() -> None:
    with pytest.raises(EnvelopeError):
        sign_record(RECORDS[0], [])


# --- the sequencer's batch form ----------------------------------------------------------------


@settings(max_examples=200)
@given(st.integers(0, (1 << 63) - 20), st.binary(min_size=32, max_size=32), st.integers(0, (1 << 63) - 1),
       st.lists(envelopes, max_size=6))
def test_chain_is_build_in_turn(seq: int, prev: bytes, ts: int, envs: list[Envelope]) -> None:
    chained = Entry.chain(seq, prev, ts, envs)
    built = []
    for i, env in enumerate(envs):
        built.append(Entry.build(seq=seq + i, prev=built[-1].leaf_hash if built else prev, ts=ts, envelope=env))
    assert chained == built
    assert [(e.raw, e.leaf_hash) for e in chained] == [(e.raw, e.leaf_hash) for e in built]
    for e in chained:
        assert Entry.from_bytes(e.raw) == e


def test_chain_checks_its_fields() -> None:
    env = _root_env()
    for seq, prev, ts, where in ((-1, ZERO_HASH, 0, "seq"), ((1 << 63) - 1, ZERO_HASH, 0, "seq"),
                                 (0, b"x", 0, "prev"), (0, ZERO_HASH, -5, "ts"), (0, ZERO_HASH, 1 << 63, "ts")):
        with pytest.raises(EncodingError, match=where):
            Entry.chain(seq, prev, ts, [env, env])
    assert Entry.chain((1 << 63) - 1, ZERO_HASH, 0, [env])[0].seq == (1 << 63) - 1
    assert Entry.chain(-1, b"x", -1, []) == []


@given(st.integers(0, (1 << 64) - 1))
def test_pack_uint_is_msgpack(n: int) -> None:
    assert _pack_uint(n) == msgpack.packb(n)
