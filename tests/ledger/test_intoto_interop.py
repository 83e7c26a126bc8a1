"""Interoperability with other in-toto/DSSE producers: securesystemslib signs, turtles verifies.

securesystemslib (a test-only dependency) builds and signs DSSE envelopes with its own
``CryptoSigner``; the key id is set to turtles' form (``sha256:`` + hex SHA-256 of the DER
SubjectPublicKeyInfo), and the public key is delegated in the ledger. The ledger must accept
the envelope verbatim (payload bytes untouched, whatever their JSON formatting) and verify
the artefact; envelopes turtles signs must verify with securesystemslib too.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from ledger.attestation import PAYLOAD_TYPE, Artefact, Attestation, make_statement
from ledger.entry import Entry
from ledger.envelope import Envelope, sign_envelope
from ledger.errors import SignatureError
from ledger.keys import PublicKey, SoftwareSigner
from ledger.lineage import trace
from ledger.verify import verify_held
from tests.ledger.orgs import Clock, Org, sha


def sslib_signer(alg: str) -> tuple[CryptoSigner, PublicKey]:
    """A securesystemslib signer whose keyid is turtles' key id of the same key."""
    private = ed25519.Ed25519PrivateKey.generate() if alg == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    ours = PublicKey.from_crypto(private.public_key())
    key = SSlibKey.from_crypto(private.public_key(), keyid=ours.key_id)
    return CryptoSigner(private, key), ours


# Written by hand, as another producer would: other key order, spaces, a v1 SLSA predicate.
STATEMENT = """{
  "_type": "https://in-toto.io/Statement/v1",
  "subject": [{"name": "vendor-lib@3.1", "digest": {"sha256": "%s", "sha512": "00"}}],
  "predicateType": "https://slsa.dev/provenance/v1",
  "predicate": {
    "runDetails": {"builder": {"id": "https://ci.vendor.example/builder"}},
    "buildDefinition": {
      "buildType": "https://ci.vendor.example/build/v1",
      "externalParameters": {"ref": "refs/tags/v3.1"},
      "resolvedDependencies": [
        {"uri": "git+https://git.vendor.example/lib", "digest": {"gitCommit": "abc123"}},
        {"name": "zlib@1.3", "digest": {"sha256": "%s"}}
      ]
    }
  }
}
"""


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_an_envelope_signed_by_securesystemslib_is_accepted_verbatim_and_verified(
    acme: Org, clock: Clock, alg: str
) -> None:
    signer, public = sslib_signer(alg)
    acme.delegate(acme.root, public, globs=("vendor-lib@*",), purposes=("release",))
    digest, zlib = sha(b"vendor-lib-3.1.tar.gz"), sha(b"zlib-1.3.tar.gz")
    payload = (STATEMENT % (digest, zlib)).encode()
    theirs = SslibEnvelope(payload, PAYLOAD_TYPE, {})
    theirs.sign(signer)
    wire = json.dumps(theirs.to_dict()).encode()

    env = Envelope.from_json(wire)
    assert env.payload == payload and env.key_ids == (public.key_id,)
    result = acme.append(env)
    entry = Entry.from_bytes(acme.log.store.entry(result.index))
    assert entry.envelope.payload == payload  # never re-serialised

    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert v.trusted, v.reasons
    att = v.links()[0]
    assert att.hop.from_key == public.key_id and att.hop.names == ("vendor-lib@3.1",)
    lin = trace(acme.holdings.graph, digest, policy=acme.policy(), at=clock.later())
    assert [e.child for e in lin.edges] == [zlib]  # the git material has no sha256: not followed


def test_envelopes_signed_by_turtles_verify_with_securesystemslib(acme: Org) -> None:
    for signer in (SoftwareSigner.generate("ed25519"), SoftwareSigner.generate("p256")):
        stmt = make_statement(subject=Artefact("app@1", sha(b"app")), materials=(Artefact("lib@1", sha(b"lib")),))
        ours = sign_envelope(PAYLOAD_TYPE, stmt, [signer])
        theirs = SslibEnvelope.from_dict(json.loads(ours.to_json()))
        key = SSlibKey.from_crypto(signer.public_key._crypto, keyid=signer.key_id)
        assert list(theirs.verify([key], 1)) == [signer.key_id]
        assert Attestation.from_payload(theirs.payload).materials[0].name == "lib@1"


def test_a_third_party_attestation_is_vouched_for_by_cosigning(acme: Org, clock: Clock) -> None:
    vendor, _ = sslib_signer("ed25519")  # not delegated anywhere
    digest = sha(b"vendor-tool")
    payload = (STATEMENT % (digest, sha(b"z"))).encode()
    theirs = SslibEnvelope(payload, PAYLOAD_TYPE, {})
    theirs.sign(vendor)
    env = Envelope.from_json(json.dumps(theirs.to_dict()))
    with pytest.raises(SignatureError):
        acme.append(env)  # nobody the log knows signed it
    maint = acme.chain(1)[-1]
    cosigned = env.with_signature(maint)
    assert cosigned.payload == payload and len(cosigned.signatures) == 2
    acme.append(cosigned)
    v = verify_held(acme.holdings, digest, policy=acme.policy(), at=clock.later())
    assert v.trusted and v.links()[0].hop.from_key == maint.key_id


def test_a_bad_signature_by_a_known_key_rejects_the_envelope(acme: Org) -> None:
    signer, public = sslib_signer("ed25519")
    acme.delegate(acme.root, public)
    theirs = SslibEnvelope((STATEMENT % (sha(b"x"), sha(b"y"))).encode(), PAYLOAD_TYPE, {})
    theirs.sign(signer)
    doc = theirs.to_dict()
    doc["payload"] = SslibEnvelope((STATEMENT % (sha(b"x2"), sha(b"y"))).encode(), PAYLOAD_TYPE, {}).to_dict()["payload"]
    with pytest.raises(SignatureError, match="does not verify"):
        acme.append(Envelope.from_json(json.dumps(doc)))
