"""TrustGraph: incremental indexing, idempotence, signature requirements, locality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ledger.entry import LoggedRecord
from ledger.keys import KeyId
from ledger.trust import TrustGraph, explain
from tests.ledger.trust.world import POOL, World, digest, kid, policy


def test_indexes_every_relation() -> None:
    w = World()
    root = w.root(0, "acme", ts=1)
    d = w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=1)
    e = w.endorse(0, 5, org="libfoo", ts=3)
    rv = w.revoke(0, 1, ts=4, since=10)
    rot = w.rotate(1, 2, ts=5)
    a = w.attest(2, "app-1.0", ts=6)
    g = w.graph
    assert list(g.roots_of(kid(0))) == [root]
    assert list(g.delegations_to(kid(1))) == list(g.delegations_from(kid(0))) == [d]
    assert list(g.endorsements_of(kid(5))) == list(g.endorsements_by(kid(0))) == [e]
    assert list(g.revocations_of(kid(1))) == [rv]
    assert list(g.rotations_from(kid(1))) == list(g.rotations_to(kid(2))) == [rot]
    # the graph keeps an attestation without its decoded statement (memory: RELIABILITY P6)
    slim = replace(a, record=replace(a.record, statement={}))
    assert list(g.attestations_for(digest("app-1.0"))) == [slim]
    assert list(g.attestations_for("sha256:" + digest("app-1.0"))) == [slim]
    assert list(g.attestations_by(kid(2))) == [slim]
    assert g.org_roots("acme") == [kid(0)]
    assert g.org_keys("acme") == {kid(0), kid(1)}
    assert g.orgs() == ("acme",)
    assert len(g) == 6
    assert g.stats()["keys"] == 3


def test_public_keys_come_from_root_delegation_and_rotation_records() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2)
    w.rotate(1, 2, ts=3)
    g = w.graph
    for i in (0, 1, 2):
        key = g.public_key(kid(i))
        assert key is not None and key.der == POOL[i].public_key.der
    assert g.public_key(kid(3)) is None
    assert g.knows_key(kid(1)) and not g.knows_key(kid(3))


def test_add_is_idempotent_per_origin_and_index() -> None:
    w = World()
    rec = w.root(0, "acme", ts=1)
    assert w.graph.add(rec) is False
    assert list(w.graph.roots_of(kid(0))) == [rec]
    assert w.graph.stats()["duplicate"] == 1
    copy = w.copy(rec, origin="log.b")
    assert list(w.graph.roots_of(kid(0))) == [rec, copy]


def test_dedup_bitmap_handles_sparse_and_large_indexes() -> None:
    g = TrustGraph()
    w = World(graph=g)
    rec = w.root(0, "acme", ts=1)
    far = LoggedRecord("log.z", 1_000_003, 1, rec.leaf_hash, rec.signers, rec.record, rec.record_id)
    assert g.add(far) and not g.add(far)
    near = LoggedRecord("log.z", 7, 1, rec.leaf_hash, rec.signers, rec.record, rec.record_id)
    assert g.add(near) and not g.add(near)


def test_records_missing_their_required_signature_are_skipped() -> None:
    w = World()
    w.root(0, "acme", ts=1)
    before = len(w.graph)
    w.delegate(0, 1, ts=2, signers=[3])  # claims issuer 0, signed by 3
    w.rotate(1, 2, ts=3, signers=[1])  # rotation needs old AND new
    w.log(w.records[0].record, [4], ts=4)  # a root record not signed by its key
    assert len(w.graph) == before
    assert w.graph.stats()["skipped"] == 3
    assert not w.graph.delegations_to(kid(1)) and not w.graph.rotations_to(kid(2))
    assert w.graph.public_key(kid(2)) is None


def test_witness_coverage_grows_per_witness() -> None:
    g = TrustGraph()
    g.set_witnessed("log.a", 10, frozenset({"w1", "w2"}))
    g.set_witnessed("log.a", 5, frozenset({"w1", "w3"}))
    assert g.witnesses("log.a", 0) == {"w1", "w2", "w3"}
    assert g.witnesses("log.a", 5) == {"w1", "w2"}
    assert g.witnesses("log.a", 10) == frozenset()
    assert g.witnesses("log.b", 0) == frozenset()


def test_equivocation_is_recorded_with_evidence() -> None:
    g = TrustGraph()
    g.mark_equivocating("log.a", ("note1", "note2"))
    g.mark_equivocating("log.a", "later")
    assert g.is_equivocating("log.a") and not g.is_equivocating("log.b")
    assert dict(g.equivocations()) == {"log.a": ("note1", "note2")}


class _CountingGraph(TrustGraph):
    """Counts index entries handed out, to show queries stay local."""

    touched = 0

    def _count(self, recs: Sequence[LoggedRecord]) -> Sequence[LoggedRecord]:
        self.touched += len(recs)
        return recs

    def delegations_to(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        return self._count(super().delegations_to(key_id))

    def roots_of(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        return self._count(super().roots_of(key_id))

    def revocations_of(self, key_id: KeyId) -> Sequence[LoggedRecord]:
        return self._count(super().revocations_of(key_id))

    def attestations_for(self, sha256: str) -> Sequence[LoggedRecord]:
        return self._count(super().attestations_for(sha256))


def test_explain_touches_only_records_near_its_paths() -> None:
    g = _CountingGraph()
    w = World(graph=g)
    w.root(0, "acme", ts=1)
    w.delegate(0, 1, ts=2, purposes=("delegate", "release"), max_depth=2)
    w.delegate(1, 2, ts=3)
    w.attest(2, "app-1.0", ts=4)
    for i in range(300):  # unrelated bulk: attestations of other artefacts, other delegations
        w.attest(2, f"other-{i}", ts=5 + i)
    for i in range(3, 13):
        w.delegate(1, i, ts=400 + i)
    g.touched = 0
    ex = explain(g, "sha256:" + digest("app-1.0"), purpose="release", at=1000, policy=policy(("acme", 0)))
    assert ex.trusted
    assert g.touched <= 6, g.touched  # 1 attestation (looked up 3 times), 2 delegations, 1 root
