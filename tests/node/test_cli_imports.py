"""The CLI starts lean: what ``turtles`` imports before it runs a verb.

``turtles verify --bundle`` must answer from a cold start within 300 ms (issue 7;
``bench_provenance`` ``verify_cli_cold_ms``), most of which is imports. The node's server
(aiohttp, asyncio), the store (plyvel), PKCS#11 and the bundle builder (which reads a
store) load only in the verbs that use them. Checked in a fresh interpreter, as a user's
shell starts one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "asyncio", "plyvel", "pkcs11", "multiprocessing", "ledger.store", "ledger.bundle_build",
         "ledger.holdings", "node.app")


def loaded_after(code: str) -> dict[str, bool]:
    """Which of :data:`HEAVY` a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          check=True)
    loaded: dict[str, bool] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("code", [
    "import node.cli.main",
    "from node.cli.main import build_parser; build_parser().parse_args(['verify', 'x', '--policy', 'p', '--bundle', 'b'])",
    "from ledger.verify import verify_bundle",
])
def test_the_cli_and_the_bundle_verifier_load_nothing_heavy(code: str) -> None:
    assert not [m for m, held in loaded_after(code).items() if held]


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: the same probe finds the store once a verb needs it."""
    assert loaded_after("import ledger.bundle_build")["ledger.store"]
