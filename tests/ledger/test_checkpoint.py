"""Tests for ledger.checkpoint: the published sumdb note and C2SP examples, the strict
checkpoint parser, signed-note verification rules, and tlog-cosignature v1."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import checkpoint as cp
from ledger.checkpoint import Checkpoint, NoteSigner, NoteVerifier
from ledger.errors import KeyFormatError, NoteError, SignatureError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "note"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


SUMDB = _load("sumdb-note.json")
C2SP = _load("c2sp-examples.json")
WITNESSES = _load("witness-vkeys.json")
BODIES = _load("checkpoint-bodies.json")["cases"]


@dataclass(frozen=True)
class SoftSigner:
    """A software Ed25519 signer with the shape an HSM signer has."""

    key: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def _seeded(label: str) -> SoftSigner:
    return SoftSigner(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest()))


LOG = NoteSigner("example.com/log", _seeded("log"))
OTHER = NoteSigner("other.example/log", _seeded("other"))
WITNESS = _seeded("witness")
WITNESS_NAME = "witness.example/w1"
WITNESS_V = cp.parse_verifier_key(cp.cosigner_vkey(WITNESS_NAME, WITNESS.public_raw))
ROOT = hashlib.sha256(b"root").digest()
BODY = Checkpoint("example.com/log", 42, ROOT).to_text()
NOW = 1_700_000_000


def _peter() -> NoteSigner:
    seed = base64.b64decode(SUMDB["peter"]["skey"].split("+", 4)[4])[1:]  # alg byte, seed
    return NoteSigner("PeterNeumann", SoftSigner(Ed25519PrivateKey.from_private_bytes(seed)))


# --- published vectors -------------------------------------------------------------------


def test_sumdb_example_signs_to_the_published_note() -> None:
    peter = _peter()
    assert peter.vkey == SUMDB["peter"]["vkey"]
    assert cp.sign_note(SUMDB["text"], [peter]) == SUMDB["note"]


def test_sumdb_example_opens() -> None:
    assert cp.open_note(SUMDB["note"], SUMDB["peter"]["vkey"]) == SUMDB["text"]
    assert cp.open_note(SUMDB["note"].encode(), SUMDB["peter"]["vkey"]) == SUMDB["text"]
    with pytest.raises(NoteError):
        cp.open_note(SUMDB["note"], SUMDB["enoch"]["vkey"])


def test_sumdb_doubly_signed_note() -> None:
    peter = cp.parse_verifier_key(SUMDB["peter"]["vkey"])
    enoch = cp.parse_verifier_key(SUMDB["enoch"]["vkey"])
    one = cp.verify_note(SUMDB["doublySigned"], [peter])
    assert one.text == SUMDB["text"]
    assert one.verified_by == ("PeterNeumann",)
    assert [(s.name, s.key_id, s.verified) for s in one.signatures] == [
        ("PeterNeumann", 0xC74F20A3, True),
        ("EnochRoot", 0xAF0CFE78, False),
    ]
    both = cp.verify_note(SUMDB["doublySigned"], [enoch, peter])
    assert both.verified_by == ("PeterNeumann", "EnochRoot")
    assert [s.line + "\n" for s in both.signatures] == SUMDB["doublySigned"].split("\n\n")[1:][
        0
    ].splitlines(keepends=True)
    with pytest.raises(NoteError):
        cp.verify_note(SUMDB["doublySigned"], [])


@pytest.mark.parametrize("case", SUMDB["malformed"], ids=lambda c: c["name"])
def test_sumdb_malformed_notes(case: dict[str, str]) -> None:
    with pytest.raises(NoteError):
        cp.open_note(case["note"], SUMDB["peter"]["vkey"])


@pytest.mark.parametrize("case", SUMDB["badVkeys"], ids=lambda c: c["name"])
def test_sumdb_bad_vkeys(case: dict[str, str]) -> None:
    with pytest.raises(KeyFormatError):
        cp.parse_verifier_key(case["vkey"])
    with pytest.raises(NoteError):
        cp.open_note(SUMDB["note"], case["vkey"])


def test_every_mangled_vkey_is_rejected() -> None:
    vkey = SUMDB["peter"]["vkey"]
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(KeyFormatError):
                    cp.parse_verifier_key(vkey[i:j])
    for i in range(len(vkey)):
        with pytest.raises(KeyFormatError):
            cp.parse_verifier_key(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])
    with pytest.raises(KeyFormatError):
        cp.parse_verifier_key(vkey.replace("c74f20a3", "C74F20A3"))


def test_c2sp_signed_note_example() -> None:
    ex = C2SP["signedNote"]
    assert cp.open_note(ex["note"], ex["vkey"]) == ex["text"]


def test_c2sp_checkpoint_example() -> None:
    ex = C2SP["checkpoint"]
    text, lines = cp.split_note(ex["note"])
    parsed = cp.parse_checkpoint(text)
    assert (parsed.origin, parsed.size) == (ex["origin"], ex["size"])
    assert parsed.root == base64.b64decode(ex["rootBase64"])
    assert parsed.to_text() == text
    assert len(lines) == 2
    raw = base64.b64decode(lines[1].split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[4:12], "big") == ex["cosignatureTimestamp"]
    assert (
        cp.cosignature_message(text, ex["cosignatureTimestamp"]) == ex["cosignedMessage"].encode()
    )
    # Its keys are unpublished: with no known key, the note must not open.
    with pytest.raises(NoteError):
        cp.verify_note(ex["note"], [LOG.verifier])


@pytest.mark.parametrize("case", WITNESSES["vkeys"], ids=lambda c: c["vkey"].split("+")[0])
def test_published_witness_vkeys(case: dict[str, Any]) -> None:
    v = cp.parse_verifier_key(case["vkey"])
    assert v.alg == case["alg"]
    assert v.vkey == case["vkey"]
    make = cp.cosigner_vkey if v.alg == cp.ALG_COSIGNATURE_V1 else cp.verifier_key
    assert make(v.name, v.public_raw) == case["vkey"]


def test_key_id_commits_to_the_signature_type() -> None:
    cosig, plain = (cp.parse_verifier_key(c["vkey"]) for c in WITNESSES["vkeys"][:2])
    assert cosig.public_raw == plain.public_raw and cosig.name == plain.name
    assert (cosig.key_id, plain.key_id) == (0xD8042A87, 0x4B7FCA75)


# --- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", BODIES, ids=lambda c: c["name"])
def test_checkpoint_bodies(case: dict[str, Any]) -> None:
    if case["wantErr"]:
        with pytest.raises(NoteError):
            cp.parse_checkpoint(case["text"])
    else:
        assert cp.format_checkpoint(cp.parse_checkpoint(case["text"])) == case["text"]


_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(
    _LINE,
    st.integers(0, cp.MAX_TIMESTAMP),
    st.binary(min_size=32, max_size=32),
    st.lists(_LINE, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    c = Checkpoint(origin, size, root, tuple(ext))
    assert Checkpoint.parse(c.to_text()) == c


def test_checkpoint_fields_are_validated() -> None:
    for args in [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**63, ROOT, ()),
        ("o", 1, ROOT[:31], ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("x\ny",)),
    ]:
        with pytest.raises(NoteError):
            Checkpoint(*args)


def test_oversized_checkpoint_is_rejected() -> None:
    huge = BODY + "x" * cp.MAX_NOTE_SIZE + "\n"
    with pytest.raises(NoteError):
        cp.parse_checkpoint(huge)


# --- signed notes -----------------------------------------------------------------------------


@given(st.lists(_LINE, min_size=1, max_size=5), st.booleans())
@settings(max_examples=50, deadline=None)
def test_sign_and_open_round_trip(lines: list[str], blank: bool) -> None:
    text = "\n".join(lines) + "\n" + ("\n" if blank else "")
    note = cp.sign_note(text, [LOG, OTHER])
    assert cp.open_note(note, LOG.vkey) == text
    assert cp.verify_note(note, [OTHER.verifier]).text == text
    assert cp.split_note(note)[0] == text


def test_unknown_keys_are_ignored_but_known_bad_signatures_reject() -> None:
    note = cp.sign_note(BODY, [LOG, OTHER])
    assert cp.verify_note(note, [LOG.verifier]).verified_by == ("example.com/log",)
    text, lines = cp.split_note(note)
    sig = base64.b64decode(lines[0].split(" ")[2])
    for pos in (4, 20, len(sig) - 1):
        bad = bytearray(sig)
        bad[pos] ^= 1
        forged = (
            text
            + "\n"
            + lines[0].split(" ")[0]
            + f" example.com/log {base64.b64encode(bad).decode()}\n"
            + lines[1]
            + "\n"
        )
        # An unknown key may be added or broken freely; a broken known key rejects the note.
        assert cp.verify_note(forged, [OTHER.verifier]).verified_by == ("other.example/log",)
        with pytest.raises(NoteError):
            cp.verify_note(forged, [LOG.verifier, OTHER.verifier])


def test_lines_sharing_only_a_name_or_only_an_id_are_unknown() -> None:
    note = cp.sign_note(BODY, [LOG])
    text, (line,) = cp.split_note(note)
    renamed = line.replace("example.com/log", "example.com/log2")
    assert cp.verify_note(f"{text}\n{line}\n{renamed}\n", [LOG.verifier]).verified_by == (
        "example.com/log",
    )
    other_id = NoteVerifier("example.com/log", OTHER.verifier.public_raw)
    with pytest.raises(NoteError):
        cp.verify_note(note, [other_id])  # same name, different key ID: unknown, so no valid sig


def test_a_known_key_signing_twice_rejects_the_note() -> None:
    note = cp.sign_note(BODY, [LOG])
    text, (line,) = cp.split_note(note)
    with pytest.raises(NoteError):
        cp.verify_note(f"{text}\n{line}\n{line}\n", [LOG.verifier])
    # Repeated lines by unknown keys are listed once.
    other = cp.split_note(cp.sign_note(BODY, [OTHER]))[1][0]
    got = cp.verify_note(f"{text}\n{line}\n{other}\n{other}\n", [LOG.verifier])
    assert len(got.signatures) == 2


def test_ambiguous_known_keys_are_refused() -> None:
    # Two different public keys whose key IDs collide under one name (found by search).
    a = NoteVerifier("collide.example", hashlib.sha256(b"turtles collision 24070").digest())
    b = NoteVerifier("collide.example", hashlib.sha256(b"turtles collision 47888").digest())
    assert a.key_id == b.key_id and a.public_raw != b.public_raw
    line = cp.NoteSignature(a.name, a.key_id, bytes(64)).line
    with pytest.raises(NoteError):
        cp.verify_note(f"{BODY}\n{line}\n", [a, b])
    with pytest.raises(NoteError):  # one colliding key: just a failed signature
        cp.verify_note(f"{BODY}\n{line}\n", [b])
    cp.verify_note(cp.sign_note(BODY, [LOG]), [a, b, LOG.verifier, LOG.verifier])


def test_signature_count_limit() -> None:
    note = cp.sign_note(BODY, [LOG])
    text, (line,) = cp.split_note(note)
    fillers = [cp.NoteSignature(f"x{i}", i, b"s").line for i in range(cp.MAX_SIGNATURES)]
    ok = text + "\n" + "".join(f + "\n" for f in [line, *fillers[:-1]])
    assert cp.verify_note(ok, [LOG.verifier]).verified_by == ("example.com/log",)
    with pytest.raises(NoteError):
        cp.verify_note(text + "\n" + "".join(f + "\n" for f in [line, *fillers]), [LOG.verifier])


def test_note_size_limit() -> None:
    big = "x" * (cp.MAX_NOTE_SIZE // 2) + "\n"
    assert cp.open_note(cp.sign_note(big, [LOG]), LOG.vkey) == big
    huge = "x" * cp.MAX_NOTE_SIZE + "\n"
    with pytest.raises(NoteError):
        cp.sign_note(huge, [LOG])
    line = cp.split_note(cp.sign_note(BODY, [LOG]))[1][0]
    for note in (huge + "\n" + line + "\n", (huge + "\n" + line + "\n").encode()):
        with pytest.raises(NoteError):
            cp.verify_note(note, [LOG.verifier])
    multibyte = "é" * (cp.MAX_NOTE_SIZE // 2) + "\n"  # under the limit in characters only
    with pytest.raises(NoteError):
        cp.sign_note(multibyte, [LOG])


@pytest.mark.parametrize(
    "note",
    [
        b"\xff" + cp.sign_note(BODY, [LOG]).encode(),
        cp.sign_note(BODY, [LOG]).encode()[:-2] + b"\xc3\n",
    ],
)
def test_invalid_utf8_is_rejected(note: bytes) -> None:
    with pytest.raises(NoteError):
        cp.verify_note(note, [LOG.verifier])


@pytest.mark.parametrize("bad", ["\r", "\t", "\x00", "\x1b"])
def test_control_characters_are_rejected(bad: str) -> None:
    note = cp.sign_note(BODY, [LOG])
    with pytest.raises(NoteError):
        cp.verify_note(bad + note, [LOG.verifier])
    with pytest.raises(NoteError):
        cp.sign_note(BODY + bad + "\n", [LOG])


def test_malformed_signature_lines_are_rejected() -> None:
    text, (line,) = cp.split_note(cp.sign_note(BODY, [LOG]))
    b64 = line.split(" ")[2]
    for bad in [
        line.replace("\u2014", "-"),
        line.replace("\u2014 ", "\u2014"),
        f"\u2014 a+b {b64}",
        f"\u2014  {b64}",
        f"\u2014 example.com/log {b64.rstrip('=')}",
        f"\u2014 example.com/log {b64} extra",
        "\u2014 example.com/log AAAAAA==",  # 4 bytes: a key ID and no signature
        "\u2014 example.com/log ",
    ]:
        with pytest.raises(NoteError):
            cp.verify_note(f"{text}\n{bad}\n", [LOG.verifier])


def test_signing_checks_its_inputs_and_its_signer() -> None:
    with pytest.raises(NoteError):
        cp.sign_note("no newline", [LOG])
    with pytest.raises(NoteError):
        cp.sign_note(BODY, [])
    with pytest.raises(NoteError):
        cp.sign_note(BODY, [LOG, LOG])
    with pytest.raises(KeyFormatError):
        NoteSigner("bad name", _seeded("x"))
    with pytest.raises(KeyFormatError):
        NoteSigner("a+b", _seeded("x"))

    @dataclass(frozen=True)
    class WrongKey:
        """An HSM signing with a different key than the one it reports."""

        public_raw: bytes

        def sign(self, data: bytes) -> bytes:
            return _seeded("imposter").sign(data)

    with pytest.raises(SignatureError):
        cp.sign_note(BODY, [NoteSigner("example.com/log", WrongKey(LOG.verifier.public_raw))])
    with pytest.raises(SignatureError):
        cp.cosign(BODY, WITNESS_NAME, WrongKey(WITNESS.public_raw), NOW)
    with pytest.raises(KeyFormatError):
        NoteSigner("example.com/log", WrongKey(b"short"))


# --- cosignatures --------------------------------------------------------------------------


def test_cosignature_round_trip_and_layout() -> None:
    line = cp.cosign(BODY, WITNESS_NAME, WITNESS, NOW)
    assert cp.verify_cosignature(BODY, line, WITNESS_V, now=NOW) == NOW
    raw = base64.b64decode(line.split(" ")[2])
    assert int.from_bytes(raw[:4], "big") == WITNESS_V.key_id
    assert int.from_bytes(raw[4:12], "big") == NOW
    message = b"cosignature/v1\ntime %d\n" % NOW + BODY.encode()
    WITNESS.key.public_key().verify(raw[12:], message)
    assert cp.cosignature_message(BODY, NOW) == message


def test_cosignature_freshness() -> None:
    line = cp.cosign(BODY, WITNESS_NAME, WITNESS, NOW + 61)
    assert cp.verify_cosignature(BODY, line, WITNESS_V) == NOW + 61
    assert cp.verify_cosignature(BODY, line, WITNESS_V, now=NOW + 1) == NOW + 61
    with pytest.raises(NoteError):
        cp.verify_cosignature(BODY, line, WITNESS_V, now=NOW)
    with pytest.raises(NoteError):
        cp.verify_cosignature(BODY, line, WITNESS_V, now=NOW + 51, max_skew=0)
    note = cp.add_signatures(cp.sign_note(BODY, [LOG]), [line])
    with pytest.raises(NoteError):
        cp.verify_note(note, [LOG.verifier, WITNESS_V], now=NOW)
    got = cp.verify_note(note, [LOG.verifier, WITNESS_V], now=NOW + 61)
    assert [s.timestamp for s in got.signatures] == [None, NOW + 61]


def test_cosignature_rejections() -> None:
    line = cp.cosign(BODY, WITNESS_NAME, WITNESS, NOW)
    other_body = Checkpoint("example.com/log", 43, ROOT).to_text()
    plain = NoteVerifier(WITNESS_NAME, WITNESS.public_raw)
    stranger = cp.parse_verifier_key(cp.cosigner_vkey("w2.example", _seeded("w2").public_raw))
    for body, ln, v in [
        (other_body, line, WITNESS_V),  # a different checkpoint
        (BODY, line, plain),  # a type 0x01 key is not a cosigner
        (BODY, line, stranger),  # a line by someone else
        ("not a checkpoint\n", line, WITNESS_V),
    ]:
        with pytest.raises(NoteError):
            cp.verify_cosignature(body, ln, v, now=NOW)
    for bad_time in (-1, 2**63):
        with pytest.raises(NoteError):
            cp.cosign(BODY, WITNESS_NAME, WITNESS, bad_time)
    with pytest.raises(NoteError):
        cp.cosign("free text\n", WITNESS_NAME, WITNESS, NOW)
    # A cosigner key does not verify a plain signature line with the same name and key.
    plain_signed = cp.sign_note(BODY, [NoteSigner(WITNESS_NAME, WITNESS)])
    with pytest.raises(NoteError):
        cp.verify_note(plain_signed, [WITNESS_V])
    # A timestamp of 2**63 or more is refused even when correctly signed.
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[4] |= 0x80
    huge = cp.NoteSignature(WITNESS_NAME, WITNESS_V.key_id, bytes(raw[4:])).line
    with pytest.raises(NoteError):
        cp.verify_cosignature(BODY, huge, WITNESS_V)


def test_add_signatures_merges_witness_lines() -> None:
    note = cp.sign_note(BODY, [LOG])
    w2 = _seeded("w2")
    w2_v = cp.parse_verifier_key(cp.cosigner_vkey("w2.example", w2.public_raw))
    first = cp.cosign(BODY, WITNESS_NAME, WITNESS, NOW)
    merged = cp.add_signatures(note, [first, cp.cosign(BODY, "w2.example", w2, NOW)])
    got = cp.verify_note(merged, [LOG.verifier, WITNESS_V, w2_v], now=NOW)
    assert got.verified_by == ("example.com/log", WITNESS_NAME, "w2.example")
    # A fresh cosignature by the same witness replaces its old line.
    again = cp.add_signatures(merged, [cp.cosign(BODY, WITNESS_NAME, WITNESS, NOW + 5)])
    assert cp.split_note(again)[1][:2] == cp.split_note(merged)[1][::2]
    assert cp.verify_note(again, [WITNESS_V], now=NOW + 5).signatures[-1].timestamp == NOW + 5
    assert cp.split_note(cp.add_signatures(note, []))[1] == cp.split_note(note)[1]
    with pytest.raises(NoteError):
        cp.add_signatures(note, [first, first])
    with pytest.raises(NoteError):
        cp.add_signatures(note, ["\u2014 bad"])
    with pytest.raises(NoteError):
        cp.add_signatures(
            note, [cp.NoteSignature(f"x{i}", i, b"s").line for i in range(cp.MAX_SIGNATURES)]
        )


def test_split_note_structure() -> None:
    note = cp.sign_note("a\n\nb\n", [LOG, OTHER])
    text, lines = cp.split_note(note)
    assert text == "a\n\nb\n"
    assert [ln.split(" ")[1] for ln in lines] == ["example.com/log", "other.example/log"]
    for bad in ["", "\n", "text\n", "text\n\n", "text\n\n\n", note[:-1]]:
        with pytest.raises(NoteError):
            cp.split_note(bad)
