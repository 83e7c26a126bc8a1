"""The verdict for an artefact: attestation -> signer -> delegations -> root, every record proven.

One code path decides, whatever the evidence came from: a bundle file (offline), a bundle
fetched from a node (online: the node only supplies evidence, it is not trusted for the
verdict), or the logs held in process (:func:`verify_held` builds the same bundle first).

Steps of :func:`verify_bundle`, all against a verification time ``at`` fixed by the caller:

1. :func:`ledger.bundle.check_bundle`: each checkpoint note verifies with its log's vkey,
   every signature line with a bundled key, every entry is included in its checkpoint.
2. Which log keys to trust (a log key vouches for entry positions and integration times,
   which the trust rules rely on): a log is trusted if its vkey is pinned for its origin
   by the caller, or if its key is delegated for the purpose ``log``, with a scope that
   covers the origin, along a path :func:`ledger.trust.explain` accepts under the
   consumer's policy -- with ``log`` added to every anchor's purposes: anchoring a root
   also lets it name its organisation's log keys. That path may only use records of logs
   already trusted or of the log itself (a fixpoint); a pinned origin whose bundled vkey
   differs is never trusted. See ``docs/bundles.md``.
3. Only records of trusted logs enter the trust graph; witness cosignatures count toward
   the policy's quorum only for cosigner keys the caller trusts.
4. :func:`ledger.trust.explain` over that graph gives the verdict and its paths; this
   module adds each record's inclusion proof and log to every hop.

Invariants: a tampered or malformed bundle is a *not trusted* verdict naming the reason,
never an exception; :class:`Verdict` carries everything a renderer shows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from ledger.bundle_check import CheckedBundle, CheckedLog, check_bundle
from ledger.bundle_format import Bundle
from ledger.checkpoint import cosigner_vkey, parse_verifier_key
from ledger.errors import InputError, NotFoundError, UntrustedError
from ledger.trust.explain import explain
from ledger.trust.graph import TrustGraph
from ledger.trust.policy import Policy
from ledger.trust.verdict import Explanation, TrustPath
from ledger.verdict import Inclusion, Link, LogBasis, LogVerdict, Verdict

if TYPE_CHECKING:  # building a bundle reads a store: `turtles verify --bundle` never loads it
    from ledger.bundle_build import Holder


def verify_bundle(
    bundle: Bundle | bytes,
    artefact: str,
    *,
    policy: Policy,
    at: int,
    pinned_logs: Mapping[str, str] | None = None,
    witnesses: Collection[str] = (),
    max_age: int | None = None,
) -> Verdict:
    """Verify ``artefact`` (``sha256:<hex>`` or hex) with the evidence of ``bundle`` alone.

    Args:
        bundle: a parsed bundle or the bytes of a bundle file.
        artefact: the digest of the artefact in hand (never taken from the bundle).
        policy: the consumer's policy (anchors, rules).
        at: verification time, Unix ms, fixed once by the caller.
        pinned_logs: log vkeys the caller trusts, by origin.
        witnesses: cosigner vkeys whose cosignatures count toward ``policy.witness_quorum``.
        max_age: if given, the evidence must be at most this old (ms) at ``at``; older
            evidence is reported as a freeze and not trusted.

    Raises:
        InputError: ``artefact`` is not a sha256 digest (a caller error, not evidence).
    """
    digest = _digest(artefact)
    subject = "sha256:" + digest
    try:
        parsed = bundle if isinstance(bundle, Bundle) else Bundle.from_bytes(bundle)
        checked = check_bundle(parsed, now=at)
    except (InputError, UntrustedError) as e:
        return Verdict(subject, False, None, at, (f"bundle rejected: {e.message}",))
    if checked.artefact != digest:
        return Verdict(subject, False, None, at, (
            f"the bundle is about sha256:{checked.artefact}, not this artefact ({subject})",
        ))
    counted = _counted(checked, set(witnesses))
    logs = _decide_logs(checked, policy, at, pinned_logs or {}, counted)
    trusted_origins = {g.origin for g in logs if g.trusted}
    # Nodes witness the logs they mirror: a trusted log's witness key counts toward the
    # quorum like a witness the caller names (never for the log's own checkpoint).
    counted = _counted(checked, set(witnesses) | {_witness_vkey(v) for v in logs if v.trusted})
    logs = [replace(v, counted_witnesses=counted.get(v.origin, ())) for v in logs]
    graph = _graph(checked, trusted_origins, counted)
    answer = explain(graph, subject, purpose="release", at=at, policy=policy, kind="artefact")
    inclusions = {
        (r.logged.origin, r.logged.index): Inclusion.of(r) for r in checked.records if r.logged.origin in trusted_origins
    }
    notes = [
        f"record {r.logged.origin}#{r.logged.index} has no signature a bundled key verifies: {r.problem}"
        for r in checked.records if r.problem
    ]
    evidence_time = _evidence_time(checked, logs)
    reasons = _reasons(answer)
    if reasons:
        reasons[:0] = [f"log {g.origin} is not trusted: {g.why}" for g in logs if not g.trusted]
    if max_age is not None and (evidence_time is None or at - evidence_time > max_age):
        age = "unknown" if evidence_time is None else f"{(at - evidence_time) // 1000}s"
        reasons.append(f"evidence is stale (freeze): newest known time {age} old, limit {max_age // 1000}s")
    trusted = answer.trusted and not reasons
    return Verdict(
        subject, trusted, answer.trust if trusted else None, at, tuple(reasons), answer, tuple(logs),
        inclusions, (*notes, *answer.notes), evidence_time,
    )


def verify_held(
    holder: Holder,
    artefact: str,
    *,
    policy: Policy,
    at: int,
    notes: Mapping[str, str] | None = None,
    witnesses: Collection[str] = (),
    pinned_logs: Mapping[str, str] | None = None,
) -> Verdict:
    """Verify ``artefact`` against the logs held in process, by the same path as a bundle.

    The bundle is built from ``holder`` (:func:`ledger.bundle.build_bundle`) and verified
    with :func:`verify_bundle`; ``witnesses`` are both bundled and counted.
    """
    from ledger.bundle_build import build_bundle  # lazy: see the imports

    digest = _digest(artefact)
    try:
        bundle = build_bundle(holder, digest, notes=notes, witnesses=tuple(witnesses))
    except NotFoundError as e:
        return Verdict("sha256:" + digest, False, None, at, (e.message,))
    return verify_bundle(bundle, digest, policy=policy, at=at, pinned_logs=pinned_logs, witnesses=witnesses)


# --- internals ---------------------------------------------------------------------------------


def _digest(artefact: str) -> str:
    digest = artefact.removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InputError(f"not a sha256 digest (want sha256:<64 lowercase hex>): {artefact[:80]!r}")
    return digest


def _graph(checked: CheckedBundle, origins: Collection[str], counted: Mapping[str, tuple[str, ...]]) -> TrustGraph:
    """The trust graph of the records of ``origins``, with the witness coverage the caller counts."""
    graph = TrustGraph()
    for r in checked.records:
        if r.logged.origin in origins:
            graph.add(r.logged)
    for g in checked.logs:
        if g.origin in origins and counted.get(g.origin):
            graph.set_witnessed(g.origin, g.checkpoint.size, set(counted[g.origin]))
    return graph


def _decide_logs(
    checked: CheckedBundle, policy: Policy, at: int, pinned: Mapping[str, str], counted: Mapping[str, tuple[str, ...]]
) -> list[LogVerdict]:
    """Which log keys to trust: pinned ones, then (to a fixpoint) ``log``-delegated ones and
    ones whose checkpoint a trusted log's witness key cosigned."""
    decided: dict[str, LogVerdict] = {}
    pending: dict[str, CheckedLog] = {}
    for g in checked.logs:
        want = pinned.get(g.origin)
        if want == g.vkey:
            decided[g.origin] = _log_verdict(g, "pinned", "the verifier pins this log key", None, counted)
        elif want is not None:
            decided[g.origin] = _log_verdict(
                g, "untrusted", f"the verifier pins another key for this origin ({want})", None, counted
            )
        else:
            pending[g.origin] = g
    why_not: dict[str, str] = {}
    log_policy = _log_policy(policy)
    progress = True
    while pending and progress:
        progress = False
        trusted = {o for o, v in decided.items() if v.trusted}
        for origin in sorted(pending):
            g = pending[origin]
            path, why = _log_delegation(_graph(checked, trusted | {origin}, counted), g, log_policy, at)
            if path is not None:
                decided[origin] = _log_verdict(g, "delegated", why, path, counted)
            elif (witness := _trusted_witness(g, decided)) is not None:
                decided[origin] = _log_verdict(
                    g, "witnessed", f"checkpoint cosigned by the witness of trusted log {witness}", None, counted
                )
            else:
                why_not[origin] = why
                continue
            del pending[origin]
            progress = True
            trusted.add(origin)
    for origin, g in pending.items():
        decided[origin] = _log_verdict(g, "untrusted", why_not[origin], None, counted)
    return [decided[o] for o in sorted(decided)]


def _witness_vkey(log: LogVerdict) -> str:
    """The cosigner vkey a log's node witnesses with: its origin and its log key."""
    return cosigner_vkey(log.origin, parse_verifier_key(log.vkey).public_raw)


def _counted(checked: CheckedBundle, witnesses: set[str]) -> dict[str, tuple[str, ...]]:
    """Per log, the names of the cosigners that count toward the witness quorum."""
    return {
        g.origin: tuple(sorted({c.name for c in g.cosignatures if c.vkey in witnesses and c.name != g.origin}))
        for g in checked.logs
    }


def _trusted_witness(g: CheckedLog, decided: Mapping[str, LogVerdict]) -> str | None:
    """Origin of a trusted log whose node cosigned ``g``'s checkpoint as a witness.

    A node witnesses the logs it mirrors under its own origin with its log key, so the
    cosigner vkey of a trusted log is derived from that log's own verifier key.
    """
    witnesses = {_witness_vkey(v): v.origin for v in decided.values() if v.trusted}
    return next((witnesses[c.vkey] for c in g.cosignatures if c.vkey in witnesses), None)


def _log_policy(policy: Policy) -> Policy:
    """``policy`` with every anchor also trusted to name its logs' keys (purpose ``log``).

    The witness quorum is the verdict's (every record on the artefact's path must meet it);
    deciding which log keys to trust comes first, so it is not held to it.
    """
    anchors = tuple(
        a if "log" in a.purposes else replace(a, purposes=tuple(sorted((*a.purposes, "log"))))
        for a in policy.anchors
    )
    return replace(policy, anchors=anchors, witness_quorum=0)


def _log_delegation(graph: TrustGraph, log: CheckedLog, policy: Policy, at: int) -> tuple[TrustPath | None, str]:
    answer = explain(graph, log.key_id, purpose="log", at=at, policy=policy, kind="key")
    covering = [p for p in answer.accepted if p.hops and p.hops[-1].scope.covers(log.origin)]
    if covering:
        root = covering[0].hops[0]
        return covering[0], f"log key delegated for purpose 'log' from anchored root {root.to} (org {root.org_to})"
    if answer.accepted:
        return None, f"the log key's 'log' delegation does not cover origin {log.origin!r}"
    first = answer.paths[0].reasons[0].message if answer.paths and answer.paths[0].reasons else None
    detail = first or (answer.notes[0] if answer.notes else "no path")
    return None, f"not pinned, and no accepted 'log' delegation to key {log.key_id}: {detail}"


def _log_verdict(
    g: CheckedLog, basis: LogBasis, why: str, path: TrustPath | None, counted: Mapping[str, tuple[str, ...]]
) -> LogVerdict:
    return LogVerdict(
        g.origin, g.vkey, g.key_id, g.checkpoint.size, g.checkpoint.root, basis, why, path,
        g.cosignatures, counted.get(g.origin, ()),
    )


def _evidence_time(checked: CheckedBundle, logs: list[LogVerdict]) -> int | None:
    counted = [c.timestamp * 1000 for g in logs if g.trusted for c in g.cosignatures if c.name in g.counted_witnesses]
    if counted:
        return max(counted)
    trusted = {g.origin for g in logs if g.trusted}
    times = [r.logged.ts for r in checked.records if r.logged.origin in trusted]
    return max(times) if times else None


def _reasons(answer: Explanation) -> list[str]:
    if answer.trusted:
        return []
    if answer.paths and answer.paths[0].reasons:
        return [r.message for r in answer.paths[0].reasons]
    return list(answer.notes) or ["no chain from an anchored root reaches the artefact"]


__all__ = ["Inclusion", "Link", "LogBasis", "LogVerdict", "Verdict", "verify_bundle", "verify_held"]
