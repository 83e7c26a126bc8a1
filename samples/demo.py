"""The main job: a real supply chain of three organisations on a local 3-node cluster.

Run with ``make demo`` (or ``python -m samples.demo [--keep] [--dir DIR]``). Every step is a
``turtles`` command typed exactly as a user would type it; the command is echoed, its
answer shown, and its exit code checked against what a correct ledger must answer. The
scenario (see samples/README.md):

* ``upstream`` writes libfoo; ``packager`` rebuilds it as libfoo-pkg; ``appvendor`` ships an
  app built on libfoo-pkg. Each has an HSM-held root (a SoftHSM2 token per node) and a
  maintainer key delegated for its own artefacts only.
* upstream explicitly delegates libfoo-pkg releases to the packager's maintainer (a
  cross-organisation delegation: a join); appvendor only *endorses* packager's root
  (transitive trust).
* alice's (upstream maintainer) key leaks: what she signed before the leak stays trusted
  (the log proves when), what was signed with it after is refused, naming the revocation;
  the root re-delegates to a new key (rebuild from the layer below).
* mallory signs an artefact with a key nobody delegated: the node refuses it, and a
  consumer's verify refuses it.

Exit status: 0 when every answer was the expected one, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORGS = ("upstream", "packager", "appvendor")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Demo:
    """Runs the scenario in ``directory``, keeping a tally of unexpected answers."""

    directory: Path
    turtles: list[str]
    failures: list[str] = field(default_factory=list)
    cluster: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    # --- plumbing -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"\n\033[1m## {text}\033[0m" if sys.stdout.isatty() else f"\n## {text}", flush=True)

    def run(self, label: str, *args: str, expect: int = 0, org: str | None = None,
            show: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``turtles ARGS`` (with ``org``'s HSM environment), echo it, check the exit code."""
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        if org is not None:
            node = self.cluster[org]
            env.update(SOFTHSM2_CONF=node["softhsm2_conf"], TURTLES_PKCS11_MODULE=node["pkcs11_module"])
        printable = " ".join(shlex.quote(a) for a in args)
        for name, node in self.cluster.items():  # show URLs as the node names a user would use
            printable = printable.replace(node["url"], f"${name.upper()}")
        print(f"$ turtles {printable}", flush=True)
        done = subprocess.run([*self.turtles, *args], env=env, capture_output=True, text=True,
                              cwd=self.directory, timeout=180)
        if show:
            for line in (done.stdout + done.stderr).rstrip().splitlines():
                print(f"    {line}")
        if done.returncode != expect:
            self.failures.append(f"{label}: exit {done.returncode}, expected {expect}")
            print(f"    !! expected exit {expect}, got {done.returncode}", flush=True)
        self.answers[label] = done
        return done

    def url(self, org: str) -> str:
        return str(self.cluster[org]["url"])

    def root_ref(self, org: str) -> list[str]:
        node = self.cluster[org]
        return ["--key", node["root_key"], "--pin-file", node["pin_file"]]

    def key_id(self, name: str) -> str:
        out = self.answers[f"key {name}"].stdout
        return next(w for w in out.split() if w.startswith("sha256:"))

    # --- the scenario ---------------------------------------------------------------------

    def build_artefact(self, name: str, *, contains: list[str] = ()) -> str:  # type: ignore[assignment]
        """A real release tarball made on the spot (deterministic metadata)."""
        src = self.directory / "src" / name
        src.mkdir(parents=True, exist_ok=True)
        (src / "README").write_text(f"{name}: built by the turtles demo\n")
        (src / "VERSION").write_text(name.rsplit("-", 1)[-1] + "\n")
        out = self.directory / "artefacts" / f"{name}.tar.gz"
        out.parent.mkdir(exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                return info
            tar.add(src, arcname=name, filter=fixed)
            for dep in contains:
                tar.add(self.directory / "artefacts" / dep, arcname=f"{name}/deps/{dep}", filter=fixed)
        return f"artefacts/{name}.tar.gz"

    def write_policy(self, name: str, org: str, *, hops: int) -> str:
        root = self.cluster[org]["root_key_id"]
        (self.directory / name).write_text(
            f'# trust {org}\'s releases{" and one transitive hop" if hops else ", delegated trust only"}\n'
            f'[[anchor]]\norg = "{org}"\nroot = "{root}"\npurposes = ["release"]\n'
            f"[trust]\nmax_transitive_hops = {hops}\nrequire_hsm_root = true\nwitness_quorum = 0\n"
        )
        return name

    def wait_mirrored(self, timeout: float = 60) -> None:
        """Wait until every node's mirrors of every peer have caught up (bounded)."""
        from node.client import NodeClient

        deadline = time.monotonic() + timeout
        sizes = {org: NodeClient(self.url(org)).log_info()["size"] for org in self.cluster}
        while time.monotonic() < deadline:
            behind = [
                (org, peer) for org in self.cluster for peer, size in sizes.items() if peer != org
                and _mirror_size(NodeClient(self.url(org)), self.cluster[peer]["origin"]) < size
            ]
            if not behind:
                return
            time.sleep(0.5)
        self.failures.append(f"mirrors did not catch up within {timeout:.0f}s")

    def play(self) -> None:
        d = self.directory
        self.say("1. A local cluster: three organisations, one node each, each root key inside its own HSM token")
        self.run("cluster up", "cluster", "up", "--nodes", "3", "--orgs", ",".join(ORGS), "--dir", "cluster")
        nodes = json.loads((d / "cluster" / "cluster.json").read_text())["nodes"]
        self.cluster = {n["org"]: n for n in nodes}

        self.say("2. Maintainers make their own keys (software keys, as on a developer's laptop)")
        (d / "keys").mkdir(exist_ok=True)
        for name in ("alice", "bob", "carol", "alice2", "mallory"):
            self.run(f"key {name}", "keys", "generate", "--out", f"keys/{name}.pem", show=name == "alice")

        self.say("3. Each root delegates to its own maintainer, scoped to its own artefacts (signed in the HSM)")
        for org, who, glob in (("upstream", "alice", "libfoo@*"), ("packager", "bob", "libfoo-pkg@*"),
                               ("appvendor", "carol", "app@*")):
            self.run(f"delegate {who}", "delegate", *self.root_ref(org), "--to", f"keys/{who}.pem.pub",
                     "--name", who, "--artefacts", glob, "--purpose", "release", "--expires", "365d",
                     "--node", self.url(org), org=org)
        self.say("4. upstream explicitly authorises the packager's maintainer for libfoo-pkg (cross-org delegation)")
        self.run("cross delegation", "delegate", *self.root_ref("upstream"), "--to", "keys/bob.pem.pub",
                 "--name", "bob (packager)", "--org", "packager", "--artefacts", "libfoo-pkg@*",
                 "--purpose", "release", "--expires", "365d", "--node", self.url("upstream"), org="upstream")
        self.say("5. appvendor only endorses packager's root: it trusts it, without delegating (transitive)")
        self.run("endorse", "endorse", *self.root_ref("appvendor"), "--org", "packager",
                 "--root", self.cluster["packager"]["root_key_id"], "--purpose", "release",
                 "--node", self.url("appvendor"), org="appvendor")

        self.say("6. Releases: real tarballs, each with SLSA provenance naming what it was built from")
        libfoo = self.build_artefact("libfoo-1.0")
        pkg = self.build_artefact("libfoo-pkg-1.0", contains=["libfoo-1.0.tar.gz"])
        app = self.build_artefact("app-1.0", contains=["libfoo-pkg-1.0.tar.gz"])
        self.run("attest libfoo", "attest", libfoo, "--key", "keys/alice.pem", "--name", "libfoo@1.0",
                 "--node", self.url("upstream"))
        self.run("attest pkg", "attest", pkg, "--key", "keys/bob.pem", "--name", "libfoo-pkg@1.0",
                 "--material", libfoo, "--node", self.url("packager"))
        self.run("attest app", "attest", app, "--key", "keys/carol.pem", "--name", "app@1.0",
                 "--material", pkg, "--node", self.url("appvendor"))
        self.wait_mirrored()

        up = self.write_policy("upstream-policy.toml", "upstream", hops=0)
        strict = self.write_policy("appvendor-policy.toml", "appvendor", hops=0)
        loose = self.write_policy("appvendor-transitive.toml", "appvendor", hops=1)

        self.say("7. Verify: trusted through delegation (upstream's consumer, libfoo)")
        self.run("verify libfoo", "verify", libfoo, "--policy", up, "--node", self.url("upstream"))
        self.say("8. Verify libfoo-pkg as upstream's consumer: delegated across organisations (a join)")
        self.run("verify pkg upstream", "verify", pkg, "--policy", up, "--node", self.url("upstream"))
        self.say("9. Verify libfoo-pkg as appvendor's consumer: only transitive, refused by the default policy...")
        self.run("verify pkg strict", "verify", pkg, "--policy", strict, "--node", self.url("appvendor"), expect=1)
        self.say("   ...and accepted by a policy that allows one transitive hop")
        self.run("verify pkg loose", "verify", pkg, "--policy", loose, "--node", self.url("appvendor"))
        self.run("verify app", "verify", app, "--policy", strict, "--node", self.url("appvendor"))

        self.say("10. alice signs libfoo-1.1 -- then her key leaks")
        good = self.build_artefact("libfoo-1.1")
        self.run("attest 1.1", "attest", good, "--key", "keys/alice.pem", "--name", "libfoo@1.1",
                 "--node", self.url("upstream"))
        time.sleep(1.1)
        leak = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        time.sleep(1.1)
        evil = self.build_artefact("libfoo-1.2")
        self.run("attest evil", "attest", evil, "--key", "keys/alice.pem", "--name", "libfoo@1.2",
                 "--node", self.url("upstream"))
        self.say(f"11. upstream revokes alice's key since the leak ({leak}) and re-delegates to a new key")
        self.run("revoke", "revoke", *self.root_ref("upstream"), "--target", self.key_id("alice"),
                 "--since", leak, "--reason", "laptop stolen; key leaked", "--node", self.url("upstream"),
                 org="upstream")
        self.run("re-delegate", "delegate", *self.root_ref("upstream"), "--to", "keys/alice2.pem.pub",
                 "--name", "alice (new key)", "--artefacts", "libfoo@*", "--purpose", "release",
                 "--expires", "365d", "--node", self.url("upstream"), org="upstream")
        fixed = self.build_artefact("libfoo-1.3")
        self.run("attest 1.3", "attest", fixed, "--key", "keys/alice2.pem", "--name", "libfoo@1.3",
                 "--node", self.url("upstream"))
        self.say("12. Signed after the leak: refused, the revocation named")
        self.run("verify evil", "verify", evil, "--policy", up, "--node", self.url("upstream"), expect=1)
        self.say("13. Signed before the leak: still trusted -- the log proves when it was signed")
        self.run("verify 1.1", "verify", good, "--policy", up, "--node", self.url("upstream"))
        self.run("verify 1.3", "verify", fixed, "--policy", up, "--node", self.url("upstream"))

        self.say("14. mallory signs an artefact with a key nobody delegated")
        mal = self.build_artefact("libfoo-9.9")
        self.run("attest mallory", "attest", mal, "--key", "keys/mallory.pem", "--name", "libfoo@9.9",
                 "--node", self.url("upstream"), expect=2)
        self.run("verify mallory", "verify", mal, "--policy", up, "--node", self.url("upstream"), expect=1)

        self.say("15. The lineage of the app, across all three organisations' logs")
        self.run("trace", "trace", app, "--node", self.url("appvendor"), "--policy", loose)
        self.run("trace svg", "trace", app, "--node", self.url("appvendor"), "--policy", loose,
                 "--svg", "lineage.svg")

        self.say("16. Why is the packager trusted, and where is the weakest link?")
        self.run("explain", "trust", "explain", self.cluster["packager"]["root_key_id"], "--policy", loose,
                 "--node", self.url("appvendor"))
        self.say("17. Before revoking the packager's maintainer key: what would lose trust?")
        self.run("impact", "trust", "impact", self.key_id("bob"), "--node", self.url("appvendor"))

        self.say("18. An offline bundle: verify the app with no network and no ledger")
        self.run("bundle", "bundle", app, "--node", self.url("appvendor"), "-o", "app.bundle")
        self.run("verify offline", "verify", app, "--bundle", "app.bundle", "--policy", strict)
        self.say("19. Anyone can audit a node's log from scratch: every entry, signature, proof and checkpoint")
        self.run("audit", "log", "audit", "--node", self.url("upstream"), "--vkey", self.cluster["upstream"]["vkey"])


def _mirror_size(client: Any, origin: str) -> int:
    """Size of ``origin``'s mirror at a node (0 while the node does not mirror it yet)."""
    from ledger.errors import TurtlesError

    try:
        return int(client.log_info(origin)["size"])
    except TurtlesError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / "run" / "demo"), help="working directory (default run/demo)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    if (directory / "cluster" / "cluster.json").exists():
        subprocess.run([sys.executable, "-m", "node.cli.main", "cluster", "down", "--dir",
                        str(directory / "cluster")], capture_output=True, timeout=120)
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    demo = Demo(directory, [sys.executable, "-m", "node.cli.main"])
    try:
        demo.play()
    finally:
        if args.keep and demo.cluster:
            print("\nThe cluster is still running. Query it, e.g.:")
            for org, node in demo.cluster.items():
                print(f"  {org}: {node['url']}   (curl {node['url']}/checkpoint)")
            print(f"  turtles verify {directory}/artefacts/app-1.0.tar.gz --policy "
                  f"{directory}/appvendor-policy.toml --node {demo.url('appvendor')}")
            print(f"Stop it with: turtles cluster down --dir {directory}/cluster")
        elif demo.cluster:
            demo.say("Tearing the cluster down (make demo KEEP=1 keeps it)")
            demo.run("cluster down", "cluster", "down", "--dir", "cluster")
    if demo.failures:
        print(f"\nDEMO FAILED: {len(demo.failures)} unexpected answer(s):")
        for f in demo.failures:
            print(f"  - {f}")
        return 1
    print("\nEvery answer was the expected one.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
