"""A pytest plugin that scores the RELIABILITY scenarios (docs/THREAT_MODEL.md, issue item 8).

A reliability test declares the scenario ids it holds and what holding them means::

    @pytest.mark.scenario("S1", outcome="survived")   # the fault happened, nothing was lost
    @pytest.mark.scenario("S5", outcome="detected")   # the fault was refused with a clear error

A test that passes counts as one try with that outcome. A test that runs many tries (one per
injection point, per fuzz example, ...) records each through the ``score`` fixture instead::

    score.tried("S2", "detected", evidence="StorageError: write failed ...")
    score.tried("S1", "survived", lost=0)

A failed test adds a failed try; a test that fails as expected because of a known open bug
(``xfail(strict=True)``) adds a ``bug`` try. At the end of the session the plugin prints a
table (scenario, tries, survived, detected with one piece of evidence, data lost, failed,
known bugs) and writes it as JSON to ``$TURTLES_SCOREBOARD`` or, by default,
``build/reliability/scoreboard.json`` under the rootdir (``build/`` is ignored by git).

Tests elsewhere in the tree that hold a scenario are named in :data:`REFERENCES`; the plugin
marks them with the scenario too, so ``pytest -m "slow or scenario" tests`` runs them and the
table counts them. A referenced test that is not collected shows as such.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

OUTCOMES = ("survived", "detected")
PLUGIN_NAME = "turtles-scoreboard"

# node-id prefix -> (scenario ids, outcome): tests written by other suites that hold a row.
REFERENCES: dict[str, tuple[tuple[str, ...], str]] = {
    "tests/ledger/test_log.py::test_a_second_process_gets_a_clear_lock_error": (("S6",), "detected"),
    "tests/ledger/test_log.py::test_opening_with_another_key_is_refused": (("C3",), "detected"),
    "tests/ledger/test_log.py::test_concurrent_duplicates_get_one_index": (("L4",), "survived"),
    "tests/ledger/test_log.py::test_replayed_envelope_is_idempotent": (("L4",), "survived"),
    "tests/ledger/test_store_audit.py::test_exception_mid_batch_leaves_the_store_unchanged": (("S4",), "survived"),
    "tests/ledger/test_store_audit.py::test_audit_detects": (("S5",), "detected"),
    "tests/ledger/test_crash.py::test_sigkill_at_random_instants": (("S1",), "survived"),
    "tests/ledger/test_entry.py::test_mutating_any_field_changes_the_leaf_or_fails": (("L5",), "detected"),
    "tests/ledger/test_entry.py::test_every_byte_flip_changes_the_leaf_or_fails": (("L5",), "detected"),
    "tests/ledger/test_entry.py::test_malleated_ecdsa_signature_keeps_the_record_id": (("C2",), "survived"),
    "tests/ledger/test_keys.py::test_ecdsa_edge_cases_are_refused": (("C2",), "detected"),
    "tests/ledger/test_keys.py::test_ecdsa_missing_leading_zero_is_refused": (("C2",), "detected"),
    "tests/ledger/test_keys.py::test_scheme_confusion_is_refused": (("C3",), "detected"),
    "tests/ledger/test_envelope.py::test_non_der_ecdsa_signature_is_refused": (("C2",), "detected"),
    "tests/ledger/test_encoding.py::test_bomb_with_huge_declared_length_fails_fast": (("P2",), "detected"),
    "tests/ledger/test_encoding.py::test_nested_array_headers_do_not_reserve_declared_lengths": (("P2",), "detected"),
    "tests/ledger/test_encoding.py::test_very_deep_nesting_fails_fast": (("P2",), "detected"),
    "tests/ledger/test_merkle.py::test_inclusion_probe": (("L1",), "detected"),
    "tests/ledger/test_merkle.py::test_consistency_probe": (("L1",), "detected"),
    "tests/ledger/test_merkle.py::test_interior_node_posed_as_leaf_is_rejected": (("L1",), "detected"),
    "tests/ledger/test_merkle.py::test_mutated_inclusion_proof_is_rejected": (("L1",), "detected"),
    "tests/ledger/test_merkle.py::test_mutated_consistency_proof_is_rejected": (("L1",), "detected"),
    "tests/ledger/test_hsm.py::test_concurrent_signing_through_one_context": (("H1",), "survived"),
    "tests/ledger/test_hsm.py::test_fork_after_init_child_reinitialises_and_signs": (("H2",), "survived"),
    "tests/ledger/test_hsm.py::test_session_closed_under_the_worker_is_reopened": (("W6",), "survived"),
    "tests/ledger/test_hsm.py::test_module_finalised_under_the_worker_is_reinitialised": (("W6",), "survived"),
    "tests/ledger/test_hsm.py::test_already_logged_in_is_success_and_a_lost_login_is_restored": (("W6",), "survived"),
    "tests/ledger/test_hsm.py::test_wrong_pin_is_a_clear_error_without_the_pin": (("W6",), "detected"),
    "tests/ledger/test_hsm.py::test_private_key_cannot_be_extracted": (("H1",), "detected"),
    "tests/ledger/test_hsm.py::test_retry_is_bounded": (("W6",), "detected"),
}


@dataclass
class Row:
    """The score of one scenario."""

    tries: int = 0
    survived: int = 0
    detected: int = 0
    lost: int = 0
    failed: int = 0
    bugs: int = 0
    evidence: list[str] = field(default_factory=list)
    tests: set[str] = field(default_factory=set)

    def add(self, outcome: str, evidence: str, lost: int, test: str) -> None:
        self.tries += 1
        self.lost += lost
        self.tests.add(test)
        if outcome == "survived":
            self.survived += 1
        elif outcome == "detected":
            self.detected += 1
        elif outcome == "bug":
            self.bugs += 1
        else:
            self.failed += 1
        if evidence and len(self.evidence) < 3 and evidence not in self.evidence:
            self.evidence.append(evidence[:200])


class Recorder:
    """What the ``score`` fixture hands a test: records its tries of its scenarios."""

    def __init__(self, board: Scoreboard, item: pytest.Item) -> None:
        self._board = board
        self._item = item
        self.count = 0

    def tried(self, scenario: str, outcome: str, *, evidence: str = "", lost: int = 0) -> None:
        """One try of ``scenario``: ``outcome`` is "survived" or "detected"; ``lost`` counts
        acknowledged records or signed checkpoints missing afterwards (must stay 0)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        self._board.row(scenario).add(outcome, evidence, lost, self._item.nodeid)
        self.count += 1

    def bug(self, scenario: str, evidence: str, *, lost: int = 0) -> None:
        """One try that hit a known, reported core bug (held by a strict xfail test)."""
        self._board.row(scenario).add("bug", evidence, lost, self._item.nodeid)
        self.count += 1

    def failed(self, scenario: str, evidence: str, *, lost: int = 0) -> None:
        """One try that went wrong (the test should fail too)."""
        self._board.row(scenario).add("failed", evidence, lost, self._item.nodeid)
        self.count += 1


class Scoreboard:
    """The plugin object: collects tries, prints and writes the table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, Row] = {}
        self.recorders: dict[str, Recorder] = {}
        self.referenced: set[str] = set()

    def row(self, scenario: str) -> Row:
        return self.rows.setdefault(scenario, Row())

    # -- hooks --

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # tryfirst: the marks must be on before `-m` deselects anything.
        for item in items:
            for prefix, (ids, outcome) in REFERENCES.items():
                if item.nodeid.startswith(prefix) and not item.get_closest_marker("scenario"):
                    item.add_marker(pytest.mark.scenario(*ids, outcome=outcome))
                    self.referenced.add(prefix)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome: Any = yield
        report: pytest.TestReport = outcome.get_result()
        markers = list(item.iter_markers("scenario"))
        if not markers or report.when not in ("setup", "call"):
            return
        if report.when == "setup" and report.passed:
            return
        recorder = self.recorders.get(item.nodeid)
        recorded = recorder.count if recorder else 0
        for marker in markers:
            declared = marker.kwargs.get("outcome", "survived")
            for scenario in marker.args:
                if hasattr(report, "wasxfail"):
                    self.row(scenario).add("bug", str(report.wasxfail), 0, item.nodeid)
                elif report.failed:
                    self.row(scenario).add("failed", _short(report), 0, item.nodeid)
                elif report.passed and not recorded:
                    self.row(scenario).add(declared, "", 0, item.nodeid)
                elif report.skipped:
                    self.row(scenario).add("failed", "skipped (tests must not skip)", 0, item.nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.write_sep("=", "reliability scoreboard")
        head = f"{'scenario':<9}{'tries':>7}{'survived':>10}{'detected':>10}{'lost':>6}{'failed':>8}{'bugs':>6}  evidence"
        tr.write_line(head)
        for scenario in sorted(self.rows, key=_order):
            r = self.rows[scenario]
            evidence = r.evidence[0] if r.evidence else ""
            tr.write_line(f"{scenario:<9}{r.tries:>7}{r.survived:>10}{r.detected:>10}{r.lost:>6}"
                          f"{r.failed:>8}{r.bugs:>6}  {evidence[:90]}")
        missing = sorted(set(REFERENCES) - self.referenced)
        if missing and self.config.getoption("markexpr", ""):
            tr.write_line(f"referenced tests not collected: {', '.join(missing)}")
        path = self.write()
        tr.write_line(f"scoreboard written to {path}")
        if any(r.lost for r in self.rows.values()):
            tr.write_line("DATA LOST in at least one scenario: see the 'lost' column", red=True, bold=True)

    def write(self) -> Path:
        target = os.environ.get("TURTLES_SCOREBOARD")
        path = Path(target) if target else Path(self.config.rootpath) / "build" / "reliability" / "scoreboard.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            scenario: {
                "tries": r.tries, "survived": r.survived, "detected": r.detected, "lost": r.lost,
                "failed": r.failed, "known_bugs": r.bugs, "evidence": r.evidence, "tests": sorted(r.tests),
            }
            for scenario, r in sorted(self.rows.items(), key=lambda kv: _order(kv[0]))
        }
        path.write_text(json.dumps(body, indent=2) + "\n")
        return path


def _order(scenario: str) -> tuple[str, int]:
    digits = "".join(c for c in scenario if c.isdigit())
    return scenario.rstrip("0123456789"), int(digits or 0)


def _short(report: pytest.TestReport) -> str:
    text = str(report.longrepr or "")
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return (lines[0][2:].strip() if lines else text.splitlines()[-1] if text else "failed")[:200]


def register(config: pytest.Config) -> Scoreboard:
    """Register the plugin (once per session) and the ``scenario`` marker."""
    config.addinivalue_line(
        "markers",
        'scenario(*ids, outcome="survived"|"detected"): the RELIABILITY scenario(s) a test holds',
    )
    board = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if board is None:
        board = Scoreboard(config)
        config.pluginmanager.register(board, PLUGIN_NAME)
    assert isinstance(board, Scoreboard)
    return board


@pytest.fixture
def score(request: pytest.FixtureRequest) -> Recorder:
    """Record individual tries of the test's scenarios (see the module doc)."""
    board = register(request.config)
    recorder = Recorder(board, request.node)
    board.recorders[request.node.nodeid] = recorder
    return recorder


__all__ = ["OUTCOMES", "REFERENCES", "Recorder", "Scoreboard", "register", "score"]
