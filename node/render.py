"""Rendering for people and tools: JSON views of entries, lineage DAGs and verdict chains.

* :func:`entry_view`, :func:`record_view`, :func:`key_view` -- JSON views of log entries and
  records as the read API serves them. The view is derived from the exact leaf bytes, which
  are served alongside (``entry``, base64), so a client can always re-check it.
* :func:`lineage_tree`, :func:`lineage_dot` -- a lineage (``Lineage.to_dict()``, as
  ``GET /v1/trace`` serves it) as an indented tree or as Graphviz DOT.
* :func:`verdict_text`, :func:`verdict_dot` -- a verdict (``Verdict.to_dict()``) as the
  explicit chain artefact -> attestation -> signer -> delegations -> root.
* :func:`render_image` -- DOT to SVG/PNG through the ``dot`` binary.

Invariants: renderers take the ``to_dict()`` form of a result object (the same form the
HTTP API and ``--json`` emit) and only lay it out; no verdict is re-derived here. Trusted,
transitive-only, untrusted and missing nodes always look different (tree markers; DOT
colours and line styles), and every marker is explained in a legend.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.attestation import Attestation
from ledger.entry import Entry, Record, parse_record
from ledger.errors import InputError, TurtlesError, UnavailableError
from ledger.keys import PublicKey


def key_view(key: PublicKey) -> dict[str, str]:
    """A public key as ``{"id", "alg", "pem"}``."""
    return {"id": key.key_id, "alg": key.alg, "pem": key.to_pem().decode()}


def _value(value: Any) -> Any:
    if isinstance(value, PublicKey):
        return key_view(value)
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def record_view(record: Record) -> dict[str, Any]:
    """A record as JSON: ``kind`` plus its fields (keys as id + PEM; attestations: the statement)."""
    if isinstance(record, Attestation):
        return {
            "kind": "attestation",
            "predicate_type": record.predicate_type,
            "subjects": [{"name": a.name, "sha256": a.sha256} for a in record.subjects],
            "materials": [{"name": a.name, "sha256": a.sha256} for a in record.materials],
            "builder": record.builder,
            "statement": record.statement,
        }
    view: dict[str, Any] = {"kind": record.kind}
    for f in dataclasses.fields(record):
        view[f.name] = _value(getattr(record, f.name))
    return view


def entry_view(entry: Entry, *, origin: str, signers: list[str]) -> dict[str, Any]:
    """The JSON of ``GET /v1/entries/{index}``.

    ``record`` is null with a ``record_error`` when the payload no longer parses under
    this node's rules (the leaf is served regardless: it is what the log committed to).
    """
    view: dict[str, Any] = {
        "origin": origin,
        "index": entry.seq,
        "ts": entry.ts,
        "leaf_hash": entry.leaf_hash.hex(),
        "prev": entry.prev.hex(),
        "entry": base64.b64encode(entry.raw).decode(),
        "envelope": entry.envelope.to_dict(),
        "signers": signers,
    }
    try:
        view["record"] = record_view(parse_record(entry.envelope))
    except TurtlesError as e:
        view["record"] = None
        view["record_error"] = e.message
    return view




# --- lineage and verdicts ----------------------------------------------------------------------

MARKERS: Mapping[str, str] = {"trusted": "✔", "transitive": "≈", "untrusted": "✘", "missing": "?"}
_STATUS_TEXT = {
    "trusted": "trusted (delegated)", "transitive": "trusted only transitively",
    "untrusted": "not trusted", "missing": "no attestation",
}
_DOT_STYLE = {
    "trusted": ('#1a7f37', '#dafbe1', "rounded,filled,bold"),
    "transitive": ('#9a6700', '#fff8c5', "rounded,filled,dashed"),
    "untrusted": ('#cf222e', '#ffebe9', "rounded,filled,bold"),
    "missing": ('#6e7781', '#f6f8fa', "rounded,filled,dotted"),
}
IMAGE_FORMATS = ("svg", "png")


def short(ident: str | None, n: int = 12) -> str:
    """``sha256:<first n hex>…`` (or the text unchanged when it is not an id)."""
    if not ident:
        return "-"
    if ident.startswith("sha256:") and len(ident) > 7 + n:
        return ident[: 7 + n] + "…"
    return ident


def _time(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _node_line(node: Mapping[str, Any]) -> str:
    status, v = node["status"], node["verdict"]
    names = ", ".join(node["names"]) or "(unnamed)"
    line = f"{MARKERS[status]} {names}  {short(node['digest'])}  {_STATUS_TEXT[status]}"
    if v.get("signer"):
        line += f"; signed by {short(v['signer'])}" + (f" ({v['org']})" if v.get("org") else "")
    if status in ("trusted", "transitive") and v.get("weakest"):
        line += f"; weakest link: {v['weakest'].split(':', 1)[0]}"
    elif status == "untrusted" and v.get("reasons"):
        line += f": {v['reasons'][0]}"
    origins = sorted({f"{p['origin']}#{p['index']}" for a in node["attestations"] for p in a["positions"][:1]})
    if origins:
        line += "  [" + ", ".join(origins[:3]) + (" …" if len(origins) > 3 else "") + "]"
    return line


def lineage_tree(doc: Mapping[str, Any]) -> str:
    """A lineage as an indented tree: each artefact once; later uses say "(shown above)"."""
    nodes = {n["digest"]: n for n in doc["nodes"]}
    children: dict[str, list[Mapping[str, Any]]] = {}
    for e in doc["edges"]:
        children.setdefault(e["from"], []).append(e)
    out: list[str] = []
    shown: set[str] = set()
    stack: list[tuple[str, str, str, Mapping[str, Any] | None]] = [(doc["subject"], "", "", None)]
    while stack:
        digest, lead, indent, edge = stack.pop()
        node = nodes.get(digest)
        if edge is not None and edge["cycle"]:
            out.append(f"{lead}↻ {edge['name'] or short(digest)}  {short(digest)}  cycle: an ancestor, not followed")
            continue
        if node is None:
            out.append(f"{lead}… {short(digest)}  not visited")
            continue
        if digest in shown:
            out.append(f"{lead}{MARKERS[node['status']]} {', '.join(node['names']) or short(digest)}  "
                       f"{short(digest)}  (shown above)")
            continue
        shown.add(digest)
        out.append(lead + _node_line(node) + ("" if node["expanded"] else "  … not expanded"))
        kids = children.get(digest, [])
        for i in range(len(kids) - 1, -1, -1):
            last = i == len(kids) - 1
            stack.append((kids[i]["to"], indent + ("└── " if last else "├── "), indent + ("    " if last else "│   "), kids[i]))
    out.append("")
    out.append("legend: ✔ trusted (delegated)  ≈ trusted only transitively  ✘ not trusted  "
               "? no attestation  ↻ cycle  … not expanded")
    counts = doc.get("counts", {})
    out.append("nodes: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("trusted", "transitive", "untrusted", "missing")))
    if doc.get("policy") is None:
        out.append("judged structurally (every root counts as an anchor); pass --policy for your verdict")
    if doc["issues"]:
        out.append("issues:")
        out.extend(f"  {i['kind']}: {i['message']}" for i in doc["issues"])
    return "\n".join(out) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lineage_dot(doc: Mapping[str, Any]) -> str:
    """A lineage as Graphviz DOT: colour and line style by status, cycle edges in red."""
    lines = [
        "digraph lineage {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#57606a"];',
    ]
    for n in doc["nodes"]:
        status, v = n["status"], n["verdict"]
        color, fill, style = _DOT_STYLE[status]
        label = [", ".join(n["names"]) or "(unnamed)", short(n["digest"]), f"{MARKERS[status]} {_STATUS_TEXT[status]}"]
        if v.get("org"):
            label.append(f"signer org: {v['org']}")
        if not n["expanded"]:
            label.append("(not expanded)")
        penwidth = "2" if status in ("trusted", "untrusted") else "1"
        lines.append(f"  {_dot_str(n['digest'])} [label={_dot_str(chr(10).join(label))}, color={_dot_str(color)}, "
                     f"fillcolor={_dot_str(fill)}, style={_dot_str(style)}, penwidth={penwidth}];")
    known = {n["digest"] for n in doc["nodes"]}
    for e in doc["edges"]:
        if e["to"] not in known:
            lines.append(f"  {_dot_str(e['to'])} [label={_dot_str(short(e['to']))}, style=dashed];")
        attrs = f"label={_dot_str(e['name'] or '')}"
        if e["cycle"]:
            attrs += ', color="#cf222e", fontcolor="#cf222e", style=dashed, constraint=false, xlabel="cycle"'
        lines.append(f"  {_dot_str(e['from'])} -> {_dot_str(e['to'])} [{attrs}];")
    lines.append("  subgraph cluster_legend {")
    lines.append('    label="legend"; fontname="Helvetica"; fontsize=9; color="#d0d7de";')
    for status, (color, fill, style) in _DOT_STYLE.items():
        lines.append(f"    {_dot_str('legend_' + status)} [label={_dot_str(_STATUS_TEXT[status])}, "
                     f"color={_dot_str(color)}, fillcolor={_dot_str(fill)}, style={_dot_str(style)}];")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def hop_text(h: Mapping[str, Any]) -> str:
    kind, scope = h["kind"], h.get("scope") or {}
    purposes = ",".join(scope.get("purposes", []))
    if kind == "attestation":
        return (f"attestation of {', '.join(h.get('names', [])) or short(h['to'])} "
                f"signed by {short(h['from'])}" + (f" ({h['org_from']})" if h.get("org_from") else ""))
    if kind == "delegated":
        levels = scope.get("artefacts") or []
        globs = " ".join(levels[-1]) if levels else "*"
        return (f"[delegated] {short(h['from'])} -> {short(h['to'])} for {h.get('org_to') or '?'}: "
                f"{globs} [{purposes}]" + (f", expires {_time(h['not_after'])}" if h.get("not_after") else ""))
    if kind == "transitive":
        return f"[transitive] {short(h['from'])} endorses root {short(h['to'])} of {h.get('org_to') or '?'} [{purposes}]"
    if kind == "rotation":
        return f"[rotation] {short(h['from'])} handed over to {short(h['to'])}"
    held = "HSM-held" if h.get("hsm") else "software key"
    return f"root {short(h['to'])} of {h.get('org_to') or '?'} ({held})"


def verdict_text(doc: Mapping[str, Any]) -> str:
    """A verdict as the explicit chain, artefact first, each hop with its log and proof."""
    head = "TRUSTED" if doc["trusted"] else "NOT TRUSTED"
    if doc["trusted"]:
        head += f" ({doc['trust']} trust)"
    out = [f"{head}: {doc['artefact']}", f"  checked at {_time(doc['at'])}"]
    path = doc["path"]
    if path:
        subject = path[0]
        names = ", ".join(subject.get("names", []))
        out.append("path (artefact -> root):" if doc["trusted"] else "closest candidate path (artefact -> root):")
        out.append(f"  artefact {doc['artefact']}" + (f" ({names})" if names else ""))
        for h in path:
            join = f"  ⇄ join: crosses from {h['org_from']} to {h['org_to']}" if h.get("join") else ""
            pos = h["position"]
            inc = h.get("inclusion")
            proof = (f"included in tree of {inc['tree_size']} (root {inc['root'][:12]}…)" if inc
                     else "no proof: its log is not trusted")
            out.append(f"  <- {hop_text(h)}{join}")
            out.append(f"       record {pos['origin']}#{pos['index']} logged {_time(pos['ts'])}; {proof}")
    w = doc.get("weakest_link")
    if w is not None and path:
        hop = len(path) - 1 - w["hop"]
        out.append(f"weakest link: step {hop + 1} ({w['criterion']}): {w['why']}")
    if doc["logs"]:
        out.append("logs:")
        for g in doc["logs"]:
            cos = ", ".join(f"{c['name']} at {c['time']}" for c in g["cosignatures"])
            out.append(f"  {g['origin']} tree {g['tree_size']}, key {short(g['key_id'])}: {g['basis']}: {g['why']}"
                       + (f"; cosigned by {cos}" if cos else ""))
    if doc["reasons"]:
        out.append("reasons:")
        out.extend(f"  - {r}" for r in doc["reasons"])
    if doc["notes"]:
        out.append("notes:")
        out.extend(f"  - {n}" for n in doc["notes"])
    if doc.get("evidence_time") is not None:
        out.append(f"evidence known fresh as of {_time(doc['evidence_time'])}; revocations logged after the "
                   "checkpoints above are not known to this check")
    return "\n".join(out) + "\n"


def verdict_dot(doc: Mapping[str, Any]) -> str:
    """A verdict's path as Graphviz DOT: artefact -> attestation -> ... -> root."""
    color = _DOT_STYLE["trusted" if doc["trusted"] and doc["trust"] == "delegated" else
                       "transitive" if doc["trusted"] else "untrusted"]
    lines = ["digraph verdict {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];',
             f"  artefact [label={_dot_str(doc['artefact'])}, style={_dot_str(color[2])}, "
             f"color={_dot_str(color[0])}, fillcolor={_dot_str(color[1])}];"]
    prev = "artefact"
    for i, h in enumerate(doc["path"]):
        pos = h["position"]
        label = f"{hop_text(h)}\n{pos['origin']}#{pos['index']}"
        style = "rounded,dashed" if h["kind"] == "transitive" else "rounded"
        lines.append(f"  hop{i} [label={_dot_str(label)}, style={_dot_str(style)}];")
        attrs = ' [color="#9a6700", label="join"]' if h.get("join") else ""
        lines.append(f"  {prev} -> hop{i}{attrs};")
        prev = f"hop{i}"
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_image(dot_source: str, out: str | Path, fmt: str, *, dot_binary: str = "dot") -> None:
    """Write ``dot_source`` as an ``svg`` or ``png`` image to ``out`` with Graphviz.

    Raises:
        UnavailableError: the ``dot`` binary is not installed.
        InputError: an unknown format, or ``dot`` refused the input.
    """
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"image format {fmt!r}: want one of {', '.join(IMAGE_FORMATS)}")
    binary = shutil.which(dot_binary)
    if binary is None:
        raise UnavailableError(
            f"graphviz '{dot_binary}' is not installed, so no --{fmt} image can be made",
            hint="install graphviz (e.g. apt-get install graphviz), or use --format dot and render it elsewhere",
        )
    done = subprocess.run([binary, f"-T{fmt}", "-o", str(out)], input=dot_source.encode(),
                          capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise InputError(f"dot failed: {done.stderr.decode(errors='replace').strip()[:300]}")


__all__ = [
    "IMAGE_FORMATS",
    "MARKERS",
    "entry_view",
    "hop_text",
    "key_view",
    "lineage_dot",
    "lineage_tree",
    "record_view",
    "render_image",
    "short",
    "verdict_dot",
    "verdict_text",
]
