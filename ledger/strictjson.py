"""Hooks for strict JSON parsing, shared by every JSON reader of the ledger and the node.

``json.loads(data, object_pairs_hook=no_duplicate_keys, parse_float=refuse_float)`` refuses
what the standard library accepts silently: a repeated key (the last one would win, so two
readers could see different values) and floating-point numbers (no record has one, and a
float has more than one spelling). Both raise ``ValueError``, which each caller turns into
its own error type, naming the input.

:func:`cached_loads` is ``json.loads`` with fixed hooks that builds its decoder once, not on
every call (``json.loads`` with any hook makes a new ``JSONDecoder`` and scanner each time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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


def cached_loads(**hooks: Any) -> Callable[[str], Any]:
    """A function equal to ``lambda text: json.loads(text, **hooks)`` for ``str`` input,
    with one decoder made here and reused (thread-safe: the decoder keeps no state between
    calls but a cache of key strings, which only saves memory)."""
    decoder = json.JSONDecoder(**hooks)

    def loads(text: str) -> Any:
        if text.startswith("\ufeff"):
            return json.loads(text, **hooks)  # raises the standard library's own BOM error
        return decoder.decode(text)

    return loads


__all__ = ["cached_loads", "no_duplicate_keys", "refuse_float"]
