"""KEYREFs: PEM files and pkcs11: URIs made into signers and public keys, on a real token."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from ledger.errors import HSMError, KeyFormatError, NotFoundError
from ledger.hsm import Pin, Pkcs11Context, Pkcs11Signer, generate_keypair
from ledger.keyref import (
    ENV_MODULE,
    ENV_PASSPHRASE,
    ENV_PIN,
    KeyLoader,
    Pkcs11ContextCache,
    is_pkcs11_uri,
    load_public_key,
    load_signer,
    read_secret_file,
    resolve_pkcs11_access,
)
from ledger.keys import PublicKey, SoftwareSigner
from tests.softhsm import SoftHSMToken

MODULE = "/opt/hsm/lib.so"


def _pem_files(
    tmp_path: Path, alg: str = "ed25519", passphrase: bytes | None = None
) -> tuple[SoftwareSigner, Path, Path]:
    signer = SoftwareSigner.generate(alg)  # type: ignore[arg-type]
    key, pub = tmp_path / "key.pem", tmp_path / "key.pem.pub"
    key.write_bytes(signer.to_pem(passphrase))
    pub.write_bytes(signer.public_key.to_pem())
    return signer, key, pub


@pytest.fixture
def token_key(softhsm_token: SoftHSMToken) -> PublicKey:
    """A P-256 key labelled ``root`` in the test token (its context already closed)."""
    with Pkcs11Context(softhsm_token.module) as ctx:
        return generate_keypair(
            ctx, token_label="test", label="root", alg="p256", pin=softhsm_token.pin
        )


# --- where the module and PIN come from ---------------------------------------------------------


def test_resolution_order_argument_then_uri_then_environment(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("  from-file  \nsecond line\n")
    env = {ENV_MODULE: "/env/lib.so", ENV_PIN: "from-env"}
    uri = "pkcs11:token=t;object=k?module-path=/uri/lib.so&pin-value=from-uri"
    bare = "pkcs11:token=t;object=k"

    def resolve(u: str, **kw: object) -> tuple[str, str | None]:
        access = resolve_pkcs11_access(u, environ=env, **kw)  # type: ignore[arg-type]
        return access.module, access.pin.reveal() if access.pin else None

    assert resolve(uri, module=MODULE, pin="from-arg") == (MODULE, "from-arg")
    assert resolve(uri, pin_file=str(pin_file)) == ("/uri/lib.so", "from-file")
    assert resolve(uri) == ("/uri/lib.so", "from-uri")
    assert resolve(bare) == ("/env/lib.so", "from-env")
    sourced = f"pkcs11:token=t;object=k?pin-source=file:{pin_file}"
    assert resolve(sourced)[1] == "from-file"
    assert resolve(f"pkcs11:token=t;object=k?pin-source={pin_file}")[1] == "from-file"
    assert resolve_pkcs11_access(bare, module=MODULE, environ={}).pin is None


def test_resolution_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFormatError, match=f"no PKCS#11 module .* set {ENV_MODULE}"):
        resolve_pkcs11_access("pkcs11:token=t;object=k", environ={})
    with pytest.raises(KeyFormatError, match="module-name='mypkcs11' is not looked up"):
        resolve_pkcs11_access("pkcs11:object=k?module-name=mypkcs11", environ={})
    with pytest.raises(KeyFormatError, match="not both"):
        resolve_pkcs11_access("pkcs11:object=k", module=MODULE, pin="1", pin_file="f", environ={})
    with pytest.raises(KeyFormatError, match="pin-source 'https://x/pin' is not supported"):
        resolve_pkcs11_access("pkcs11:object=k?pin-source=https://x/pin", module=MODULE, environ={})
    with pytest.raises(KeyFormatError, match="not supported"):
        resolve_pkcs11_access("pkcs11:object=k?pin-source=|/bin/getpin", module=MODULE, environ={})
    with pytest.raises(KeyFormatError, match=r"cannot read PIN file .*missing"):
        resolve_pkcs11_access(
            "pkcs11:object=k", module=MODULE, pin_file=str(tmp_path / "missing"), environ={}
        )


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text("\n")
    with pytest.raises(KeyFormatError, match="empty first line"):
        read_secret_file(str(path))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFormatError, match="not UTF-8"):
        read_secret_file(str(path))
    path.write_text("x" * 5000)
    with pytest.raises(KeyFormatError, match="larger than"):
        read_secret_file(str(path))
    path.write_text("\t9876 \r\n")
    assert read_secret_file(str(path)) == "9876"


def test_keyref_kind() -> None:
    assert is_pkcs11_uri("pkcs11:token=a") and is_pkcs11_uri("PKCS11:token=a")
    assert not is_pkcs11_uri("keys/root.pem") and not is_pkcs11_uri("./pkcs11:odd-file-name")


# --- PEM files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_pem_signer_and_public_keys(tmp_path: Path, alg: str) -> None:
    signer, key, pub = _pem_files(tmp_path, alg)
    loaded = load_signer(str(key), environ={})
    assert loaded.public_key == signer.public_key
    signer.public_key.verify(signature=loaded.sign(b"m"), data=b"m")
    assert load_public_key(str(pub), environ={}) == signer.public_key
    assert load_public_key(str(key), environ={}) == signer.public_key


def test_encrypted_pem_needs_its_passphrase(tmp_path: Path) -> None:
    signer, key, _ = _pem_files(tmp_path, passphrase=b"open sesame")
    assert (
        load_signer(str(key), passphrase=b"open sesame", environ={}).public_key == signer.public_key
    )
    assert (
        load_signer(str(key), environ={ENV_PASSPHRASE: "open sesame"}).public_key
        == signer.public_key
    )
    with pytest.raises(
        KeyFormatError, match=f"is encrypted: give its passphrase .*{ENV_PASSPHRASE}"
    ):
        load_signer(str(key), environ={})
    with pytest.raises(KeyFormatError, match="wrong passphrase") as caught:
        load_signer(str(key), passphrase=b"guess", environ={})
    assert str(key) in caught.value.message and "guess" not in caught.value.message


def test_environment_passphrase_is_ignored_for_a_plain_key(tmp_path: Path) -> None:
    signer, key, _ = _pem_files(tmp_path)
    assert load_signer(str(key), environ={ENV_PASSPHRASE: "unused"}).public_key == signer.public_key
    with pytest.raises(KeyFormatError):
        load_signer(str(key), passphrase=b"explicit but wrong", environ={})


def test_bad_key_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    _, _, pub = _pem_files(tmp_path)
    with pytest.raises(
        KeyFormatError, match=r"key\.pem\.pub is a public key: signing needs a private key"
    ):
        load_signer(str(pub), environ={})
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(KeyFormatError, match=r"junk\.pem is not a PEM private key"):
        load_signer(str(junk), environ={})
    with pytest.raises(KeyFormatError, match=r"junk\.pem is not a PEM private key"):
        load_public_key(str(junk), environ={})
    with pytest.raises(KeyFormatError, match=r"cannot read key file .*nowhere\.pem"):
        load_signer(str(tmp_path / "nowhere.pem"), environ={})
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * 70000)
    with pytest.raises(KeyFormatError, match="larger than"):
        load_signer(str(big), environ={})
    broken = tmp_path / "broken.pub"
    broken.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError, match=r"broken\.pub: not a PEM public key"):
        load_public_key(str(broken), environ={})


# --- pkcs11: URIs ------------------------------------------------------------------------------


def test_pkcs11_signer_with_explicit_settings(
    softhsm_token: SoftHSMToken, token_key: PublicKey
) -> None:
    with Pkcs11ContextCache() as cache:
        signer = load_signer(
            softhsm_token.uri("root"),
            pkcs11_module=softhsm_token.module,
            pin_file=str(softhsm_token.pin_file),
            context_cache=cache,
            environ={},
        )
        assert isinstance(signer, Pkcs11Signer)
        assert signer.public_key == token_key
        token_key.verify(signature=signer.sign(b"m"), data=b"m")


def test_pkcs11_signer_from_environment_and_uri(
    softhsm_token: SoftHSMToken, token_key: PublicKey
) -> None:
    with Pkcs11ContextCache() as cache:
        from_env = load_signer(
            softhsm_token.uri("root"), context_cache=cache, environ=softhsm_token.env
        )
        in_uri = f"{softhsm_token.uri('root')}?module-path={softhsm_token.module}&pin-value={softhsm_token.pin}"
        from_uri = load_signer(in_uri, context_cache=cache, environ={})
        assert from_env.public_key == from_uri.public_key == token_key
        assert len(cache._contexts) == 1  # one context serves both


def test_public_key_from_uri_needs_no_pin(
    softhsm_token: SoftHSMToken, token_key: PublicKey
) -> None:
    env = {ENV_MODULE: softhsm_token.module}
    assert load_public_key(softhsm_token.uri("root"), environ=env) == token_key
    with Pkcs11ContextCache() as cache:
        assert (
            load_public_key(softhsm_token.uri("root"), context_cache=cache, environ=env)
            == token_key
        )
        with pytest.raises(NotFoundError, match="no public key labelled 'nope'"):
            load_public_key(softhsm_token.uri("nope"), context_cache=cache, environ=env)


def test_pkcs11_errors(softhsm_token: SoftHSMToken, token_key: PublicKey) -> None:
    with Pkcs11ContextCache() as cache:
        with pytest.raises(HSMError, match="no PIN for token 'test'"):
            load_signer(
                softhsm_token.uri("root"),
                context_cache=cache,
                environ={ENV_MODULE: softhsm_token.module},
            )
        with pytest.raises(HSMError, match="PIN rejected"):
            load_signer(
                softhsm_token.uri("root"),
                pin="0000",
                context_cache=cache,
                environ=softhsm_token.env,
            )
        with pytest.raises(KeyFormatError, match="bad percent-escape"):
            load_signer("pkcs11:token=%zz", context_cache=cache, environ=softhsm_token.env)


def test_context_cache_shares_one_context_per_module(
    softhsm_token: SoftHSMToken, token_key: PublicKey, tmp_path: Path
) -> None:
    link = tmp_path / "libsofthsm2-link.so"
    link.symlink_to(softhsm_token.module)
    cache = Pkcs11ContextCache()
    first = cache.get(softhsm_token.module)
    assert cache.get(str(link)) is first  # same module by real path
    signer = load_signer(softhsm_token.uri("root"), context_cache=cache, environ=softhsm_token.env)
    cache.close()
    with pytest.raises(HSMError, match="is closed"):
        signer.sign(b"m")
    # Everything was finalised: the module can be loaded afresh.
    with Pkcs11Context(softhsm_token.module) as again:
        assert (
            Pkcs11Signer(again, softhsm_token.uri("root"), pin=Pin(softhsm_token.pin)).public_key
            == token_key
        )


def test_uncached_pkcs11_signer_owns_its_context(
    softhsm_token: SoftHSMToken, token_key: PublicKey
) -> None:
    signer = load_signer(softhsm_token.uri("root"), environ=softhsm_token.env)
    token_key.verify(signature=signer.sign(b"m"), data=b"m")
    del signer
    gc.collect()  # the signer's context is closed with it, so the module is free again
    with Pkcs11Context(softhsm_token.module) as again:
        again.run(lambda lib: None)


def test_key_loader_bundles_settings_and_contexts(
    softhsm_token: SoftHSMToken, token_key: PublicKey, tmp_path: Path
) -> None:
    software, key, _ = _pem_files(tmp_path)
    with KeyLoader(
        pkcs11_module=softhsm_token.module, pin_file=str(softhsm_token.pin_file), environ={}
    ) as loader:
        hsm = loader.signer(softhsm_token.uri("root"))
        assert loader.signer(softhsm_token.uri("root")).public_key == hsm.public_key == token_key
        assert loader.public_key(softhsm_token.uri("root")) == token_key
        assert loader.signer(str(key)).public_key == software.public_key
        assert softhsm_token.pin not in repr(loader)
    with pytest.raises(HSMError, match="is closed"):
        hsm.sign(b"m")
