"""``turtles keys generate``, driven through an argparse parser built here (main may not exist)."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from ledger.errors import DuplicateError, HSMError, InputError, KeyFormatError
from ledger.keyref import Pkcs11ContextCache, load_public_key, load_signer
from ledger.keys import PublicKey
from node.cli.keys import register
from tests.softhsm import SoftHSMToken


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="turtles")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def _printed(capsys: pytest.CaptureFixture[str]) -> PublicKey:
    """The key the command printed: a key id line, then a public key PEM that matches it."""
    out = capsys.readouterr().out
    key_id, pem = out.split("\n", 1)
    public = PublicKey.from_pem(pem.encode())
    assert public.key_id == key_id
    return public


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_generate_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str) -> None:
    out = tmp_path / "root.pem"
    assert _run(["keys", "generate", "--out", str(out), "--alg", alg]) == 0
    public = _printed(capsys)
    assert public.alg == alg
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_public_key(str(tmp_path / "root.pem.pub"), environ={}) == public
    signer = load_signer(str(out), environ={})
    public.verify(signature=signer.sign(b"m"), data=b"m")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_default_algorithm_is_ed25519(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(["keys", "generate", "--out", str(tmp_path / "k.pem")])
    assert _printed(capsys).alg == "ed25519"


def test_generate_with_a_passphrase(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("open sesame\n")
    out = tmp_path / "k.pem"
    _run(["keys", "generate", "--out", str(out), "--passphrase-file", str(secret)])
    public = _printed(capsys)
    assert out.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_signer(str(out), passphrase=b"open sesame", environ={}).public_key == public
    with pytest.raises(KeyFormatError, match="encrypted"):
        load_signer(str(out), environ={})


@pytest.mark.parametrize("existing", ["k.pem", "k.pem.pub"])
def test_existing_files_are_never_overwritten(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    with pytest.raises(InputError, match=f"{existing} already exists"):
        _run(["keys", "generate", "--out", str(tmp_path / "k.pem")])
    assert (tmp_path / existing).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot write into .*missing"):
        _run(["keys", "generate", "--out", str(tmp_path / "missing" / "k.pem")])


def test_out_and_hsm_are_exclusive_and_one_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _run(["keys", "generate", "--out", "a.pem", "--hsm", "pkcs11:token=t;object=k"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        _run(["keys", "generate"])
    with pytest.raises(SystemExit):
        _run(["keys", "generate", "--out", "a.pem", "--alg", "rsa"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_generate_in_the_hsm_with_flags(
    softhsm_token: SoftHSMToken, capsys: pytest.CaptureFixture[str], alg: str
) -> None:
    keyref = softhsm_token.uri("root")
    argv = ["keys", "generate", "--hsm", keyref, "--alg", alg,
            "--pkcs11-module", softhsm_token.module, "--pin-file", str(softhsm_token.pin_file)]  # fmt: skip
    assert _run(argv) == 0
    public = _printed(capsys)
    assert public.alg == alg
    with Pkcs11ContextCache() as cache:  # closed before the next command loads the module
        signer = load_signer(keyref, context_cache=cache, environ=softhsm_token.env)
        public.verify(signature=signer.sign(b"m"), data=b"m")
    with pytest.raises(DuplicateError, match="already holds a key labelled 'root'"):
        _run(argv)


def test_generate_in_the_hsm_from_the_environment(
    softhsm_token: SoftHSMToken, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in softhsm_token.env.items():
        monkeypatch.setenv(name, value)
    _run(["keys", "generate", "--hsm", softhsm_token.uri("env-key")])
    public = _printed(capsys)
    assert load_public_key(softhsm_token.uri("env-key")) == public


def test_hsm_keyref_problems(
    softhsm_token: SoftHSMToken, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(KeyFormatError, match="no PKCS#11 module"):
        _run(["keys", "generate", "--hsm", softhsm_token.uri("k")])
    monkeypatch.setenv("TURTLES_PKCS11_MODULE", softhsm_token.module)
    with pytest.raises(KeyFormatError, match="must name the token and the key"):
        _run(["keys", "generate", "--hsm", "pkcs11:object=k"])
    with pytest.raises(HSMError, match="needs a logged-in session"):
        _run(["keys", "generate", "--hsm", softhsm_token.uri("k")])
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("0000\n")
    with pytest.raises(HSMError, match="PIN rejected for token 'test'"):
        _run(["keys", "generate", "--hsm", softhsm_token.uri("k"), "--pin-file", str(wrong)])
    with pytest.raises(InputError, match="--out only"):
        _run(["keys", "generate", "--hsm", softhsm_token.uri("k"), "--passphrase-file", str(wrong)])
