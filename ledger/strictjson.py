"""Hooks for strict JSON parsing, shared by every JSON reader of the ledger and the node.

``json.loads(data, object_pairs_hook=no_duplicate_keys, parse_float=refuse_float)`` refuses
what the standard library accepts silently: a repeated key (the last one would win, so two
readers could see different values) and floating-point numbers (no record has one, and a
float has more than one spelling). Both raise ``ValueError``, which each caller turns into
its own error type, naming the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn


def no_duplicate_keys(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses an object with a repeated key."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def refuse_float(text: str) -> NoReturn:
    """``parse_float`` that refuses every floating-point number."""
    raise ValueError(f"floating-point number {text[:40]} is not allowed")


__all__ = ["no_duplicate_keys", "refuse_float"]
