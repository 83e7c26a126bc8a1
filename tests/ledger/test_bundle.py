"""Offline bundles (ledger.bundle): format, contents, and that no altered byte is accepted."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable

import pytest

from ledger.bundle import (
    BUNDLE_FORMAT,
    Bundle,
    BundledRecord,
    build_bundle,
    check_bundle,
    log_key_id,
)
from ledger.encoding import decode, encode
from ledger.entry import Entry, parse_record
from ledger.errors import EncodingError, NoteError, NotFoundError, ProofError, TooLargeError
from ledger.records import Delegation, Revocation, RootRecord
from ledger.trust import Policy
from ledger.verify import verify_bundle
from tests.ledger.orgs import Clock, Org, WitnessKey, mirror, sha


@dataclasses.dataclass
class Case:
    """A bundle for one artefact with a witness cosignature, and how to verify it."""

    org: Org
    digest: str
    bundle: Bundle
    witness: WitnessKey
    policy: Policy
    at: int

    def verdict(self, bundle: Bundle | bytes) -> tuple[bool, str]:
        v = verify_bundle(bundle, self.digest, policy=self.policy, at=self.at, witnesses=[self.witness.vkey])
        return v.trusted, " | ".join(v.reasons)




@pytest.fixture
def case(acme: Org, clock: Clock) -> Case:
    keys = acme.chain(2)
    digest = acme.attest(keys[-1], "app@1.0", b"app")
    w = WitnessKey()
    at = clock.later(1000)
    note = w.cosign(acme.log.checkpoint(), at // 1000 - 1)
    bundle = build_bundle(acme.holdings, digest, notes={acme.origin: note}, witnesses=[w.vkey])
    c = Case(acme, digest, bundle, w, acme.policy(witness_quorum=1), at)
    assert c.verdict(bundle) == (True, "")
    return c


# --- format ------------------------------------------------------------------------------------


def test_the_file_is_one_canonical_json_object_that_round_trips(case: Case) -> None:
    data = case.bundle.to_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and data.isascii()
    assert Bundle.from_bytes(data) == case.bundle
    obj = json.loads(data)
    assert obj["format"] == BUNDLE_FORMAT and obj["artefact"] == "sha256:" + case.digest
    assert json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n" == data
    assert sorted(obj) == ["artefact", "format", "logs", "records", "witnesses"]
    assert obj["logs"][0]["vkey"] == case.org.vkey and obj["witnesses"] == [case.witness.vkey]


def test_the_bundle_holds_every_record_of_the_trust_paths_and_the_log_delegation(case: Case) -> None:
    org = case.org
    kinds = [type(parse_record(Entry.from_bytes(r.entry).envelope)).__name__ for r in case.bundle.records]
    assert kinds.count("RootRecord") == 1 and kinds.count("Attestation") == 1
    assert kinds.count("Delegation") == 3  # log key, two chain links
    subjects = {
        rec.subject.key_id
        for r in case.bundle.records
        if isinstance(rec := parse_record(Entry.from_bytes(r.entry).envelope), Delegation)
    }
    assert log_key_id(org.vkey) in subjects
    for r in case.bundle.records:
        assert r.entry == org.log.store.entry(r.index)  # exact leaf bytes
    checked = check_bundle(case.bundle, now=case.at)
    assert {c.tree_size for c in checked.records} == {org.log.size}
    assert [c.name for c in checked.logs[0].cosignatures] == [case.witness.name]


def test_revocations_of_path_keys_travel_in_the_bundle(acme: Org, clock: Clock) -> None:
    keys = acme.chain(2)
    digest = acme.attest(keys[-1], "app@1.0")
    acme.revoke(acme.root, keys[1])
    bundle = build_bundle(acme.holdings, digest)
    records = [parse_record(Entry.from_bytes(r.entry).envelope) for r in bundle.records]
    assert any(isinstance(r, Revocation) and r.target == keys[1].key_id for r in records)
    v = verify_bundle(bundle, digest, policy=acme.policy(), at=clock.later())
    assert not v.trusted and any("revoked" in r for r in v.reasons)


def test_a_bundle_across_an_own_log_and_a_mirror(acme: Org, beta: Org, clock: Clock) -> None:
    maint = acme.chain(1)[-1]
    acme.delegate(acme.root, beta.log_key.public_key, globs=(beta.origin,), purposes=("log",), org="beta")
    beta.delegate(beta.root, maint.public_key)
    digest = beta.attest(maint, "lib@1")
    mirror(beta.holdings, acme)
    bundle = build_bundle(beta.holdings, digest)
    assert [g.origin for g in bundle.logs] == [acme.origin, beta.origin]
    assert bundle.logs[0].checkpoint == acme.log.checkpoint()
    assert verify_bundle(bundle.to_bytes(), digest, policy=acme.policy(), at=clock.later()).trusted


def test_no_attestation_and_too_many_records_are_clear_errors(case: Case) -> None:
    with pytest.raises(NotFoundError, match="no attestation"):
        build_bundle(case.org.holdings, sha(b"unknown"))
    with pytest.raises(TooLargeError):
        build_bundle(case.org.holdings, case.digest, max_records=3)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("pretty-printed", lambda d: json.dumps(json.loads(d), indent=1).encode() + b"\n"),
        ("no final newline", lambda d: d[:-1]),
        ("duplicate key", lambda d: d.replace(b'{"artefact":', b'{"artefact":"x","artefact":', 1)),
        ("float", lambda d: d.replace(b'"index":0', b'"index":0.0', 1)),
        ("unknown field", lambda d: d.replace(b'{"artefact":', b'{"extra":1,"artefact":', 1)),
        ("non-canonical base64", lambda d: _noncanonical_b64(d)),
        ("reordered records", lambda d: _reorder_records(d)),
        ("not json", lambda d: b"\x00" + d),
    ],
)
def test_non_canonical_or_malformed_files_are_refused(case: Case, name: str, mutate: Callable[[bytes], bytes]) -> None:
    bad = mutate(case.bundle.to_bytes())
    with pytest.raises((EncodingError, TooLargeError, ProofError, NoteError)):
        check_bundle(Bundle.from_bytes(bad), now=case.at)
    trusted, why = case.verdict(bad)
    assert not trusted and why.startswith("bundle rejected"), name


def _noncanonical_b64(data: bytes) -> bytes:
    obj = json.loads(data)
    proof = obj["records"][0]["proof"][0]
    # a 32-byte hash ends in one padding char: the last data char carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = proof[-2]
    twin = alphabet[alphabet.index(last) ^ 1]
    assert base64.b64decode(proof[:-2] + twin + "=") == base64.b64decode(proof)
    obj["records"][0]["proof"][0] = proof[:-2] + twin + "="
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _reorder_records(data: bytes) -> bytes:
    obj = json.loads(data)
    obj["records"].reverse()
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


# --- tampering: every byte, and every region by meaning -------------------------------------------


def test_flipping_any_byte_of_the_file_is_never_trusted(case: Case) -> None:
    data = case.bundle.to_bytes()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        trusted, why = case.verdict(bytes(bad))
        assert not trusted and why, f"byte {i} ({data[max(0, i - 20):i + 20]!r}) flipped and still trusted"


def _flip(data: bytes, at: int = -1) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _with_record(b: Bundle, i: int, **changes: object) -> Bundle:
    records = list(b.records)
    records[i] = dataclasses.replace(records[i], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(b, records=tuple(records))


def _with_log(b: Bundle, **changes: object) -> Bundle:
    return dataclasses.replace(b, logs=(dataclasses.replace(b.logs[0], **changes), *b.logs[1:]))  # type: ignore[arg-type]


def _note_lines(b: Bundle) -> list[str]:
    return b.logs[0].checkpoint.split("\n")


def _edit_note_line(b: Bundle, index: int, edit: Callable[[str], str]) -> Bundle:
    lines = _note_lines(b)
    lines[index] = edit(lines[index])
    return _with_log(b, checkpoint="\n".join(lines))


def _sig_edit(line: str) -> str:
    head, _, sig = line.rpartition(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 0x01
    return head + " " + base64.b64encode(bytes(raw)).decode()


def _other_vkey(vkey: str) -> str:
    w = WitnessKey(vkey.split("+", 1)[0])
    return w.vkey


REGIONS: dict[str, Callable[[Bundle], Bundle]] = {
    "entry bytes (first)": lambda b: _with_record(b, 0, entry=_flip(b.records[0].entry, 20)),
    "entry bytes (last byte)": lambda b: _with_record(b, -1, entry=_flip(b.records[-1].entry)),
    "proof hash": lambda b: _with_record(b, 1, proof=(_flip(b.records[1].proof[0]), *b.records[1].proof[1:])),
    "proof truncated": lambda b: _with_record(b, 1, proof=b.records[1].proof[:-1]),
    "proof extended": lambda b: _with_record(b, 1, proof=(*b.records[1].proof, bytes(32))),
    "record index": lambda b: _with_record(b, 1, index=b.records[1].index + 1),
    "record moved": lambda b: _with_record(b, 1, entry=b.records[2].entry),
    "record dropped from its log": lambda b: dataclasses.replace(b, records=b.records[:1] + b.records[2:]),
    "note origin line": lambda b: _edit_note_line(b, 0, lambda s: s + "x"),
    "note size line": lambda b: _edit_note_line(b, 1, lambda s: str(int(s) - 1)),
    "note root line": lambda b: _edit_note_line(b, 2, lambda s: base64.b64encode(_flip(base64.b64decode(s))).decode()),
    "note log signature": lambda b: _edit_note_line(b, 4, _sig_edit),
    "note cosignature": lambda b: _edit_note_line(b, 5, _sig_edit),
    "note cosignature removed": lambda b: _drop_cosig(b),
    "log vkey key material": lambda b: _with_log(b, vkey=_swap_vkey_key(b.logs[0].vkey)),
    "log vkey name": lambda b: _with_log(b, vkey="x" + b.logs[0].vkey),
    "log origin": lambda b: _with_log(b, origin=b.logs[0].origin + "x"),
    "witness vkey": lambda b: dataclasses.replace(b, witnesses=(_other_vkey(b.witnesses[0]),)),
    "artefact": lambda b: dataclasses.replace(b, artefact=sha(b"other")),
}


def _drop_cosig(b: Bundle) -> Bundle:
    lines = _note_lines(b)
    return _with_log(b, checkpoint="\n".join(lines[:5] + lines[6:]))


def _swap_vkey_key(vkey: str) -> str:
    name, kid, material = vkey.split("+", 2)  # names and key hashes never hold "+"
    raw = bytearray(base64.b64decode(material))
    raw[-1] ^= 0x01
    return f"{name}+{kid}+{base64.b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_altering_any_region_by_meaning_is_not_trusted(case: Case, region: str) -> None:
    """The altered bundle is written canonically, so only signatures and proofs can catch it."""
    altered = REGIONS[region](case.bundle)
    assert altered != case.bundle
    data = altered.to_bytes()
    trusted, why = case.verdict(data)
    assert not trusted and why, region


@pytest.mark.parametrize("field", ["ts", "prev", "seq", "payloadType", "keyid", "payload"])
def test_every_field_a_verifier_relies_on_is_inside_the_leaf(case: Case, field: str) -> None:
    """RELIABILITY L5: re-encode an entry canonically with one field changed: not included."""
    rec = case.bundle.records[-1]
    obj = decode(rec.entry, max_size=1 << 22)
    env = obj["env"]
    if field in ("ts", "seq"):
        obj[field] += 1
    elif field == "prev":
        obj["prev"] = _flip(obj["prev"])
    elif field == "payloadType":
        env["payloadType"] = env["payloadType"] + "x"
    elif field == "keyid":
        env["signatures"][0]["keyid"] = "sha256:" + "0" * 64
    else:
        env["payload"] = env["payload"].replace(b"app@1.0", b"app@6.6")
    altered = _with_record(case.bundle, -1, entry=encode(obj))
    trusted, why = case.verdict(altered.to_bytes())
    assert not trusted and ("not included" in why or "index" in why), why


def test_a_cosignature_line_no_bundled_key_verifies_is_refused(case: Case) -> None:
    stranger = WitnessKey("stranger.example")
    note = stranger.cosign(case.bundle.logs[0].checkpoint, case.at // 1000 - 1)
    with pytest.raises(NoteError, match="no key in the bundle"):
        check_bundle(_with_log(case.bundle, checkpoint=note), now=case.at)


def test_a_listed_witness_must_cosign_something(acme: Org, clock: Clock) -> None:
    digest = acme.attest(acme.chain(1)[-1], "app@1.0")
    bundle = build_bundle(acme.holdings, digest)
    idle = dataclasses.replace(bundle, witnesses=(WitnessKey().vkey,))
    with pytest.raises(EncodingError, match="cosigns none"):
        check_bundle(idle, now=clock.later())


def test_a_record_of_an_unknown_log_is_refused(case: Case) -> None:
    stray = BundledRecord("elsewhere/log", 0, case.bundle.records[0].entry, ())
    bad = dataclasses.replace(case.bundle, records=(*case.bundle.records, stray))
    with pytest.raises(EncodingError):
        check_bundle(bad, now=case.at)


def test_records_carry_the_signers_that_bundled_keys_verify(acme: Org) -> None:
    org = acme
    digest = org.attest(org.chain(1)[-1], "app@1.0")
    checked = check_bundle(build_bundle(org.holdings, digest), now=org.clock.later())
    by_kind = {type(c.logged.record).__name__: c.logged.signers for c in checked.records}
    assert by_kind["RootRecord"] == (org.root.key_id,)
    assert isinstance(checked.records[0].logged.record, RootRecord)
    assert all(c.problem is None for c in checked.records)
