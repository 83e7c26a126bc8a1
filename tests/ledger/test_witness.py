"""The witness core: the C2SP tlog-witness matrix (W2), races and restarts (W3), evidence (W1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ledger import merkle
from ledger.checkpoint import (
    Checkpoint,
    add_signatures,
    note_signer,
    parse_verifier_key,
    sign_note,
    verify_cosignature,
)
from ledger.errors import (
    ConsistencyError,
    InputError,
    NoteError,
    NotFoundError,
    TooLargeError,
    TurtlesError,
)
from ledger.keys import SoftwareSigner
from ledger.store import Database
from ledger.witness import (
    MAX_BODY_BYTES,
    AddCheckpoint,
    Evidence,
    EvidenceStore,
    SizeConflictError,
    SplitView,
    Witness,
    WitnessProofError,
    WitnessStore,
    verify_evidence,
)
from tests.integration.malicious_peer import ForgedLog, Org, honest_log

PEER = "peer.example/log"
NAME = "witness.example/w1"
NOW = 1_800_000_000


@dataclass
class Rig:
    """A witness on a real LevelDB, the log it witnesses, and the evidence it reported."""

    path: Path
    db: Database
    key: SoftwareSigner
    log: ForgedLog
    witness: Witness
    seen: list[Evidence] = field(default_factory=list)

    def restart(self) -> None:
        self.db.close()
        self.db = Database(self.path)
        self.witness = make_witness(self.db, self.key, self.log, self.seen)

    def add(self, old: int, size: int | None = None, *, proof: list[bytes] | None = None, note: str | None = None) -> str:
        n = self.log.size if size is None else size
        req = AddCheckpoint(old, tuple(self.log.proof(old, n) if proof is None else proof), note or self.log.note(n))
        return self.witness.add_checkpoint(AddCheckpoint.parse(req.to_bytes()))

    def refused(self, error: type[TurtlesError], status: int, **kw: object) -> TurtlesError:
        before = self.witness.cosigned(PEER)
        with pytest.raises(error) as info:
            self.add(**kw)  # type: ignore[arg-type]
        assert info.value.http_status == status
        assert self.witness.cosigned(PEER) == before
        return info.value


def make_witness(db: Database, key: SoftwareSigner, log: ForgedLog, seen: list[Evidence]) -> Witness:
    return Witness(WitnessStore(db), name=NAME, signer=key, logs={PEER: log.vkey},
                   on_evidence=seen.append, clock=lambda: NOW)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    db = Database(tmp_path / "db")
    key = SoftwareSigner.generate()
    log = honest_log(PEER, [f"pkg-{i}@1" for i in range(10)])
    seen: list[Evidence] = []
    r = Rig(tmp_path / "db", db, key, log, make_witness(db, key, log, seen), seen)
    yield r
    r.db.close()


def cosigner(rig: Rig):  # type: ignore[no-untyped-def]
    return parse_verifier_key(rig.witness.vkey)


# --- the happy path ---------------------------------------------------------------------------------


def test_cosigns_and_advances(rig: Rig) -> None:
    body = rig.add(0, 5)
    assert body.endswith("\n") and body.count("\n") == 1
    text = Checkpoint(PEER, 5, rig.log.root(5)).to_text()
    assert verify_cosignature(text, body.rstrip("\n"), cosigner(rig)) == NOW
    assert rig.witness.size(PEER) == 5
    rig.add(5, 9)
    assert rig.witness.size(PEER) == 9
    rig.add(9, 9)  # the same checkpoint again: cosigned again, nothing changes
    assert rig.witness.size(PEER) == 9
    # the response merges into the log's note and verifies there
    merged = add_signatures(rig.log.note(9), [rig.add(9, 9).rstrip("\n")])
    assert merged.count("\u2014 ") == 2


def test_empty_tree_is_cosigned(rig: Rig) -> None:
    empty = ForgedLog(PEER, rig.log.key)
    rig.log = empty
    rig.add(0, 0)
    assert rig.witness.size(PEER) == 0 and rig.witness.cosigned(PEER) is not None


# --- the W2 matrix -------------------------------------------------------------------------------------


def test_unknown_origin_is_404(rig: Rig) -> None:
    other = honest_log("other.example/log")
    rig.refused(NotFoundError, 404, old=0, proof=[], note=other.note())


def test_no_signature_by_the_log_key_is_403(rig: Rig) -> None:
    stranger = SoftwareSigner.generate()
    rig.refused(NoteError, 403, old=0, note=rig.log.note(3, key=stranger))


def test_bad_signature_by_the_log_key_is_403(rig: Rig) -> None:
    note = rig.log.note(3)
    text, sig = note.rsplit("\n\n", 1)
    flipped = text.replace(text.split("\n")[2], rig.log.note(4).split("\n")[2]) + "\n\n" + sig
    rig.refused(NoteError, 403, old=0, note=flipped)


def test_unknown_key_signatures_are_ignored(rig: Rig) -> None:
    stranger = note_signer("stranger.example", SoftwareSigner.generate())
    other_name = note_signer(PEER + "x", SoftwareSigner.generate())
    text = Checkpoint(PEER, 3, rig.log.root(3)).to_text()
    note = sign_note(text, [stranger, note_signer(PEER, rig.log.key), other_name])
    rig.add(0, 3, note=note)
    assert rig.witness.size(PEER) == 3
    only_unknown = sign_note(Checkpoint(PEER, 4, rig.log.root(4)).to_text(), [stranger])
    rig.refused(NoteError, 403, old=3, size=4, note=only_unknown)


def test_old_above_new_is_400(rig: Rig) -> None:
    rig.add(0, 3)
    rig.refused(InputError, 400, old=5, size=4, proof=[])


def test_old_not_the_stored_size_is_409_with_the_size(rig: Rig) -> None:
    rig.add(0, 4)
    err = rig.refused(SizeConflictError, 409, old=2, size=6)
    assert isinstance(err, SizeConflictError) and err.current_size == 4
    err = rig.refused(SizeConflictError, 409, old=0, size=6, proof=[])
    assert isinstance(err, SizeConflictError) and err.current_size == 4


def test_never_cosigned_origin_has_size_zero(rig: Rig) -> None:
    err = rig.refused(SizeConflictError, 409, old=3, size=6)
    assert isinstance(err, SizeConflictError) and err.current_size == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "empty", "short-hash"])
def test_garbage_proof_is_422(rig: Rig, damage: str) -> None:
    rig.add(0, 3)
    proof = rig.log.proof(3, 7)
    if damage == "flip":
        proof[-1] = bytes(b ^ 0x80 for b in proof[-1])
    elif damage == "truncate":
        proof = proof[:-1]
    elif damage == "extend":
        proof = [*proof, bytes(32)]
    elif damage == "empty":
        proof = []
    else:
        proof[0] = proof[0][:31]
    err = rig.refused(WitnessProofError, 422, old=3, size=7, proof=proof)
    ev = err.evidence["exhibit"]
    assert isinstance(ev, Evidence) and ev.kind == "bad-proof" and not verify_evidence(ev, rig.log.vkey)
    assert rig.seen == [ev]


def test_proof_with_old_zero_must_be_empty_422(rig: Rig) -> None:
    rig.refused(WitnessProofError, 422, old=0, size=5, proof=[bytes(32)])


def test_wrong_empty_tree_root_is_422(rig: Rig) -> None:
    rig.refused(WitnessProofError, 422, old=0, size=0, note=rig.log.note(0, root=bytes(32)))


def test_more_than_63_proof_lines_is_400() -> None:
    body = AddCheckpoint(1, tuple(bytes(32) for _ in range(64)), "x\n").to_bytes()
    with pytest.raises(InputError) as info:
        AddCheckpoint.parse(body)
    assert info.value.http_status == 400
    AddCheckpoint.parse(AddCheckpoint(1, tuple(bytes(32) for _ in range(63)), "x\n").to_bytes())


def test_body_over_the_limit_is_413() -> None:
    body = b"old 0\n\n" + b"x" * MAX_BODY_BYTES
    with pytest.raises(TooLargeError) as info:
        AddCheckpoint.parse(body)
    assert info.value.http_status == 413


@pytest.mark.parametrize("body", [
    b"", b"old\n\n", b"old 01\n\nx\n", b"old -1\n\nx\n", b"new 1\n\nx\n", b"old 1\nnot base64!\n\nx\n",
    b"old 1\nAAAA", b"old 1 \n\nx\n", b"\xff\xfe\n\n",
])
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(InputError) as info:
        AddCheckpoint.parse(body)
    assert info.value.http_status == 400


def test_malformed_note_or_checkpoint_is_400(rig: Rig) -> None:
    rig.refused(InputError, 400, old=0, proof=[], note="not a note\n")
    body = "peer.example/log\nnot-a-size\nAAAA\n"
    note = sign_note(body, [note_signer(PEER, rig.log.key)])
    rig.refused(InputError, 400, old=0, proof=[], note=note)


# --- equivocation and forks (W1) ---------------------------------------------------------------------


def test_same_size_other_root_is_409_with_proven_evidence(rig: Rig) -> None:
    rig.add(0, 6)
    fork = rig.log.fork(5)
    fork.append(Org("acme").attestation("pkg-evil@1"))
    err = rig.refused(ConsistencyError, 409, old=6, size=6, proof=[], note=fork.note())
    ev = err.evidence["exhibit"]
    assert isinstance(ev, Evidence) and ev.kind == "equivocation" and verify_evidence(ev, rig.log.vkey)
    assert ev.older == rig.log.note(6) and ev.newer == fork.note()


def test_inconsistent_larger_tree_is_422_with_proven_evidence(rig: Rig) -> None:
    rig.add(0, 6)
    fork = rig.log.fork(5)
    for i in range(4):
        fork.append(Org("acme").attestation(f"pkg-f{i}@1"))
    err = rig.refused(WitnessProofError, 422, old=6, proof=fork.proof(6), note=fork.note())
    ev = err.evidence["exhibit"]
    assert isinstance(ev, Evidence) and ev.kind == "fork" and verify_evidence(ev, rig.log.vkey)
    # the evidence file stands alone
    again = Evidence.from_json(ev.to_json())
    assert verify_evidence(again, rig.log.vkey)
    assert not verify_evidence(again, ForgedLog(PEER, SoftwareSigner.generate()).vkey)


def test_tampered_evidence_does_not_verify(rig: Rig) -> None:
    rig.add(0, 6)
    fork = rig.log.fork(5)
    fork.append(Org("acme").attestation("pkg-evil@1"))
    with pytest.raises(ConsistencyError) as info:
        rig.add(6, 6, proof=[], note=fork.note())
    ev = info.value.evidence["exhibit"]
    assert verify_evidence(ev, rig.log.vkey)
    assert ev.split is not None
    assert not verify_evidence(replace(ev, newer=rig.log.note(6)), rig.log.vkey)  # same root twice
    assert not verify_evidence(replace(ev, split=None), rig.log.vkey)
    assert not verify_evidence(replace(ev, origin="other"), rig.log.vkey)
    assert not verify_evidence(replace(ev, split=replace(ev.split, newer_root=bytes(32))), rig.log.vkey)
    assert not verify_evidence(replace(ev, split=replace(ev.split, size=7)), rig.log.vkey)
    assert not verify_evidence(replace(ev, older=ev.older.replace(PEER, "x.example")), rig.log.vkey)
    # a split claimed between two honest checkpoints fails its proofs
    honest = replace(ev, newer=rig.log.note(), split=SplitView(6, rig.log.root(6), (), bytes(32), tuple(rig.log.proof(6))))
    assert not verify_evidence(honest, rig.log.vkey)


def test_crosscheck_compares_gossiped_checkpoints(rig: Rig) -> None:
    rig.add(0, 6)
    assert rig.witness.crosscheck(rig.log.note(6)) is None
    assert rig.witness.crosscheck(rig.log.note(8)) is None  # another size: not comparable here
    fork = rig.log.fork(5)
    fork.append(Org("acme").attestation("pkg-evil@1"))
    ev = rig.witness.crosscheck(fork.note())
    assert ev is not None and verify_evidence(ev, rig.log.vkey) and rig.seen == [ev]
    assert rig.witness.crosscheck(fork.note(key=SoftwareSigner.generate())) is None


def test_evidence_store_persists_in_order(rig: Rig) -> None:
    store = EvidenceStore(rig.db)
    a = Evidence(PEER, "bad-proof", "one", newer=rig.log.note(3), proof=(bytes(32),))
    b = Evidence(PEER, "bad-entries", "two", index=4)
    assert store.add(a) == 0 and store.add(b) == 1
    rig.restart()
    assert EvidenceStore(rig.db).all() == [a, b]


# --- races and restarts (W3) -----------------------------------------------------------------------------


def test_concurrent_sizes_never_roll_back(rig: Rig) -> None:
    rig.add(0, 2)
    sizes = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 3
    bodies = {n: AddCheckpoint(2, tuple(rig.log.proof(2, n)), rig.log.note(n)) for n in set(sizes)}
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(len(sizes))

    def submit(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            rig.witness.add_checkpoint(bodies[n])
            results.append((n, "ok"))
        except SizeConflictError:
            results.append((n, "409"))

    threads = [threading.Thread(target=submit, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    ok = [n for n, r in results if r == "ok"]
    assert len(results) == len(sizes) and len(set(ok)) == 1  # one size won; copies of it re-cosign
    assert rig.witness.size(PEER) == ok[0]
    # the log now learns the stored size from a 409 and continues from it
    with pytest.raises(SizeConflictError) as info:
        rig.add(2, 12)
    rig.add(info.value.current_size, 12)
    assert rig.witness.size(PEER) == 12


def test_state_survives_restart_and_smaller_trees_are_refused(rig: Rig) -> None:
    rig.add(0, 7)
    rig.restart()  # persisted before the cosignature was returned
    assert rig.witness.size(PEER) == 7
    rig.refused(SizeConflictError, 409, old=0, size=5, proof=[])
    rig.refused(InputError, 400, old=7, size=5, proof=[])
    fork = rig.log.fork(6)
    fork.append(Org("acme").attestation("pkg-evil@1"))
    fork.append(Org("acme").attestation("pkg-evil@2"))
    rig.refused(WitnessProofError, 422, old=7, proof=fork.proof(7), note=fork.note())
    # a lost response: the log retries the same request; the witness answers 409 with the size,
    # and cosigns the same checkpoint again when asked from it
    with pytest.raises(SizeConflictError):
        rig.add(0, 7, proof=[])
    assert rig.add(7, 7)


def test_a_witness_key_must_be_ed25519(rig: Rig) -> None:
    with pytest.raises(TurtlesError):
        Witness(WitnessStore(rig.db), name=NAME, signer=SoftwareSigner.generate("p256"), logs={})


def test_request_round_trips(rig: Rig) -> None:
    req = AddCheckpoint(3, tuple(rig.log.proof(3)), rig.log.note())
    assert AddCheckpoint.parse(req.to_bytes()) == req
    assert req.to_bytes().startswith(b"old 3\n")
    assert merkle.HASH_SIZE == 32
