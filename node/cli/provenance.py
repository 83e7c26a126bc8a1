"""Provenance verbs: ``attest``, ``submit``, ``cosign``, ``verify``, ``trace``, ``bundle``.

* ``attest`` signs an in-toto Statement v1 with a SLSA Provenance v1 predicate whose
  ``resolvedDependencies`` carry the materials' digests, and sends it to the SINK.
* ``submit`` sends a third party's DSSE/in-toto envelope as it is (payload and
  signatures byte for byte); ``cosign`` adds a signature to such an envelope
  (:meth:`ledger.envelope.Envelope.with_signature`) so an organisation can vouch for it.
  Co-signing is a verb of its own rather than ``attest --cosign``: it takes no FILE and no
  ``--name``, and never changes the statement.
* ``verify`` answers trusted / not trusted (exit 0 / 1; 2 on errors) for a file or digest,
  from an offline bundle (``--bundle``) or from a node (``--node``: the node supplies a
  bundle, which is verified locally exactly as an offline one; the node is not trusted).
* ``trace`` shows the lineage DAG a node holds (tree, JSON or Graphviz DOT; ``--svg`` /
  ``--png`` through the ``dot`` binary).
* ``bundle`` fetches a node's bundle for an artefact, checks its signatures and proofs,
  and writes it to one file.

Every verdict and lineage is computed by :mod:`ledger` and laid out by :mod:`node.render`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from ledger.attestation import (
    PAYLOAD_TYPE,
    Artefact,
    Attestation,
    make_statement,
)
from ledger.bundle_check import check_bundle
from ledger.bundle_format import MAX_BUNDLE_BYTES, Bundle
from ledger.checkpoint import parse_verifier_key
from ledger.entry import parse_record
from ledger.envelope import Envelope, sign_envelope
from ledger.errors import InputError, KeyFormatError, NotFoundError, PolicyError, TurtlesError
from ledger.trust.policy import load_policy
from ledger.verify import Verdict, verify_bundle
from node.cli._common import (
    add_sink_options,
    emit,
    now_ms,
    parse_duration_ms,
    print_json_or_line,
    read_input_file,
    signer_from,
)
from node.cli._progress import progress
from node.render import lineage_dot, lineage_tree, render_image, verdict_dot, verdict_text

_F = argparse.RawDescriptionHelpFormatter
_NAME_AT_VERSION = re.compile(r"[^@\s]+@[^@\s]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_PREDICATE_BYTES = 1 << 20
MAX_TRACE_BYTES = 64 << 20


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the provenance verbs."""
    p = sub.add_parser(
        "attest", help="sign a release attestation (in-toto Statement v1 + SLSA Provenance v1)",
        formatter_class=_F,
        epilog="example:\n  turtles attest dist/app-1.2.tar.gz --key maint.pem --name app@1.2 \\\n"
        "      --material dist/lib-2.0.tar.gz --material sha256:<hex> --node http://127.0.0.1:8001",
    )
    p.add_argument("file", metavar="FILE", help="the released artefact (its sha256 is the subject)")
    p.add_argument("--key", required=True, metavar="KEYREF", help="signing key (PEM file or pkcs11: URI)")
    p.add_argument("--name", required=True, metavar="NAME@VERSION", help="subject name, e.g. app@1.2")
    p.add_argument("--material", action="append", default=[], metavar="[NAME=]FILE|sha256:HEX",
                   help="an input the artefact was built from (repeatable)")
    p.add_argument("--predicate", metavar="FILE", help="a SLSA Provenance v1 predicate (JSON) to use")
    add_sink_options(p)
    p.set_defaults(func=run_attest)

    p = sub.add_parser(
        "submit", help="send third-party DSSE/in-toto envelopes as they are (one, or a bulk import)",
        formatter_class=_F,
        epilog="examples:\n  turtles submit build.intoto.json --node http://127.0.0.1:8001\n"
        "  turtles submit attestations/*.json --node http://127.0.0.1:8001   # bulk, batched, progress on a TTY",
    )
    p.add_argument("envelope", metavar="ENVELOPE.json", nargs="+", help="DSSE envelope(s) (JSON)")
    add_sink_options(p)
    p.set_defaults(func=run_submit)

    p = sub.add_parser(
        "cosign", help="add your signature to an existing envelope (vouch for it)", formatter_class=_F,
        epilog="example:\n  turtles cosign vendor.intoto.json --key acme-release.pem --node http://127.0.0.1:8001",
    )
    p.add_argument("envelope", metavar="ENVELOPE.json", help="DSSE envelope (JSON)")
    p.add_argument("--key", required=True, metavar="KEYREF", help="the co-signing key")
    add_sink_options(p)
    p.set_defaults(func=run_cosign)

    p = sub.add_parser(
        "verify", help="can I trust this artefact, and why? (exit 0 trusted, 1 not, 2 error)",
        formatter_class=_F,
        epilog="examples:\n  turtles verify app-1.2.tar.gz --policy policy.toml --node http://127.0.0.1:8001\n"
        "  turtles verify sha256:<hex> --policy policy.toml --bundle app-1.2.bundle --json",
    )
    p.add_argument("artefact", metavar="FILE|sha256:HEX")
    p.add_argument("--policy", required=True, metavar="POLICY", help="consumer policy (TOML)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--node", metavar="URL", help="fetch the evidence from a node (verified locally)")
    src.add_argument("--bundle", metavar="FILE", help="an offline bundle (no network)")
    p.add_argument("--log-key", action="append", default=[], metavar="VKEY",
                   help="pin a log's verifier key (origin+hash+key); repeatable")
    p.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="a witness cosigner key whose cosignatures count toward the quorum; repeatable")
    p.add_argument("--max-age", metavar="DURATION", help="refuse evidence older than this (e.g. 7d)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the verdict as JSON")
    fmt.add_argument("--format", choices=("text", "json", "dot"), default="text", help="output form")
    p.set_defaults(func=run_verify)

    p = sub.add_parser(
        "trace", help="show an artefact's provenance DAG across every chain a node holds",
        formatter_class=_F,
        epilog="examples:\n  turtles trace app-1.2.tar.gz --node http://127.0.0.1:8001\n"
        "  turtles trace sha256:<hex> --node http://127.0.0.1:8001 --policy policy.toml --svg lineage.svg",
    )
    p.add_argument("artefact", metavar="FILE|sha256:HEX")
    p.add_argument("--node", required=True, metavar="URL", help="the node to ask")
    p.add_argument("--policy", metavar="POLICY", help="judge each node under this policy (default: structurally)")
    p.add_argument("--max-depth", type=int, metavar="N", help="follow materials at most N levels deep")
    p.add_argument("--format", choices=("tree", "json", "dot"), default="tree", help="output form")
    img = p.add_mutually_exclusive_group()
    img.add_argument("--svg", metavar="OUT", help="also render the DAG to an SVG file (needs graphviz)")
    img.add_argument("--png", metavar="OUT", help="also render the DAG to a PNG file (needs graphviz)")
    p.set_defaults(func=run_trace)

    p = sub.add_parser(
        "bundle", help="write an offline verification bundle for an artefact", formatter_class=_F,
        epilog="example:\n  turtles bundle app-1.2.tar.gz --node http://127.0.0.1:8001 -o app-1.2.bundle",
    )
    p.add_argument("artefact", metavar="FILE|sha256:HEX")
    p.add_argument("--node", required=True, metavar="URL", help="the node to ask")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="bundle file to write")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_bundle)


# --- artefacts ---------------------------------------------------------------------------------


def artefact_digest(text: str) -> str:
    """``sha256:HEX`` -> HEX (lowercased); anything else is a file whose SHA-256 is taken."""
    if text.startswith("sha256:"):
        digest = text[7:].lower()
        if not _HEX64.fullmatch(digest):
            raise InputError(f"not a sha256 digest: {text[:80]!r}", hint="want sha256: and 64 hex digits")
        return digest
    h = hashlib.sha256()
    with open(text, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_material(text: str) -> Artefact:
    """``FILE``, ``sha256:HEX``, ``NAME=FILE`` or ``NAME=sha256:HEX`` as an artefact."""
    name, sep, ref = text.partition("=")
    if not sep or ref.startswith("=") or not name:
        name, ref = "", text
    digest = artefact_digest(ref)
    if not name:
        name = f"sha256:{digest}" if ref.startswith("sha256:") else Path(ref).name
    return Artefact(name, digest)


def build_statement(
    subject: Artefact, materials: list[Artefact], predicate_file: str | None
) -> bytes:
    """The Statement v1 bytes: a minimal SLSA v1 predicate, or the given one plus materials."""
    if predicate_file is None:
        return make_statement(subject=subject, materials=tuple(materials))
    raw = read_input_file(predicate_file, limit=MAX_PREDICATE_BYTES)
    try:
        predicate = json.loads(raw)
    except ValueError as e:
        raise InputError(f"{predicate_file}: not JSON: {e}") from e
    if not isinstance(predicate, dict):
        raise InputError(f"{predicate_file}: want a SLSA Provenance v1 predicate object")
    build = predicate.setdefault("buildDefinition", {})
    if not isinstance(build, dict):
        raise InputError(f"{predicate_file}: buildDefinition must be an object")
    deps = build.setdefault("resolvedDependencies", [])
    if not isinstance(deps, list):
        raise InputError(f"{predicate_file}: buildDefinition.resolvedDependencies must be a list")
    deps.extend({"name": m.name, "digest": {"sha256": m.sha256}} for m in materials)
    return make_statement(subject=subject, predicate=predicate)


def _read_envelope(path: str) -> Envelope:
    env = Envelope.from_json(read_input_file(path))
    parse_record(env)  # refuse now, with the field named, what no node would accept
    return env


# --- handlers ------------------------------------------------------------------------------------


def run_attest(args: argparse.Namespace) -> int:
    """``turtles attest``."""
    if not _NAME_AT_VERSION.fullmatch(args.name):
        raise InputError(f"--name {args.name!r}: want NAME@VERSION, e.g. app@1.2")
    subject = Artefact(args.name, artefact_digest(args.file))
    materials = [parse_material(m) for m in args.material]
    payload = build_statement(subject, materials, args.predicate)
    Attestation.from_payload(payload)  # what no node would accept is refused here, field named
    signer = signer_from(args, args.key)
    return emit(args, sign_envelope(PAYLOAD_TYPE, payload, [signer]))


BULK_CHUNK = 500


def run_submit(args: argparse.Namespace) -> int:
    """``turtles submit``: one envelope, or many imported in batches (exit 2 if any is refused)."""
    if len(args.envelope) == 1:
        return emit(args, _read_envelope(args.envelope[0]))
    if args.output:
        raise InputError("-o writes one envelope; submit many to --node or --log")
    envelopes = [_read_envelope(path) for path in args.envelope]
    bar = progress(len(envelopes), "importing")
    refused: list[str] = []
    done = 0
    for start in range(0, len(envelopes), BULK_CHUNK):
        chunk = envelopes[start:start + BULK_CHUNK]
        for path, problem in zip(args.envelope[start:start + BULK_CHUNK], _submit_chunk(args, chunk), strict=True):
            if problem:
                refused.append(f"{path}: {problem}")
        done += len(chunk)
        bar(done)
    print(f"imported {len(envelopes) - len(refused)} of {len(envelopes)} envelopes")
    for line in refused:
        print(f"  refused {line}", file=sys.stderr)
    return 2 if refused else 0


def _submit_chunk(args: argparse.Namespace, chunk: list[Envelope]) -> list[str | None]:
    """Append one chunk through the batch endpoint or the local log; per envelope, the refusal or None."""
    if args.node:
        from node.client import NodeClient  # lazy: keeps CLI start-up fast (issue 7)

        results = NodeClient(args.node).submit_batch(chunk)["results"]
        return [None if r["status"] in (201, 409) else f"{r.get('error')}: {r.get('message')}" for r in results]
    from node.locallog import open_local_log  # lazy: keeps CLI start-up fast (issue 7)

    with open_local_log(args.log) as local:
        return [e.message if isinstance(e, TurtlesError) else None for e in local.log.append_many(chunk)]


def run_cosign(args: argparse.Namespace) -> int:
    """``turtles cosign``."""
    env = _read_envelope(args.envelope)
    return emit(args, env.with_signature(signer_from(args, args.key)))


def run_verify(args: argparse.Namespace) -> int:
    """``turtles verify``: exit 0 trusted, 1 not trusted (errors raise: exit 2)."""
    at = now_ms()
    digest = artefact_digest(args.artefact)
    policy = load_policy(args.policy)
    pinned = {}
    for vkey in args.log_key:
        try:
            pinned[parse_verifier_key(vkey).name] = vkey
        except KeyFormatError as e:
            raise PolicyError(f"--log-key: {e.message}", key="--log-key", problem=e.message) from e
    max_age = parse_duration_ms(args.max_age) if args.max_age else None
    if args.bundle:
        data = read_input_file(args.bundle, limit=MAX_BUNDLE_BYTES)
        verdict = verify_bundle(data, digest, policy=policy, at=at, pinned_logs=pinned,
                                witnesses=args.witness, max_age=max_age)
    else:
        try:
            data = fetch_bundle(args.node, digest)
        except NotFoundError as e:
            verdict = Verdict("sha256:" + digest, False, None, at, (f"{args.node}: {e.message}",))
        else:
            verdict = verify_bundle(data, digest, policy=policy, at=at, pinned_logs=pinned,
                                    witnesses=args.witness, max_age=max_age)
    doc = verdict.to_dict()
    fmt = "json" if args.json else args.format
    if fmt == "json":
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(verdict_dot(doc) if fmt == "dot" else verdict_text(doc))
    return verdict.exit_code


def fetch_bundle(url: str, digest: str) -> bytes:
    """The bytes of a node's bundle for ``digest`` (NotFoundError when it attests none)."""
    from node.client import NodeClient, remote_error  # lazy, as in _common.emit: keeps --help fast

    client = NodeClient(url)
    path = f"/v1/bundle/{digest}"
    reply = client.request("GET", path, max_bytes=MAX_BUNDLE_BYTES)
    if reply.status >= 400:
        raise remote_error(reply, client.url + path)
    return reply.body


def run_trace(args: argparse.Namespace) -> int:
    """``turtles trace``."""
    from node.client import NodeClient, remote_error  # lazy, as in _common.emit: keeps --help fast

    digest = artefact_digest(args.artefact)
    client = NodeClient(args.node)
    path = f"/v1/trace/{digest}"
    if args.policy:
        body: dict[str, Any] = {"policy": _policy_text(args.policy)}
        if args.max_depth is not None:
            body["max_depth"] = args.max_depth
        reply = client.request("POST", path, body=json.dumps(body).encode(), content_type="application/json",
                               max_bytes=MAX_TRACE_BYTES)
    else:
        query = f"?max_depth={args.max_depth}" if args.max_depth is not None else ""
        reply = client.request("GET", path + query, max_bytes=MAX_TRACE_BYTES)
    if reply.status >= 400:
        raise remote_error(reply, client.url + path)
    doc = reply.json()
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    elif args.format == "dot":
        sys.stdout.write(lineage_dot(doc))
    else:
        sys.stdout.write(lineage_tree(doc))
    if args.svg or args.png:
        out, fmt = (args.svg, "svg") if args.svg else (args.png, "png")
        render_image(lineage_dot(doc), out, fmt)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _policy_text(path: str) -> str:
    load_policy(path)  # a bad policy is the caller's error, reported here with the key named
    return read_input_file(path, limit=1 << 20).decode()


def run_bundle(args: argparse.Namespace) -> int:
    """``turtles bundle``: fetch, check signatures and proofs, write one file."""
    digest = artefact_digest(args.artefact)
    data = fetch_bundle(args.node, digest)
    bundle = Bundle.from_bytes(data)
    if bundle.artefact != digest:
        raise InputError(f"{args.node} answered with a bundle for sha256:{bundle.artefact}, not sha256:{digest}")
    checked = check_bundle(bundle, now=now_ms())
    _write_atomically(Path(args.output), data)
    summary = {
        "output": args.output, "artefact": "sha256:" + digest, "bytes": len(data),
        "records": len(checked.records),
        "logs": [{"origin": g.origin, "tree_size": g.checkpoint.size,
                  "cosignatures": [c.name for c in g.cosignatures]} for g in checked.logs],
    }
    logs = ", ".join(f"{g.origin}@{g.checkpoint.size}" for g in checked.logs)
    print_json_or_line(args, summary, f"wrote {args.output}: {len(checked.records)} records, checkpoints {logs}")
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["artefact_digest", "build_statement", "fetch_bundle", "parse_material", "register"]
