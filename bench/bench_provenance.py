"""Provenance: verify latency of a 5-hop chain, lineage of a 1,000-artefact DAG, bundle checks.

The world (real parts throughout): one LevelDB log (``ledger.holdings.Holdings``) holding an
HSM-declared root, its log key delegated for ``log``, a chain root -> k1 -> k2 -> k3 of
delegations and 1,001 attestations signed by k3, every record a real DSSE envelope with a
real Ed25519 signature, appended through the log's sequencer. The verified artefact's path
has 5 hops (root, three delegations, the attestation). The DAG: artefact ``i`` lists
artefacts ``2i+1``, ``2i+2`` and ``i+1`` (those below 1,000) as materials, so all 1,000 are
reachable from artefact 0 within 10 levels, and most are shared by two parents.

Figures (each median and p99 over the repetitions):

* ``verify_5hop_us`` -- :func:`ledger.verify.verify_held`: build the bundle from the log
  (records, proofs, checkpoint) and verify it (note, 7 inclusion proofs, signatures,
  log-key trust, explain), in process;
* ``bundle_build_us`` -- :func:`ledger.bundle.build_bundle` alone;
* ``bundle_verify_us`` -- :func:`ledger.verify.verify_bundle` of the bundle file's bytes
  (what ``turtles verify --bundle`` does after reading the file);
* ``trace_1000_ms`` and ``trace_per_node_us`` -- :func:`ledger.lineage.trace` of the DAG,
  an explain per artefact (target: p99 <= 200 ms). Each run is cold: the trace's memo
  (attestations read, chain prefixes judged) lives for that one call.
* ``verify_cli_cold_ms`` -- ``turtles verify sha256:HEX --policy FILE --bundle FILE --json``
  run as a new process each time, wall time from spawn to exit, the verdict checked
  (target: p99 <= 300 ms); ``verify_cli_imports_ms`` -- the import time of one such run
  (``PYTHONPROFILEIMPORTTIME``, the top-level imports' cumulative times summed).

Raw limits measured in the same run: ``prov_ed25519_verify_us``, one bare Ed25519
verification (``cryptography``); each ratio says how many bare verifications an operation
costs. ``python_start_ms``: ``python -c pass`` with the same interpreter, the floor of any
CLI start. A JSON line of results is printed last.

Run: ``python -m bench.bench_provenance [--quick]``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench._harness import Context, Figure, limit, main, percentile
from bench._node import ENV, ROOT
from bench.raw import ED25519_VERIFY_US as ED25519_VERIFY
from ledger.attestation import PAYLOAD_TYPE, Artefact, make_statement
from ledger.bundle import build_bundle
from ledger.entry import sign_record
from ledger.envelope import Envelope, sign_envelope
from ledger.holdings import Holdings
from ledger.keys import PublicKey, SoftwareSigner
from ledger.lineage import trace
from ledger.records import Delegation, RootRecord
from ledger.trust import Anchor, Policy, load_policy
from ledger.verify import verify_bundle, verify_held

GROUP = "provenance"
ORIGIN = "bench.example/log"
DAG_SIZE = 1000
TRACE_TARGET_MS = 200.0
VERIFY_CLI_TARGET_MS = 300.0
PYTHON_START = "python_start_ms"


def _wall_ms(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env or ENV, cwd=ROOT, timeout=60)
    return (time.perf_counter() - t0) * 1000, done


@limit(PYTHON_START)
def python_start(ctx: Context) -> None:
    """Milliseconds for a bare start and exit of this interpreter (``python -c pass``)."""
    _wall_ms([sys.executable, "-c", "pass"])
    values = [_wall_ms([sys.executable, "-c", "pass"])[0] for _ in range(ctx.reps(10, 30))]
    ctx.record_raw(PYTHON_START, values, "ms", "python -c pass: the interpreter's own start and exit (site included)",
                   higher_is_better=False)


def turtles_command() -> list[str]:
    """How a user runs the CLI: the ``turtles`` script beside this interpreter, if installed."""
    script = Path(sys.executable).with_name("turtles")
    return [str(script)] if script.exists() else [sys.executable, "-m", "node.cli.main"]


def import_ms(stderr: str) -> float:
    """Total import time from ``-X importtime`` output: the top-level imports' cumulative times."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if not name[1:].startswith(" ") and cumulative.strip().isdigit():  # top level: no indent
                total += int(cumulative)
    return total / 1000


def verify_cli(ctx: Context, policy: Policy, bundle: bytes, subject: str) -> tuple[Figure, Figure]:
    """Cold ``turtles verify --bundle`` runs: wall times and import time."""
    d = ctx.scratch("verify-cli")
    (d / "bundle").write_bytes(bundle)
    anchors = "".join(f'[[anchor]]\norg = "{a.org}"\nroot = "{a.root}"\npurposes = {json.dumps(list(a.purposes))}\n'
                      for a in policy.anchors)
    (d / "policy.toml").write_text(anchors)
    if load_policy(d / "policy.toml") != policy:
        raise AssertionError("the policy file does not say what the benchmark's policy says")
    argv = [*turtles_command(), "verify", f"sha256:{subject}", "--policy", str(d / "policy.toml"),
            "--bundle", str(d / "bundle"), "--json"]

    def once(env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
        ms, done = _wall_ms(argv, env)
        if done.returncode != 0 or not json.loads(done.stdout)["trusted"]:
            raise AssertionError(f"turtles verify: exit {done.returncode}: {done.stdout[-500:]} {done.stderr[-1500:]}")
        return ms, done

    once()
    walls = [once()[0] for _ in range(ctx.reps(10, 30))]
    imports = [import_ms(once({**ENV, "PYTHONPROFILEIMPORTTIME": "1"})[1].stderr) for _ in range(ctx.reps(3, 5))]
    cold = ctx.record("verify_cli_cold_ms", walls, "ms", limit=PYTHON_START, higher_is_better=False,
                      target=(f"p99 <= {VERIFY_CLI_TARGET_MS:.0f} ms", lambda f: f.p99 <= VERIFY_CLI_TARGET_MS),
                      notes=f"turtles verify --bundle ({len(bundle)} bytes, 5-hop chain) --json, a new process "
                            "each run, spawn to exit (the OS's file cache is warm)")
    imp = ctx.record("verify_cli_imports_ms", imports, "ms", higher_is_better=False,
                     notes="import time of one such run (-X importtime: top-level imports' cumulative times)")
    return cold, imp




def _delegation(issuer: SoftwareSigner, subject: PublicKey, globs: tuple[str, ...], purposes: tuple[str, ...],
                depth: int) -> Envelope:
    d = Delegation(issuer.key_id, subject, "k", "bench", globs, tuple(sorted(purposes)), depth, 0, None, 1)
    return sign_record(d, [issuer])


def _name(i: int) -> Artefact:
    return Artefact(f"pkg-{i}@1", hashlib.sha256(f"pkg-{i}".encode()).hexdigest())


def build_world(path: Path) -> tuple[Holdings, Policy, str]:
    """The log described in the module docstring; returns it, the policy and the DAG's top digest."""
    log_key, root = SoftwareSigner.generate(), SoftwareSigner.generate()
    holdings = Holdings.open(path, origin=ORIGIN, signer=log_key, create=True)
    log = holdings.own
    assert log is not None
    log.append(sign_record(RootRecord("bench", root.public_key, True, 1), [root]))
    log.append(_delegation(root, log_key.public_key, (ORIGIN,), ("log",), 0))
    keys = [root]
    for depth in (2, 1, 0):
        k = SoftwareSigner.generate()
        purposes = ("build", "release") if depth == 0 else ("build", "delegate", "release")
        log.append(_delegation(keys[-1], k.public_key, ("pkg-*",), purposes, depth))
        keys.append(k)
    envelopes = []
    for i in range(DAG_SIZE):
        mats = tuple(_name(j) for j in sorted({2 * i + 1, 2 * i + 2, i + 1}) if j < DAG_SIZE)
        envelopes.append(sign_envelope(PAYLOAD_TYPE, make_statement(subject=_name(i), materials=mats), [keys[-1]]))
    for result in log.append_many(envelopes):
        if isinstance(result, Exception):
            raise result
    policy = Policy(anchors=(Anchor("bench", root.key_id, ("build", "release")),))
    return holdings, policy, _name(0).sha256


def _times_us(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm up
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def run(ctx: Context) -> None:
    """Measure the figures of the module docstring."""
    t0 = time.perf_counter()
    holdings, policy, top = build_world(ctx.scratch("provenance"))
    setup_s = time.perf_counter() - t0
    try:
        graph = holdings.graph
        at = time.time_ns() // 1_000_000 + 1
        subject = _name(DAG_SIZE // 2).sha256
        verdict = verify_held(holdings, subject, policy=policy, at=at)
        if not verdict.trusted or len(verdict.links()) != 5:
            raise AssertionError(f"the benchmark chain is not a trusted 5-hop path: {verdict.reasons}")
        n = ctx.reps(50, 300)
        figs: dict[str, Figure] = {}
        figs["verify_5hop_us"] = ctx.record(
            "verify_5hop_us", _times_us(lambda: verify_held(holdings, subject, policy=policy, at=at), n), "us",
            limit=ED25519_VERIFY, higher_is_better=False,
            notes="build bundle from LevelDB + verify it: note, 7 proofs, signatures, log key, explain")
        figs["bundle_build_us"] = ctx.record(
            "bundle_build_us", _times_us(lambda: build_bundle(holdings, subject), n), "us",
            limit=ED25519_VERIFY, higher_is_better=False)
        data = build_bundle(holdings, subject).to_bytes()
        figs["bundle_verify_us"] = ctx.record(
            "bundle_verify_us", _times_us(lambda: verify_bundle(data, subject, policy=policy, at=at), n), "us",
            limit=ED25519_VERIFY, higher_is_better=False, notes=f"{len(data)} byte bundle, 7 records")
        lineage = trace(graph, top, policy=policy, at=at)
        if len(lineage.nodes) != DAG_SIZE or lineage.issues:
            raise AssertionError(f"trace reached {len(lineage.nodes)} artefacts, issues {lineage.issues[:3]}")
        runs = _times_us(lambda: trace(graph, top, policy=policy, at=at), ctx.reps(5, 9))
        figs["trace_1000_ms"] = ctx.record(
            "trace_1000_ms", [v / 1000 for v in runs], "ms", higher_is_better=False,
            target=(f"p99 <= {TRACE_TARGET_MS:.0f} ms", lambda f: f.p99 <= TRACE_TARGET_MS),
            notes=f"{DAG_SIZE} artefacts, {len(lineage.edges)} edges, one explain each; each run reads every "
            "artefact's attestations from LevelDB once and judges the chain above the signer once (a memo "
            "that lives for that one trace: nothing is kept between runs)")
        figs["trace_per_node_us"] = ctx.record(
            "trace_per_node_us", [v / DAG_SIZE for v in runs], "us", limit=ED25519_VERIFY, higher_is_better=False)
        ctx.raw(PYTHON_START)
        figs["verify_cli_cold_ms"], figs["verify_cli_imports_ms"] = verify_cli(ctx, policy, data, subject)
    finally:
        holdings.close()
    verify_us = ctx.raw(ED25519_VERIFY)
    result = {
        "bench": GROUP, "quick": ctx.quick, "setup_s": round(setup_s, 2), "dag_artefacts": DAG_SIZE,
        "raw_ed25519_verify_us": round(verify_us, 2),
        **{f"{k}_p50": round(f.median, 2) for k, f in figs.items()},
        **{f"{k}_p99": round(percentile(f.values, 99), 2) for k, f in figs.items()},
        **{f"{k}_ratio_to_ed25519_verify": round(f.ratio, 1) for k, f in figs.items() if f.ratio is not None},
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main(run, GROUP))
