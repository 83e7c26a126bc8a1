"""Fuzz suite: shares the reliability scoreboard (the ``scenario`` marker and ``score``)."""

from __future__ import annotations

import pytest

from tests.reliability.scoreboard import register, score

__all__ = ["score"]


def pytest_configure(config: pytest.Config) -> None:
    register(config)
