"""Reliability suite: registers the scoreboard plugin and shares prepared worlds.

Run it with ``make reliability`` (``pytest -m "slow or scenario" tests``) or directly:
``pytest tests/reliability``. ``TURTLES_FAULTS_FULL=1`` runs every syscall injection point
instead of an even sample (see ``test_syscall_faults.py``).
"""

from __future__ import annotations

import pytest

from tests.reliability.scoreboard import register, score

__all__ = ["score"]


def pytest_configure(config: pytest.Config) -> None:
    register(config)
