"""PKCS#11 signing on a real SoftHSM2 token, and RFC 7512 URIs (RELIABILITY H1, H2, W6, C3)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive, PKCS11Error

from ledger.errors import DuplicateError, HSMError, KeyFormatError, NotFoundError
from ledger.hsm import (
    Pin,
    Pkcs11Context,
    Pkcs11Signer,
    Pkcs11Uri,
    RetryPolicy,
    generate_keypair,
    parse_pkcs11_uri,
    read_public_key,
)
from ledger.keys import ALGORITHMS, Algorithm, PublicKey
from tests.softhsm import SoftHSMMissingError, SoftHSMToken, make_token

# --- RFC 7512 URIs (no token needed) -----------------------------------------------------------

RFC7512_EXAMPLES = [
    "pkcs11:",
    "pkcs11:object=my-pubkey;type=public",
    "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
    "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
    "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
    "?pin-source=file:/etc/token_pin",
    "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
    "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
    "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
    "pkcs11:slot-description=Sun%20Metaslot",
    "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
    "library-version=1.23",
    "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
    "id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
    "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
    "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
    "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
    "?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
]


@pytest.mark.parametrize("text", RFC7512_EXAMPLES)
def test_rfc7512_examples_parse_and_format_canonically(text: str) -> None:
    uri = parse_pkcs11_uri(text)
    canonical = uri.format()
    assert parse_pkcs11_uri(canonical) == uri
    assert parse_pkcs11_uri(canonical).format() == canonical
    # Canonical form only reorders attributes and upper-cases hex: same length as the RFC text.
    assert len(canonical) == len(text)


def test_rfc7512_values_are_decoded() -> None:
    uri = parse_pkcs11_uri(RFC7512_EXAMPLES[3])
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.manufacturer == "Snake Oil, Inc."
    assert uri.model == "1.0"
    assert uri.object == "my-certificate"
    assert uri.type == "cert"
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.serial == ""  # present but empty, which differs from absent
    assert uri.pin_source == "file:/etc/token_pin"
    joe = parse_pkcs11_uri(RFC7512_EXAMPLES[9])
    assert joe.token == "My token% created by Joe"
    assert joe.library_version == "3"
    assert joe.id == bytes.fromhex("010203badd cafe 040506")
    assert parse_pkcs11_uri(RFC7512_EXAMPLES[10]).token == "A name with a substring %;"
    assert parse_pkcs11_uri(RFC7512_EXAMPLES[11]).token == "Name with a small A with acute: á"
    vendor = parse_pkcs11_uri(RFC7512_EXAMPLES[12])
    assert vendor.vendor_path == (("vendor-aaa", "value-a"),)
    assert vendor.vendor_query == (("vendor-bbb", "value-b"),)
    assert parse_pkcs11_uri(RFC7512_EXAMPLES[5]).module_path == "/mnt/libmypkcs11.so.1"


def test_canonical_form_orders_attributes_and_escapes() -> None:
    uri = parse_pkcs11_uri(
        "PKCS11:OBJECT=k%61y;type=PRIVATE;token=t%3bx;slot-id=007?pin-value=p&x=2&x=1"
    )
    assert uri.format(redact_pin=True) == (
        "pkcs11:token=t%3Bx;object=kay;type=private;slot-id=7?pin-value=REDACTED&x=2&x=1"
    )
    assert uri.vendor_query == (("x", "2"), ("x", "1"))  # repeats keep their order
    assert parse_pkcs11_uri("pkcs11:id=foo").format() == "pkcs11:id=%66%6F%6F"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("pkcs12:token=a", "must start with 'pkcs11:'"),
        ("token=a", "must start with 'pkcs11:'"),
        ("pkcs11:token=a;token=b", "token appears twice"),
        ("pkcs11:token=a?module-path=/x&module-path=/y", "module-path appears twice"),
        ("pkcs11:v=a;v=b", "v appears twice"),
        ("pkcs11:token=a;;object=b", "empty attribute"),
        ("pkcs11:token=a;", "empty attribute"),
        ("pkcs11:;token=a", "empty attribute"),
        ("pkcs11:token", "'token' in the path is not name=value"),
        ("pkcs11:to.ken=a", "'to.ken' in the path is not name=value"),
        ("pkcs11:=a", "not name=value"),
        ("pkcs11:token=a%2", "bad percent-escape in the token value"),
        ("pkcs11:token=a%G1", "bad percent-escape in the token value"),
        ("pkcs11:token=%FF", "token value is not UTF-8"),
        ("pkcs11:token=a b", "token value has a character that must be percent-encoded"),
        ("pkcs11:token=a/b", "must be percent-encoded"),
        ("pkcs11:token=á", "must be percent-encoded"),
        ("pkcs11:token=a#frag", "must be percent-encoded"),
        ("pkcs11:object=a?x=b;c", "x value has a character that must be percent-encoded"),
        ("pkcs11:type=foo", "type must be one of"),
        ("pkcs11:type=%70ublic", "type must be written out"),
        ("pkcs11:slot-id=abc", "slot-id must be decimal digits"),
        ("pkcs11:slot-id=", "slot-id must be decimal digits"),
        ("pkcs11:slot-id=%31", "slot-id must be written out"),
        (
            "pkcs11:slot-id=99999999999999999999999",
            "slot-id 99999999999999999999999 is out of range",
        ),
        ("pkcs11:library-version=1.bar", "library-version must be MAJOR[.MINOR]"),
        ("pkcs11:library-version=", "library-version must be MAJOR[.MINOR]"),
        ("pkcs11:token=a?module-path=lib/x.so", "module-path must be absolute"),
        ("pkcs11:token=a?pin-source=file:/p&pin-value=1", "pin-source or pin-value, not both"),
        ("pkcs11:pin-value=1234", "pin-value belongs in the query, not the path"),
        ("pkcs11:token=a?token=b", "token belongs in the path, not the query"),
        ("pkcs11:" + "token=" + "a" * 5000, "more than 4096"),
    ],
)
def test_malformed_uris_are_refused_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        parse_pkcs11_uri(text)
    assert complaint in caught.value.message


def test_a_pin_value_never_reaches_messages_or_reprs() -> None:
    for bad in (
        "pkcs11:token=a?pin-value=s3cr3t%ZZ",
        "pkcs11:token=a?pin-value=s3cr3t%FF",
        "pkcs11:token=a?pin-value=s3cr3t#",
    ):
        with pytest.raises(KeyFormatError) as caught:
            parse_pkcs11_uri(bad)
        assert "s3cr3t" not in str(caught.value)
    uri = parse_pkcs11_uri("pkcs11:token=a;object=k?pin-value=s3cr3t")
    assert uri.pin_value == "s3cr3t"
    assert "s3cr3t" in uri.format()  # the URI itself carries it, by the caller's choice
    for shown in (repr(uri), str(uri), uri.format(redact_pin=True), f"{uri}"):
        assert "s3cr3t" not in shown
    pin = Pin("s3cr3t")
    assert "s3cr3t" not in repr(pin) + str(pin) + f"{pin}"
    assert pin == Pin("s3cr3t") and pin != Pin("other")


def test_constructing_an_invalid_uri_is_refused() -> None:
    with pytest.raises(KeyFormatError, match="type must be one of"):
        Pkcs11Uri(type="key")
    with pytest.raises(KeyFormatError, match="standard attribute"):
        Pkcs11Uri(vendor_query=(("pin-value", "1"),))
    with pytest.raises(KeyFormatError, match="bad path attribute name"):
        Pkcs11Uri(vendor_path=(("a;b", "1"),))


_text = st.text(st.characters(codec="utf-8"), max_size=12)


_names = st.from_regex(r"x-[a-z0-9_-]{1,6}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    token=st.none() | _text,
    obj=st.none() | _text,
    key_id=st.none() | st.binary(max_size=12),
    typ=st.none() | st.sampled_from(["public", "private", "cert", "secret-key", "data"]),
    slot_id=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    version=st.none() | st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True),
    module=st.none() | _text.map(lambda t: "/" + t),
    pin=st.none() | _text,
    vendor_path=st.dictionaries(_names, _text, max_size=3),
    vendor_query=st.lists(st.tuples(_names, _text), max_size=3),
)
def test_format_then_parse_is_the_identity(
    token: str | None,
    obj: str | None,
    key_id: bytes | None,
    typ: str | None,
    slot_id: int | None,
    version: str | None,
    module: str | None,
    pin: str | None,
    vendor_path: dict[str, str],
    vendor_query: list[tuple[str, str]],
) -> None:
    uri = Pkcs11Uri(
        token=token, object=obj, id=key_id, type=typ, slot_id=slot_id, library_version=version,
        module_path=module, pin_value=pin, vendor_path=tuple(sorted(vendor_path.items())),
        vendor_query=tuple(sorted(vendor_query, key=lambda pair: pair[0])),
    )  # fmt: skip
    assert parse_pkcs11_uri(uri.format()) == uri


def test_missing_softhsm_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOFTHSM2_MODULE", str(tmp_path / "libsofthsm2.so"))
    with pytest.raises(SoftHSMMissingError, match="run `make bootstrap`"):
        make_token(tmp_path)


# --- keys in a SoftHSM2 token ------------------------------------------------------------------


def _signer(ctx: Pkcs11Context, token: SoftHSMToken, label: str, alg: Algorithm) -> Pkcs11Signer:
    generate_keypair(ctx, token_label=token.label, label=label, alg=alg, pin=token.pin)
    return Pkcs11Signer(ctx, token.uri(label), pin=token.pin)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generate_sign_and_verify(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken, alg: Algorithm
) -> None:
    public = generate_keypair(
        pkcs11_context,
        token_label=softhsm_token.label,
        label="root",
        alg=alg,
        pin=softhsm_token.pin,
    )
    assert public.alg == alg
    signer = Pkcs11Signer(pkcs11_context, softhsm_token.uri("root"), pin=softhsm_token.pin)
    assert signer.public_key == public
    assert signer.key_id == public.key_id
    assert read_public_key(pkcs11_context, softhsm_token.uri("root")) == public
    signature = signer.sign(b"checkpoint")
    public.verify(signature=signature, data=b"checkpoint")
    if alg == "ed25519":
        assert len(signature) == 64
    else:
        assert signature[0] == 0x30  # DER; PublicKey.verify has checked it is canonical
    # A second signer (another label) on the same context uses its own key.
    other = _signer(pkcs11_context, softhsm_token, "other", alg)
    assert other.public_key != public


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_many_signs_a_batch_in_order(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken, alg: Algorithm
) -> None:
    signer = _signer(pkcs11_context, softhsm_token, "log", alg)
    datas = [f"checkpoint {i}".encode() for i in range(50)]
    signatures = signer.sign_many(datas)
    assert len(signatures) == len(datas)
    for data, signature in zip(datas, signatures, strict=True):
        signer.public_key.verify(signature=signature, data=data)
    assert signer.sign_many([]) == []


def test_key_found_by_id_as_well_as_label(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    generate_keypair(
        pkcs11_context, token_label="test", label="k", pin=softhsm_token.pin, key_id=b"\x01\x02"
    )
    by_id = Pkcs11Signer(pkcs11_context, "pkcs11:token=test;id=%01%02", pin=softhsm_token.pin)
    by_label = Pkcs11Signer(pkcs11_context, softhsm_token.uri("k"), pin=softhsm_token.pin)
    assert by_id.public_key == by_label.public_key
    with pytest.raises(NotFoundError, match="with id 0103"):
        Pkcs11Signer(pkcs11_context, "pkcs11:token=test;object=k;id=%01%03", pin=softhsm_token.pin)


def test_private_key_cannot_be_extracted(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    generate_keypair(
        pkcs11_context, token_label="test", label="root", alg="p256", pin=softhsm_token.pin
    )

    def inspect(session: object) -> dict[str, object]:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="root")  # type: ignore[attr-defined]
        try:
            key[Attribute.VALUE]
            value_readable = True
        except AttributeSensitive:
            value_readable = False
        return {
            "value_readable": value_readable,
            "extractable": key[Attribute.EXTRACTABLE],
            "sensitive": key[Attribute.SENSITIVE],
            "token": key[Attribute.TOKEN],
            "never_extractable": key[Attribute.NEVER_EXTRACTABLE],
        }

    facts = pkcs11_context.with_session(Pkcs11Uri(token="test"), inspect, pin=softhsm_token.pin)
    assert facts == {
        "value_readable": False, "extractable": False, "sensitive": True,
        "token": True, "never_extractable": True,
    }  # fmt: skip


def test_a_second_key_with_the_same_label_is_refused(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    first = _signer(pkcs11_context, softhsm_token, "root", "ed25519")
    for alg in ALGORITHMS:
        with pytest.raises(DuplicateError, match="already holds a key labelled 'root'"):
            generate_keypair(
                pkcs11_context, token_label="test", label="root", alg=alg, pin=softhsm_token.pin
            )
    again = Pkcs11Signer(pkcs11_context, softhsm_token.uri("root"), pin=softhsm_token.pin)
    assert again.public_key == first.public_key
    generate_keypair(pkcs11_context, token_label="test", label="a", pin="1234", key_id=b"\x07")
    with pytest.raises(DuplicateError, match="already holds a key with id 07"):
        generate_keypair(pkcs11_context, token_label="test", label="b", pin="1234", key_id=b"\x07")


def test_calls_from_inside_the_worker_do_not_deadlock(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    signer = _signer(pkcs11_context, softhsm_token, "root", "ed25519")
    signature = pkcs11_context.run(lambda lib: signer.sign(b"nested"))
    signer.public_key.verify(signature=signature, data=b"nested")


def test_keys_persist_in_the_token(softhsm_token: SoftHSMToken) -> None:
    with Pkcs11Context(softhsm_token.module) as ctx:
        public = generate_keypair(ctx, token_label="test", label="root", pin=softhsm_token.pin)
    with Pkcs11Context(softhsm_token.module) as ctx:
        assert (
            Pkcs11Signer(ctx, softhsm_token.uri("root"), pin=softhsm_token.pin).public_key == public
        )


def test_concurrent_signing_through_one_context(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    """H1: 16 threads sign at once, singly and in batches; every signature verifies."""
    signers = [_signer(pkcs11_context, softhsm_token, f"k{alg}", alg) for alg in ALGORITHMS]
    results: list[tuple[PublicKey, bytes, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def work(n: int) -> None:
        signer = signers[n % 2]
        try:
            start.wait()
            mine = []
            for i in range(20):
                data = f"{n}:{i}".encode()
                mine.append((signer.public_key, data, signer.sign(data)))
            batch = [f"{n}:batch:{i}".encode() for i in range(20)]
            mine += [
                (signer.public_key, d, s)
                for d, s in zip(batch, signer.sign_many(batch), strict=True)
            ]
            with lock:
                results.extend(mine)
        except BaseException as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 16 * 40
    for public, data, signature in results:
        public.verify(signature=signature, data=data)


def test_session_closed_under_the_worker_is_reopened(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken, caplog: pytest.LogCaptureFixture
) -> None:
    """W6: CKR_SESSION_HANDLE_INVALID -> a fresh session, logged in again."""
    signer = _signer(pkcs11_context, softhsm_token, "root", "ed25519")
    pkcs11_context.with_session(Pkcs11Uri(token="test"), lambda session: session.close())
    with caplog.at_level(logging.WARNING, logger="ledger.hsm"):
        signer.public_key.verify(signature=signer.sign(b"after"), data=b"after")
    assert "SessionHandleInvalid" in caplog.text


def test_module_finalised_under_the_worker_is_reinitialised(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    """W6: CKR_CRYPTOKI_NOT_INITIALIZED (a module restarted) -> re-initialise, log in again."""
    signer = _signer(pkcs11_context, softhsm_token, "root", "p256")
    pkcs11_context.run(lambda lib: lib.finalize())
    signer.public_key.verify(signature=signer.sign(b"after"), data=b"after")


def test_already_logged_in_is_success_and_a_lost_login_is_restored(
    softhsm_token: SoftHSMToken,
) -> None:
    """W6: CKR_USER_ALREADY_LOGGED_IN counts as success; a logout under a live session heals."""
    with Pkcs11Context(softhsm_token.module) as ctx:
        generate_keypair(ctx, token_label="test", label="root", pin=softhsm_token.pin)
    with Pkcs11Context(softhsm_token.module) as ctx:
        # Someone else in this process logs the application in first...
        outside = ctx.run(
            lambda lib: lib.get_token(token_label="test").open(user_pin=softhsm_token.pin)
        )
        # ...so our own login answers CKR_USER_ALREADY_LOGGED_IN.
        signer = Pkcs11Signer(ctx, softhsm_token.uri("root"), pin=softhsm_token.pin)
        signer.public_key.verify(signature=signer.sign(b"before"), data=b"before")
        ctx.run(lambda lib: outside.close())  # C_Logout: every session of ours loses its login
        signer.public_key.verify(signature=signer.sign(b"after"), data=b"after")


def test_wrong_pin_is_a_clear_error_without_the_pin(
    softhsm_token: SoftHSMToken, caplog: pytest.LogCaptureFixture
) -> None:
    with Pkcs11Context(softhsm_token.module) as ctx:
        generate_keypair(ctx, token_label="test", label="root", pin=softhsm_token.pin)
    wrong = "wrong-8642"
    with caplog.at_level(logging.DEBUG), Pkcs11Context(softhsm_token.module) as ctx:
        for _ in range(2):  # the second attempt is refused without asking the token again
            with pytest.raises(HSMError, match="PIN rejected for token 'test'") as caught:
                Pkcs11Signer(ctx, softhsm_token.uri("root"), pin=wrong)
            chain = [caught.value, caught.value.__cause__]
            assert all(wrong not in str(e) and wrong not in repr(e) for e in chain)
        assert "earlier; not retried" in caught.value.message
        signer = Pkcs11Signer(ctx, softhsm_token.uri("root"), pin=softhsm_token.pin)
        # Logged in now, the token would take anything; a different PIN is still refused.
        with pytest.raises(HSMError, match="not the PIN its session logged in with"):
            Pkcs11Signer(ctx, softhsm_token.uri("root"), pin=wrong)
        shown = repr(ctx) + str(ctx) + repr(signer) + str(signer)
        assert wrong not in shown
    assert caplog.records  # the failures were logged...
    assert wrong not in caplog.text  # ...without the PIN


def test_missing_token_key_or_pin_are_clear_errors(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    with pytest.raises(HSMError, match=r"no token 'nope' in .* \(tokens present: 'test'\)"):
        Pkcs11Signer(pkcs11_context, "pkcs11:token=nope;object=k", pin="1234")
    with pytest.raises(NotFoundError, match="no public key labelled 'k' in token 'test'"):
        Pkcs11Signer(pkcs11_context, softhsm_token.uri("k"), pin="1234")
    with pytest.raises(HSMError, match="no PIN for token 'test'"):
        Pkcs11Signer(pkcs11_context, softhsm_token.uri("k"))
    with pytest.raises(KeyFormatError, match="names no key"):
        Pkcs11Signer(pkcs11_context, "pkcs11:token=test", pin="1234")
    with pytest.raises(KeyFormatError, match="names a cert object"):
        Pkcs11Signer(pkcs11_context, "pkcs11:token=test;object=k;type=cert", pin="1234")
    with pytest.raises(HSMError, match="needs a logged-in session"):
        generate_keypair(pkcs11_context, token_label="test", label="k")
    with pytest.raises(KeyFormatError, match="unknown algorithm"):
        generate_keypair(pkcs11_context, token_label="test", label="k", alg="rsa", pin="1234")  # type: ignore[arg-type]


def test_pkcs11_errors_are_wrapped_naming_the_token_and_key(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    uri = Pkcs11Uri(token="test", object="k")
    with pytest.raises(HSMError, match=r"NoSuchKey on token 'test' \(key labelled 'k'\)") as caught:
        pkcs11_context.with_session(uri, lambda session: session.get_key(label="k"), pin="1234")
    assert isinstance(caught.value.__cause__, PKCS11Error)
    with pytest.raises(HSMError, match="NoSuchToken in /") as caught:
        pkcs11_context.run(lambda lib: lib.get_token(token_label="nope"))
    assert isinstance(caught.value.__cause__, PKCS11Error)


def test_one_live_context_per_module(
    pkcs11_context: Pkcs11Context, softhsm_token: SoftHSMToken
) -> None:
    pkcs11_context.run(lambda lib: None)
    with (
        Pkcs11Context(softhsm_token.module) as second,
        pytest.raises(HSMError, match="already initialised"),
    ):
        second.run(lambda lib: None)
    with pytest.raises(HSMError, match="module not found"):
        Pkcs11Context("/nonexistent/libpkcs11.so")


def test_closed_context_refuses_work(softhsm_token: SoftHSMToken) -> None:
    ctx = Pkcs11Context(softhsm_token.module)
    signer = _signer(ctx, softhsm_token, "root", "ed25519")
    ctx.close()
    ctx.close()  # idempotent
    with pytest.raises(HSMError, match="is closed"):
        signer.sign(b"m")
    # Closing finalised the module: a new context may load it again.
    with Pkcs11Context(softhsm_token.module) as again:
        assert (
            Pkcs11Signer(again, softhsm_token.uri("root"), pin=softhsm_token.pin).public_key
            == signer.public_key
        )


def test_several_tokens_in_one_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_token(tmp_path, "alpha", "1111")
    second = make_token(tmp_path, "beta", "2222")
    monkeypatch.setenv("SOFTHSM2_CONF", str(first.conf_path))
    with Pkcs11Context(first.module) as ctx:
        a = _signer(ctx, first, "k", "ed25519")
        b = _signer(ctx, second, "k", "ed25519")
        assert a.public_key != b.public_key
        b.public_key.verify(signature=b.sign(b"m"), data=b"m")
        with pytest.raises(HSMError, match="PIN rejected for token 'beta'"):
            Pkcs11Signer(ctx, Pkcs11Uri(token="beta", object="x"), pin="1111")
    with pytest.raises(ValueError, match="already exists"):
        make_token(tmp_path, "alpha")


@pytest.mark.parametrize("reset_on_fork", [False, True], ids=["plain", "reset_on_fork"])
def test_fork_after_init_child_reinitialises_and_signs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reset_on_fork: bool
) -> None:
    """H2: a child never reuses the parent's sessions; its signatures verify; the parent carries on."""
    token = make_token(tmp_path, reset_on_fork=reset_on_fork)
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf_path))
    with Pkcs11Context(token.module) as ctx:
        signer = _signer(ctx, token, "root", "p256")
        signer.sign(b"parent before")  # the module is initialised and a session is open
        parent_session = ctx.with_session(Pkcs11Uri(token="test"), lambda session: session)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, never return into pytest
            code = 1
            try:
                os.close(read_end)
                signature = signer.sign(b"child")
                # Objects keep their identity across fork(): "is" tells whether the child
                # reused the session object (and so the session handle) of its parent.
                child_session = ctx.with_session(Pkcs11Uri(token="test"), lambda session: session)
                result = (b"R" if child_session is parent_session else b"S") + signature
                code = 0
            except HSMError as e:
                result = b"E" + e.message.encode()
            except BaseException as e:
                result = b"X" + repr(e).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(result)
            ctx.close()
            os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as inp:
            result = inp.read()
        _, status = os.waitpid(pid, 0)
        assert result[:1] == b"S", result
        assert os.waitstatus_to_exitcode(status) == 0
        signer.public_key.verify(signature=result[1:], data=b"child")
        signer.public_key.verify(signature=signer.sign(b"parent after"), data=b"parent after")


def test_retry_is_bounded(softhsm_token: SoftHSMToken) -> None:
    """A session that keeps failing ends in HSMError after the configured attempts."""
    policy = RetryPolicy(attempts=3, first_delay=0.001)
    with Pkcs11Context(softhsm_token.module, retry=policy) as ctx:
        calls: list[int] = []

        def always_lost(session: object) -> None:
            calls.append(1)
            session.close()  # type: ignore[attr-defined]
            session.close()  # type: ignore[attr-defined]  # -> SessionHandleInvalid

        with pytest.raises(HSMError, match="unusable after 3 attempts: SessionHandleInvalid"):
            ctx.with_session(Pkcs11Uri(token="test"), always_lost, pin=softhsm_token.pin)
        assert len(calls) == 3
