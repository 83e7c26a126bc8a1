"""Shared fixtures: a real SoftHSM2 token per test, and a PKCS#11 context on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.hsm import Pkcs11Context
from tests.softhsm import SoftHSMToken, make_token


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHSMToken:
    """A fresh token (label ``test``, PIN ``1234``), with ``SOFTHSM2_CONF`` pointing at it.

    The turtles PKCS#11 variables are cleared so that a test sees only what it sets.
    """
    token = make_token(tmp_path / "softhsm")
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf_path))
    for name in ("TURTLES_PKCS11_MODULE", "TURTLES_PKCS11_PIN", "TURTLES_KEY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    return token


@pytest.fixture
def pkcs11_context(softhsm_token: SoftHSMToken) -> Iterator[Pkcs11Context]:
    """A context on the test's SoftHSM2 module, closed (and the module finalised) afterwards."""
    with Pkcs11Context(softhsm_token.module) as context:
        yield context
