"""The answers of the write endpoints, as the bytes they send.

:class:`Accepted` is the body of ``POST /v1/entries`` (201, or 409 for a duplicate) and
:class:`BatchOutcome` the body of ``POST /v1/entries:batch``. Both build their JSON directly
(``to_json``), byte for byte what ``json.dumps(to_dict())`` writes: a batch answer is mostly
hex proofs, and the generic encoder costs more than the rest of the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from ledger.errors import TurtlesError
from ledger.log import AppendResult
from node.proofs import proof_text

_json_str = lru_cache(maxsize=8)(json.dumps)  # a batch's results share one checkpoint note


@dataclass(frozen=True)
class Accepted:
    """A durable append: where it is, the checkpoint covering it, and the proof."""

    result: AppendResult
    inclusion_proof: list[bytes]
    proof_json: str | None = None
    """The proof as :meth:`node.proofs.ProofSet.text` built it (None: built from the list)."""

    def to_dict(self) -> dict[str, object]:
        """JSON body of ``POST /v1/entries`` (201 new, 409 duplicate)."""
        r = self.result
        return {
            "index": r.index,
            "leaf_hash": r.leaf_hash.hex(),
            "checkpoint": r.checkpoint,
            "size": r.size,
            "inclusion_proof": [h.hex() for h in self.inclusion_proof],
        }

    def to_json(self) -> bytes:
        """:meth:`to_dict` as the bytes ``json.dumps`` writes for it, built directly."""
        r = self.result
        proof = self.proof_json if self.proof_json is not None else proof_text(self.inclusion_proof)
        return (
            f'{{"index": {r.index}, "leaf_hash": "{r.leaf_hash.hex()}", "checkpoint": '
            f'{_json_str(r.checkpoint)}, "size": {r.size}, "inclusion_proof": [{proof}]}}'
        ).encode()


@dataclass(frozen=True)
class BatchOutcome:
    """A batch's answers in order, with proofs against one checkpoint of tree ``size``.

    ``proof_json`` (optional) holds each proof as :meth:`node.proofs.ProofSet.text` built
    it, so :meth:`to_json` hex-encodes nothing twice.
    """

    checkpoint: str
    size: int
    results: list[AppendResult | TurtlesError]
    proofs: list[list[bytes]]
    proof_json: list[str] | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON body of ``POST /v1/entries:batch``: per-envelope status, index and proof."""
        items: list[dict[str, object]] = []
        for r, proof in zip(self.results, self.proofs, strict=True):
            if isinstance(r, AppendResult):
                items.append({
                    "status": 409 if r.duplicate else 201,
                    "index": r.index,
                    "leaf_hash": r.leaf_hash.hex(),
                    "duplicate": r.duplicate,
                    "inclusion_proof": [h.hex() for h in proof],
                })
            else:
                items.append({"status": r.http_status, **r.to_dict()})
        return {"checkpoint": self.checkpoint, "size": self.size, "results": items}

    def render(self) -> None:
        """Build :meth:`to_json`'s bytes now and keep them (e.g. in a pool thread, so that
        the event loop only sends them)."""
        object.__setattr__(self, "_json", self._render())

    def to_json(self) -> bytes:
        """:meth:`to_dict` as the bytes ``json.dumps`` writes for it, appended results built
        directly (a batch answer is mostly hex proofs: the generic encoder costs more)."""
        rendered: bytes | None = getattr(self, "_json", None)  # a cache, not a field: eq ignores it
        return rendered if rendered is not None else self._render()

    def _render(self) -> bytes:
        texts = self.proof_json
        if texts is None:
            texts = [proof_text(p) for p in self.proofs]
        parts = [f'{{"checkpoint": {_json_str(self.checkpoint)}, "size": {self.size}, "results": [']
        append = parts.append
        sep = ""
        for r, text in zip(self.results, texts, strict=True):
            if isinstance(r, AppendResult):
                if r.duplicate:
                    append(f'{sep}{{"status": 409, "index": {r.index}, "leaf_hash": "{r.leaf_hash.hex()}", '
                           f'"duplicate": true, "inclusion_proof": [{text}]}}')
                else:
                    append(f'{sep}{{"status": 201, "index": {r.index}, "leaf_hash": "{r.leaf_hash.hex()}", '
                           f'"duplicate": false, "inclusion_proof": [{text}]}}')
            else:
                append(sep + json.dumps({"status": r.http_status, **r.to_dict()}))
            sep = ", "
        append("]}")
        return "".join(parts).encode()


__all__ = ["Accepted", "BatchOutcome"]
