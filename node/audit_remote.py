"""Audit a node's log over HTTP (``turtles log audit --node URL``).

The remote log is pulled, page by page, through :class:`ledger.mirror.Mirror` into a
temporary store -- the same verified path replication uses (signed checkpoint, chain,
consistency proofs, every signature and admission re-checked) -- and the copy is then
audited from scratch with :func:`ledger.audit.audit_log`. Nothing the node says is
trusted beyond its signature: pass ``vkey`` to pin the log key instead of taking the one
the node announces.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path

from ledger.audit import AuditReport, audit_log
from ledger.checkpoint import Checkpoint, open_note
from ledger.errors import NoteError
from ledger.holdings import LogGate
from ledger.log import logged_from_entry
from ledger.mirror import Mirror
from ledger.store import Database
from ledger.trust import RootsPolicy
from node.client import NodeClient

PAGE = 256


def audit_node(
    url: str, *, vkey: str | None = None, progress: Callable[[int, int], None] | None = None,
    client: NodeClient | None = None,
) -> AuditReport:
    """Fetch and fully audit the log a node owns.

    Raises:
        NoteError: the node's checkpoint is not signed by ``vkey`` (or by the key it announces).
        ConsistencyError, CorruptionError: the node's data does not verify (with evidence).
    """
    client = client or NodeClient(url)
    info = client.log_info()
    origin = str(info["origin"])
    key = vkey or str(info["vkey"])
    if vkey is not None and vkey != info["vkey"]:
        raise NoteError(f"node {url} announces log key {info['vkey']}, not the pinned {vkey}")
    note = client.checkpoint()
    size = Checkpoint.parse(open_note(note, key)).size
    with tempfile.TemporaryDirectory(prefix="turtles-audit-") as tmp, Database(Path(tmp)) as db:
        store = db.log(origin)
        Mirror.create(store, vkey=key)
        mirror = Mirror(store, vkey=key, gate=LogGate(RootsPolicy.any_self_signed()))
        done = 0
        while done < size:
            page = client.entries(done, min(PAGE, size - done))["entries"]
            raws = [base64.b64decode(e["entry"]) for e in page]
            if not raws:
                raise NoteError(f"node {url} served no entries at {done} below its checkpoint size {size}")
            proof = [bytes.fromhex(h) for h in client.consistency_proof(done + len(raws), size)["proof"]]
            while raws:  # a key record ends an apply; the same proof still holds for the rest
                took = mirror.apply(note=note, entries=raws, proof=proof, source=url)
                raws, done = raws[took:], done + took
            if progress:
                progress(done, size)
        return audit_log(
            store, vkey=key,
            new_gate=lambda: LogGate(RootsPolicy.any_self_signed()),
            prepare=lambda gate, entry: logged_from_entry(gate, origin, entry),
        )


__all__ = ["audit_node"]
