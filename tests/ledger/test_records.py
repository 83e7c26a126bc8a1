"""The ledger's record kinds (ledger.records): canonical payloads, strict validation with the
field named in every error (RELIABILITY P4), and who must sign what."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.encoding import decode, encode
from ledger.errors import EncodingError, RecordError, TooLargeError
from ledger.keys import KeyId, PublicKey, SoftwareSigner
from ledger.records import (
    KINDS,
    MAX_DEPTH_LIMIT,
    MAX_GLOBS,
    PURPOSES,
    Delegation,
    Endorsement,
    KeyRecord,
    Revocation,
    RootRecord,
    Rotation,
    is_key_record_type,
    parse_key_record,
    required_signers,
)

# RFC 8032 section 7.1 TEST 1 and TEST 2 public keys: fixed keys for pinned bytes.
RFC8032_1 = PublicKey.from_raw_ed25519(
    bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
)
RFC8032_2 = PublicKey.from_raw_ed25519(
    bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
)
POOL = [SoftwareSigner.generate("ed25519") for _ in range(3)] + [SoftwareSigner.generate("p256")]
KEYS = [s.public_key for s in POOL] + [RFC8032_1, RFC8032_2]
K1, K2 = RFC8032_1.key_id, RFC8032_2.key_id

# --- strategies ----------------------------------------------------------------------------

times = st.integers(min_value=0, max_value=(1 << 63) - 1)
keys = st.sampled_from(KEYS)
key_ids = st.one_of(
    keys.map(lambda k: k.key_id),
    st.binary(min_size=32, max_size=32).map(lambda b: KeyId("sha256:" + b.hex())),
)
orgs = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True)
texts = st.text(min_size=1, max_size=50)
globs = st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8, unique=True).map(
    lambda xs: tuple(sorted(xs))
)
purposes = st.lists(st.sampled_from(PURPOSES), min_size=1, unique=True).map(lambda xs: tuple(sorted(xs)))


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int | None]:
    nb = draw(times)
    na = draw(st.none() | st.integers(min_value=nb, max_value=(1 << 63) - 1))
    return nb, na


@st.composite
def roots(draw: st.DrawFn) -> RootRecord:
    return RootRecord(draw(orgs), draw(keys), draw(st.booleans()), draw(times))


@st.composite
def delegations(draw: st.DrawFn) -> Delegation:
    subject = draw(keys)
    issuer = draw(key_ids.filter(lambda k: k != subject.key_id))
    nb, na = draw(windows())
    return Delegation(
        issuer=issuer, subject=subject, name=draw(texts), org=draw(orgs), artefacts=draw(globs),
        purposes=draw(purposes), max_depth=draw(st.integers(0, MAX_DEPTH_LIMIT)),
        not_before=nb, not_after=na, created=draw(times),
    )


@st.composite
def endorsements(draw: st.DrawFn) -> Endorsement:
    endorser = draw(key_ids)
    nb, na = draw(windows())
    return Endorsement(
        endorser=endorser, org=draw(orgs), root=draw(key_ids.filter(lambda k: k != endorser)),
        purposes=draw(purposes), not_before=nb, not_after=na, created=draw(times),
    )


@st.composite
def revocations(draw: st.DrawFn) -> Revocation:
    return Revocation(draw(key_ids), draw(key_ids), draw(st.none() | times), draw(texts), draw(times))


@st.composite
def rotations(draw: st.DrawFn) -> Rotation:
    new = draw(keys)
    return Rotation(draw(key_ids.filter(lambda k: k != new.key_id)), new, draw(times))


records = st.one_of(roots(), delegations(), endorsements(), revocations(), rotations())


# --- round trips ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(records)
def test_round_trip(record: KeyRecord) -> None:
    payload = record.to_payload()
    kind = type(record)
    assert kind.from_payload(payload) == record
    assert parse_key_record(kind.payload_type(), payload) == record
    assert kind.from_payload(payload).to_payload() == payload  # one byte form
    assert decode(payload) == record.to_value()
    assert set(decode(payload)) == set(kind.field_names())
    assert hash(kind.from_payload(payload)) == hash(record)


def test_payload_types() -> None:
    assert set(KINDS) == {
        "application/vnd.turtles.root.v1+msgpack",
        "application/vnd.turtles.delegation.v1+msgpack",
        "application/vnd.turtles.endorsement.v1+msgpack",
        "application/vnd.turtles.revocation.v1+msgpack",
        "application/vnd.turtles.rotation.v1+msgpack",
    }
    for ptype, kind in KINDS.items():
        assert kind.payload_type() == ptype
        assert is_key_record_type(ptype)
    assert not is_key_record_type("application/vnd.in-toto+json")
    assert not is_key_record_type("application/vnd.turtles.root.v2+msgpack")


def _delegation(**kw: Any) -> Delegation:
    args: dict[str, Any] = dict(
        issuer=K1, subject=RFC8032_2, name="maintainer", org="acme", artefacts=("pkg-*",),
        purposes=("build", "release"), max_depth=1, not_before=1_700_000_000_000,
        not_after=None, created=1_700_000_000_000,
    )
    args.update(kw)
    return Delegation(**args)


def test_canonical_bytes_are_pinned() -> None:
    # Fixed inputs, fixed bytes: a change here changes every record id in every log.
    root = RootRecord("acme", RFC8032_1, True, 1_700_000_000_000)
    assert root.to_payload().hex() == (
        "84"  # a map of four entries, keys in byte order
        "a7 63726561746564 cf 0000018bcfe56800"  # created: uint64
        "a3 68736d c3"  # hsm: true
        "a3 6b6579 c4 2c 302a300506032b6570032100"  # key: bin8, Ed25519 SPKI prefix ...
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # ... and the key
        "a3 6f7267 a4 61636d65"  # org: "acme"
    ).replace(" ", "")
    d = _delegation()
    assert hashlib.sha256(d.to_payload()).hexdigest() == hashlib.sha256(
        encode({
            "artefacts": ["pkg-*"], "created": 1_700_000_000_000, "issuer": K1,
            "max_depth": 1, "name": "maintainer", "not_after": None,
            "not_before": 1_700_000_000_000, "org": "acme", "purposes": ["build", "release"],
            "subject": RFC8032_2.der,
        })
    ).hexdigest()
    assert list(decode(d.to_payload())) == sorted(Delegation.field_names())


# --- validation: every error names its field -------------------------------------------------

VALID: dict[type[KeyRecord], dict[str, Any]] = {
    RootRecord: RootRecord("acme", RFC8032_1, False, 5).to_value(),
    Delegation: _delegation().to_value(),
    Endorsement: Endorsement(K1, "other-org", K2, ("release",), 0, 10, 5).to_value(),
    Revocation: Revocation(K1, K2, None, "key compromised", 5).to_value(),
    Rotation: Rotation(K1, RFC8032_2, 5).to_value(),
}


def _parse(kind: type[KeyRecord], value: dict[str, Any]) -> KeyRecord:
    return kind.from_payload(encode(value))


def test_valid_maps_parse() -> None:
    for kind, value in VALID.items():
        assert _parse(kind, value).to_value() == value


FIELDS = [(kind, name) for kind, value in VALID.items() for name in value]


@pytest.mark.parametrize(("kind", "name"), FIELDS, ids=[f"{k.kind}.{n}" for k, n in FIELDS])
def test_missing_field_is_named(kind: type[KeyRecord], name: str) -> None:
    value = dict(VALID[kind])
    del value[name]
    with pytest.raises(RecordError, match="missing") as info:
        _parse(kind, value)
    assert info.value.field == name  # type: ignore[attr-defined]


# A value of the wrong type for every field (msgpack-representable).
WRONG: dict[str, list[Any]] = {
    "org": [1, b"acme", None, ["acme"]],
    "key": ["not bytes", 1, None],
    "subject": ["not bytes", None],
    "new": ["not bytes", None],
    "hsm": [1, 0, "true", None],
    "created": ["1", True, None, -1, 1 << 63, b"\x01"],
    "issuer": [1, None, b"sha256:"],
    "endorser": [1, None],
    "root": [1, None],
    "target": [1, None],
    "old": [1, None],
    "name": [1, None, ""],
    "reason": [1, None, ""],
    "artefacts": ["pkg-*", None, [], [1], [""], {"a": 1}],
    "purposes": ["release", None, [], [1]],
    "max_depth": ["1", None, True, -1, MAX_DEPTH_LIMIT + 1],
    "not_before": ["1", None, False, -1],
    "not_after": ["1", True, -1, b""],
    "since": ["1", True, -1],
}


@pytest.mark.parametrize(("kind", "name"), FIELDS, ids=[f"{k.kind}.{n}" for k, n in FIELDS])
def test_wrong_type_is_named(kind: type[KeyRecord], name: str) -> None:
    for bad in WRONG[name]:
        if kind is Delegation and name == "org" and bad is None:
            continue  # nil: the subject acts for the issuer's org (test_delegation_org_may_be_nil)
        value = dict(VALID[kind], **{name: bad})
        with pytest.raises(RecordError) as info:
            _parse(kind, value)
        assert info.value.field.split("[")[0] == name, (bad, info.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(VALID), ids=[k.kind for k in VALID])
def test_unknown_field_is_named(kind: type[KeyRecord]) -> None:
    value = dict(VALID[kind], zzz_extra=1)
    with pytest.raises(RecordError, match="unknown field") as info:
        _parse(kind, value)
    assert info.value.field == "zzz_extra"  # type: ignore[attr-defined]


def test_a_payload_of_one_kind_is_not_another() -> None:
    payload = RootRecord("acme", RFC8032_1, False, 5).to_payload()
    with pytest.raises(RecordError):
        parse_key_record(Delegation.payload_type(), payload)
    with pytest.raises(RecordError):
        Rotation.from_payload(payload)


@pytest.mark.parametrize(
    "org", ["Acme", "-acme", ".acme", "_acme", "ac me", "ac/me", "acmé", "a" * 64, "", "acme\n"]
)
def test_bad_org_names(org: str) -> None:
    for kind in (RootRecord, Delegation, Endorsement):
        with pytest.raises(RecordError) as info:
            _parse(kind, dict(VALID[kind], org=org))
        assert info.value.field == "org"  # type: ignore[attr-defined]


@pytest.mark.parametrize("org", ["a", "acme", "0day", "acme.io", "a_b-c.d", "a" * 63])
def test_good_org_names(org: str) -> None:
    assert _parse(RootRecord, dict(VALID[RootRecord], org=org)).org == org  # type: ignore[union-attr]


BAD_KEY_IDS = [
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "sha256:" + "a" * 65,
    "sha512:" + "a" * 64,
    "SHA256:" + "a" * 64,
    "a" * 64,
    "sha256:" + "g" * 64,
    "sha256: " + "a" * 63,
    "",
]


@pytest.mark.parametrize("bad", BAD_KEY_IDS)
def test_bad_key_ids(bad: str) -> None:
    cases = [(Delegation, "issuer"), (Endorsement, "endorser"), (Endorsement, "root"),
             (Revocation, "issuer"), (Revocation, "target"), (Rotation, "old")]
    for kind, name in cases:
        with pytest.raises(RecordError) as info:
            _parse(kind, dict(VALID[kind], **{name: bad}))
        assert info.value.field == name  # type: ignore[attr-defined]


def _bad_ders() -> dict[str, bytes]:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + p256.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    rsa_der = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    k1_der = ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = RFC8032_1.der
    return {
        "p256-compressed-point": compressed,  # parses, but is not the canonical DER
        "long-form-length": b"\x30\x81" + good[1:],
        "trailing-byte": good + b"\x00",
        "truncated": good[:-1],
        "rsa": rsa_der,
        "secp256k1": k1_der,
        "garbage": b"\x01\x02\x03",
        "empty": b"",
        "raw-ed25519": RFC8032_1.raw,
    }


BAD_DERS = _bad_ders()


@pytest.mark.parametrize("which", sorted(BAD_DERS))
def test_bad_public_keys_are_named(which: str) -> None:
    for kind, name in ((RootRecord, "key"), (Delegation, "subject"), (Rotation, "new")):
        with pytest.raises(RecordError) as info:
            _parse(kind, dict(VALID[kind], **{name: BAD_DERS[which]}))
        assert info.value.field == name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "items", "field", "reason"),
    [
        ("artefacts", ["b", "a"], "artefacts", "sorted"),
        ("artefacts", ["a", "a"], "artefacts", "duplicate"),
        ("artefacts", ["a"] * (MAX_GLOBS + 1), "artefacts", "more than"),
        ("artefacts", ["x" * 257], "artefacts[0]", "1..256"),
        ("artefacts", ["a", ""], "artefacts[1]", "1..256"),
        ("purposes", ["release", "build"], "purposes", "sorted"),
        ("purposes", ["build", "build"], "purposes", "duplicate"),
        ("purposes", ["build", "deploy"], "purposes[1]", "not one of"),
        ("purposes", ["Release"], "purposes[0]", "not one of"),
    ],
)
def test_list_rules(name: str, items: list[str], field: str, reason: str) -> None:
    with pytest.raises(RecordError, match=reason) as info:
        _parse(Delegation, dict(VALID[Delegation], **{name: items}))
    assert info.value.field == field  # type: ignore[attr-defined]
    if name == "purposes":
        with pytest.raises(RecordError) as info:
            _parse(Endorsement, dict(VALID[Endorsement], purposes=items))
        assert info.value.field == field  # type: ignore[attr-defined]


def test_list_limits_are_inclusive() -> None:
    many = sorted(f"g{i:03}" for i in range(MAX_GLOBS))
    d = _parse(Delegation, dict(VALID[Delegation], artefacts=many))
    assert len(d.artefacts) == MAX_GLOBS  # type: ignore[union-attr]
    d = _parse(Delegation, dict(VALID[Delegation], purposes=sorted(PURPOSES)))
    assert d.purposes == tuple(sorted(PURPOSES))  # type: ignore[union-attr]


def test_max_depth_range() -> None:
    for depth in (0, MAX_DEPTH_LIMIT):
        assert _delegation(max_depth=depth).max_depth == depth
    for depth in (-1, MAX_DEPTH_LIMIT + 1, 1000):
        with pytest.raises(RecordError) as info:
            _delegation(max_depth=depth)
        assert info.value.field == "max_depth"  # type: ignore[attr-defined]


def test_validity_window() -> None:
    assert _delegation(not_before=5, not_after=5).not_after == 5  # closed interval: equal is fine
    with pytest.raises(RecordError, match="before not_before") as info:
        _delegation(not_before=5, not_after=4)
    assert info.value.field == "not_after"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        Endorsement(K1, "acme", K2, ("release",), 10, 9, 0)
    assert info.value.field == "not_after"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        _parse(Delegation, dict(VALID[Delegation], not_before=10, not_after=9))
    assert info.value.field == "not_after"  # type: ignore[attr-defined]


def test_self_references_are_refused() -> None:
    with pytest.raises(RecordError, match="itself") as info:
        _delegation(issuer=RFC8032_2.key_id, subject=RFC8032_2)
    assert info.value.field == "subject"  # type: ignore[attr-defined]
    with pytest.raises(RecordError, match="itself") as info:
        Endorsement(K1, "acme", K1, ("release",), 0, None, 0)
    assert info.value.field == "root"  # type: ignore[attr-defined]
    with pytest.raises(RecordError, match="same key") as info:
        Rotation(K2, RFC8032_2, 0)
    assert info.value.field == "new"  # type: ignore[attr-defined]
    # The same rules hold for parsed payloads.
    with pytest.raises(RecordError) as info:
        _parse(Rotation, dict(VALID[Rotation], old=K2))
    assert info.value.field == "new"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        _parse(Delegation, dict(VALID[Delegation], issuer=K2))
    assert info.value.field == "subject"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        _parse(Endorsement, dict(VALID[Endorsement], root=K1))
    assert info.value.field == "root"  # type: ignore[attr-defined]
    # A key may revoke itself.
    assert Revocation(K1, K1, None, "giving up", 0).target == K1


def test_text_limits() -> None:
    assert _delegation(name="n" * 256).name == "n" * 256
    with pytest.raises(RecordError) as info:
        _delegation(name="n" * 257)
    assert info.value.field == "name"  # type: ignore[attr-defined]
    assert Revocation(K1, K2, None, "r" * 1024, 0).reason == "r" * 1024
    with pytest.raises(RecordError) as info:
        Revocation(K1, K2, None, "r" * 1025, 0)
    assert info.value.field == "reason"  # type: ignore[attr-defined]


def test_not_a_map() -> None:
    for kind in VALID:
        for bad in ([1], "root", None, 1, b"x"):
            with pytest.raises(RecordError) as info:
                kind.from_payload(encode(bad))
            assert info.value.field == kind.kind  # type: ignore[attr-defined]


def test_payload_encoding_errors_pass_through() -> None:
    payload = RootRecord("acme", RFC8032_1, False, 5).to_payload()
    with pytest.raises(EncodingError):
        RootRecord.from_payload(payload + b"\x00")
    with pytest.raises(EncodingError):
        RootRecord.from_payload(payload[:-1])
    with pytest.raises(TooLargeError):
        RootRecord.from_payload(bytes(2 << 20))


@settings(max_examples=300)
@given(st.dictionaries(
    st.sampled_from(sorted({n for v in VALID.values() for n in v} | {"x"})),
    st.none() | st.booleans() | st.integers(-2, 2) | st.text(max_size=5) | st.binary(max_size=5)
    | st.lists(st.text(max_size=3), max_size=3),
    max_size=12,
), st.sampled_from(list(VALID)))
def test_parsing_raises_only_record_errors(value: dict[str, Any], kind: type[KeyRecord]) -> None:
    with contextlib.suppress(RecordError):
        kind.from_value(value)


# --- construction in code follows the same rules ------------------------------------------------


def test_constructed_records_are_validated_like_parsed_ones() -> None:
    with pytest.raises(RecordError) as info:
        _delegation(artefacts=("b", "a"))
    assert info.value.field == "artefacts"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        _delegation(purposes=("ship",))
    assert info.value.field == "purposes[0]"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        RootRecord("Acme", RFC8032_1, False, 1)
    assert info.value.field == "org"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        RootRecord("acme", RFC8032_1.der, False, 1)  # type: ignore[arg-type]
    assert info.value.field == "key"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        RootRecord("acme", RFC8032_1, 1, 1)  # type: ignore[arg-type]
    assert info.value.field == "hsm"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        Revocation(KeyId("k1"), K2, None, "r", 0)
    assert info.value.field == "issuer"  # type: ignore[attr-defined]
    with pytest.raises(RecordError) as info:
        Rotation(K1, RFC8032_2, -1)
    assert info.value.field == "created"  # type: ignore[attr-defined]


def test_lists_are_stored_as_tuples() -> None:
    d = _delegation(artefacts=["a", "b"], purposes=["release"])
    assert d.artefacts == ("a", "b") and d.purposes == ("release",)
    assert hash(d) == hash(_delegation(artefacts=("a", "b"), purposes=("release",)))


def test_records_are_frozen() -> None:
    root = RootRecord("acme", RFC8032_1, False, 1)
    with pytest.raises(AttributeError):
        root.org = "evil"  # type: ignore[misc]


# --- parse_key_record and required_signers -----------------------------------------------------


def test_parse_key_record_unknown_type() -> None:
    payload = RootRecord("acme", RFC8032_1, False, 1).to_payload()
    for ptype in ("application/vnd.in-toto+json", "application/vnd.turtles.root.v2+msgpack",
                  "application/vnd.turtles.root.v1+json", ""):
        with pytest.raises(RecordError) as info:
            parse_key_record(ptype, payload)
        assert info.value.field == "payloadType"  # type: ignore[attr-defined]


@given(records)
def test_parse_key_record_dispatches_on_type(record: KeyRecord) -> None:
    parsed = parse_key_record(record.payload_type(), record.to_payload())
    assert type(parsed) is type(record)


def test_required_signers() -> None:
    assert required_signers(RootRecord("acme", RFC8032_1, False, 1)) == (K1,)
    assert required_signers(_delegation()) == (K1,)
    assert required_signers(Endorsement(K2, "acme", K1, ("release",), 0, None, 0)) == (K2,)
    assert required_signers(Revocation(K2, K1, 5, "old", 0)) == (K2,)
    assert required_signers(Rotation(K1, RFC8032_2, 0)) == (K1, K2)  # both old and new


def test_delegation_org_may_be_nil() -> None:
    value = dict(VALID[Delegation], org=None)
    record = _parse(Delegation, value)
    assert record.org is None
    assert Delegation.from_payload(record.to_payload()) == record
