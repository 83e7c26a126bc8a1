"""A SoftHSM2 token with one key, for the benchmarks that sign through PKCS#11.

SoftHSM2 reads ``SOFTHSM2_CONF`` at ``C_Initialize`` and forgets everything at
``C_Finalize`` (see ``tests/softhsm.py``): each use makes its own token directory, points
the variable at it, opens a context and closes it again, so uses may follow each other in
one process (never overlap).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench._harness import Context
from ledger.hsm import Pkcs11Context, Pkcs11Signer, generate_keypair
from ledger.keyref import ENV_MODULE, ENV_PIN
from ledger.keys import Algorithm
from tests.softhsm import make_token

HSM_KEY_LABEL = "bench"


@contextmanager
def softhsm_signer(ctx: Context, name: str, alg: Algorithm) -> Iterator[tuple[Pkcs11Context, Pkcs11Signer, str]]:
    """A fresh token with one ``alg`` key labelled ``bench``: (context, signer, pin)."""
    token = make_token(ctx.scratch(f"hsm-{name}"), label=name)
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(token.conf_path)
    context = Pkcs11Context(token.module)
    try:
        generate_keypair(context, token_label=name, label=HSM_KEY_LABEL, alg=alg, pin=token.pin)
        signer = Pkcs11Signer(context, token.uri(HSM_KEY_LABEL), pin=token.pin)
        yield context, signer, token.pin
    finally:
        context.close()
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old


def node_token(ctx: Context, name: str) -> tuple[str, dict[str, str]]:
    """A fresh token with an Ed25519 key for a node's log: its ``pkcs11:`` KEYREF and the
    environment a node process needs to reach it (``SOFTHSM2_CONF``, module, PIN)."""
    with softhsm_signer(ctx, name, "ed25519") as (context, signer, pin):
        env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], ENV_MODULE: context.module, ENV_PIN: pin}
        return signer.uri.format(), env
