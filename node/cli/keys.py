"""``turtles keys``: make signing keys, in a PEM file or inside an HSM token.

``turtles keys generate (--out FILE | --hsm KEYREF) [--alg ed25519|p256]`` prints the new key's
id on the first line, then its public key PEM. Errors are raised as ledger errors; the CLI's
main catches them and prints one line.

Invariants: a private key file is created with mode 0600 and never replaces an existing file
(it is written aside, then hard-linked into place, which fails if the name is taken); its
``.pub`` companion is written the same way. An HSM key is generated inside the token and never
leaves it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Any

from ledger.errors import InputError, KeyFormatError
from ledger.keys import ALGORITHMS, Algorithm, PublicKey, SoftwareSigner


def add_pkcs11_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--pkcs11-module`` and ``--pin-file`` (defaults: the environment, when absent)."""
    parser.add_argument(
        "--pkcs11-module",
        metavar="PATH",
        help="PKCS#11 module for pkcs11: KEYREFs (default: $TURTLES_PKCS11_MODULE)",
    )
    parser.add_argument(
        "--pin-file",
        metavar="FILE",
        help="file whose first line is the token PIN (default: the PIN in $TURTLES_PKCS11_PIN)",
    )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``keys`` verb group (``keys generate``) to a ``turtles`` parser."""
    keys = subparsers.add_parser("keys", help="make signing keys", description="Make signing keys.")
    verbs = keys.add_subparsers(dest="keys_verb", metavar="VERB", required=True)
    generate = verbs.add_parser(
        "generate",
        help="generate a key pair in a PEM file or an HSM token",
        description="Generate a key pair; print its key id and public key PEM.",
    )
    where = generate.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", metavar="FILE", help="write a PKCS#8 PEM private key (0600) and FILE.pub"
    )
    where.add_argument(
        "--hsm", metavar="KEYREF", help="generate inside the token: pkcs11:token=T;object=LABEL"
    )
    generate.add_argument("--alg", choices=ALGORITHMS, default="ed25519", help="default: ed25519")
    generate.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="encrypt the --out key with the first line of FILE (surrounding blanks ignored)",
    )
    add_pkcs11_options(generate)
    generate.set_defaults(func=generate_command)


def generate_command(args: argparse.Namespace) -> int:
    """Handle ``keys generate``; returns the exit status (0)."""
    from ledger.keyref import read_secret_file  # lazy: keeps CLI start-up fast (issue 7)

    alg: Algorithm = args.alg
    if args.hsm is not None:
        if args.passphrase_file is not None:
            raise InputError(
                "--passphrase-file applies to --out only: an HSM key never leaves the token"
            )
        public = _generate_in_token(
            args.hsm, alg=alg, module=args.pkcs11_module, pin_file=args.pin_file
        )
    else:
        passphrase = None
        if args.passphrase_file is not None:
            passphrase = read_secret_file(args.passphrase_file, what="passphrase").encode("utf-8")
        public = _generate_to_file(args.out, alg=alg, passphrase=passphrase)
    sys.stdout.write(f"{public.key_id}\n{public.to_pem().decode('ascii')}")
    return 0


def _generate_in_token(
    keyref: str, *, alg: Algorithm, module: str | None, pin_file: str | None
) -> PublicKey:
    from ledger.hsm import (  # lazy: keeps CLI start-up fast (issue 7)
        Pkcs11Context,
        generate_keypair,
    )
    from ledger.keyref import resolve_pkcs11_access

    access = resolve_pkcs11_access(keyref, module=module, pin_file=pin_file)
    uri = access.uri
    if uri.token is None or not uri.object:
        raise KeyFormatError(
            f"--hsm {uri} must name the token and the key: pkcs11:token=T;object=LABEL"
        )
    with Pkcs11Context(access.module) as context:
        return generate_keypair(
            context, token_label=uri.token, label=uri.object, alg=alg, pin=access.pin, key_id=uri.id
        )


def _generate_to_file(path: str, *, alg: Algorithm, passphrase: bytes | None) -> PublicKey:
    pub_path = path + ".pub"
    for target in (path, pub_path):
        if os.path.lexists(target):
            raise InputError(f"{target} already exists: refusing to overwrite it", path=target)
    signer = SoftwareSigner.generate(alg)
    _create(path, signer.to_pem(passphrase), mode=0o600)
    try:
        _create(pub_path, signer.public_key.to_pem(), mode=0o644)
    except BaseException:
        os.unlink(path)  # no private key without its public half
        raise
    return signer.public_key


def _create(path: str, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a new file ``path``: complete and synced, or not there at all."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".turtles-key-")
    except OSError as e:
        raise InputError(f"cannot write into {directory}: {e.strerror}", path=path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if path exists, unlike rename
    except FileExistsError as e:
        raise InputError(f"{path} already exists: refusing to overwrite it", path=path) from e
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}", path=path) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


__all__ = ["add_pkcs11_options", "generate_command", "register"]
