"""deploy/: the compose file, Dockerfile, configs, policy and systemd unit, checked statically,
and the container entry point run for real (SoftHSM2 tokens, a node process) without Docker.

Docker cannot run on the machines this project is built on, so the images are never built
here. What can be checked is: every file the compose file, the Dockerfile and the unit
name exists; every config and the policy load with the project's own strict loaders
(``node.config.load_config`` does not check that files exist -- it only resolves paths --
so the configs keep their container paths and load as they are); the unit carries its
hardening; and the entry point does, on this machine, what the containers would do:
init tokens and keys, compose the peers, run the node, publish its root.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ledger.checkpoint import parse_verifier_key
from ledger.hsm import parse_pkcs11_uri
from ledger.keyref import is_pkcs11_uri
from ledger.trust import load_policy
from node.cluster import find_softhsm_module, free_ports
from node.config import NodeConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.py"
ORGS = ("upstream", "packager", "appvendor")
UNIT = DEPLOY / "systemd" / "turtles-node@.service"


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(doc, dict)
    return doc


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"long volume syntax is not used here: {entry!r}"
        parts = entry.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def test_compose_has_an_init_a_node_and_a_publish_service_per_organisation(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {f"{org}{suffix}" for org in ORGS for suffix in ("-init", "", "-publish")}
    for org in ORGS:
        assert services[f"{org}-init"]["command"] == ["init"]
        assert services[f"{org}-init"]["restart"] == "no"
        assert services[org]["command"] == ["node"]
        assert services[f"{org}-publish"]["command"] == ["publish"]
        # every node waits for every init (it needs the others' announcements)
        assert {f"{o}-init" for o in ORGS} <= set(services[org]["depends_on"])
        for dep in services[org]["depends_on"].values():
            assert dep["condition"] == "service_completed_successfully"
        assert services[f"{org}-publish"]["depends_on"] == {org: {"condition": "service_healthy"}}
        assert services[org]["healthcheck"]["test"] == ["CMD", "turtles-entrypoint", "healthcheck"]


def test_compose_build_context_dockerfile_and_env_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context.is_dir(), name
        assert (context / service["build"]["dockerfile"]).is_file(), name
        assert service["image"] == "turtles:local"
        for env_file in service["env_file"]:
            assert (DEPLOY / env_file).is_file(), (name, env_file)


def test_compose_volumes_exist_and_each_organisation_has_its_own_token(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    tokens: dict[str, str] = {}
    for name, service in compose["services"].items():
        org = name.split("-")[0]
        for source, target, mode in _bind_mounts(service):
            assert mode in ("ro", "rw"), (name, source)
            if source.startswith((".", "/")):
                path = (DEPLOY / source).resolve()
                assert path.exists(), f"{name}: bind mount source {source} does not exist"
                assert mode == "ro", f"{name}: a host file is mounted writable: {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                assert source.startswith(org) or source == "peers", f"{name} mounts another org's {source}"
            if target == "/var/lib/turtles-hsm":
                assert tokens.setdefault(org, source) == source
    assert len(set(tokens.values())) == len(ORGS), "each organisation needs its own token volume"
    for org in ORGS:
        mounts = {t: (s, m) for s, t, m in _bind_mounts(compose["services"][org])}
        assert mounts["/var/lib/turtles-secrets"][1] == "ro", "the node reads the PIN, never writes it"
        assert mounts["/var/lib/turtles-peers"][1] == "ro"


def test_compose_mounts_the_organisations_own_config_which_loads(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        org = name.split("-")[0]
        configs = [s for s, t, _ in _bind_mounts(service) if t == "/etc/turtles/node.toml"]
        assert configs == [f"./config/{org}.toml"], name
        config = load_config(DEPLOY / configs[0])
        assert config.node.org == org
        assert config.node.public_url == f"http://{org}:{config.node.port}"


def test_compose_publishes_ports_on_loopback_only(compose: dict[str, Any]) -> None:
    ports = []
    for org in ORGS:
        for spec in compose["services"][org]["ports"]:
            host, published, target = str(spec).split(":")
            assert host == "127.0.0.1" and target == "8080"
            ports.append(published)
    assert len(set(ports)) == len(ORGS)


def test_containers_are_locked_down(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "environment" not in service, f"{name}: settings belong in the env file"


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=VALUE: {line!r}"
            out[key.strip()] = value
    return out


@pytest.mark.parametrize("name", ["softhsm.env", "pkcs11.env.example"])
def test_env_files_name_the_module_and_never_hold_a_pin(name: str) -> None:
    env = _env_file(DEPLOY / "env" / name)
    assert env["TURTLES_PKCS11_MODULE"].endswith(".so")
    for key in env:
        assert "PIN" not in key or key.endswith("_FILE"), f"{name}: {key} would put a PIN in the environment"
    assert "TURTLES_PKCS11_PIN" not in env


# --- Dockerfile ------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_dockerfile_base_packages_user_and_healthcheck() -> None:
    steps = _instructions(DEPLOY / "Dockerfile")
    froms = [args for op, args in steps if op == "FROM"]
    assert froms and all(re.match(r"python:3\.11-slim", f) for f in froms)
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "apt-get install" in runs and "softhsm2" in runs
    assert "pip install" in runs
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "healthcheck" in args for op, args in steps)
    assert ("ENTRYPOINT", '["turtles-entrypoint"]') in steps


def test_dockerfile_copy_sources_exist_in_the_build_context(compose: dict[str, Any]) -> None:
    context = (DEPLOY / compose["services"]["upstream"]["build"]["context"]).resolve()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    copies = [args for op, args in _instructions(DEPLOY / "Dockerfile") if op == "COPY"]
    assert copies
    checked = 0
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--chmod") and not w.startswith("--chown")]
        if any(w.startswith("--from") for w in words):
            continue
        for source in words[:-1]:
            assert (context / source).exists(), f"COPY source {source} is not in the build context"
            kept = [rule[1:].rstrip("/") for rule in ignore if rule.startswith("!")]
            assert any(source.rstrip("/") == k or source.startswith(k + "/") for k in kept), \
                f"Dockerfile.dockerignore leaves {source} out of the context"
            checked += 1
    assert checked >= 5


# --- node configs and the consumer policy ----------------------------------------------------


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("config/*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(path)  # the strict loader: unknown keys or bad values raise
    assert config.keys.pin_file is not None, "the PIN comes from a file"
    assert config.keys.root_key is not None
    for keyref in (config.keys.log_key, config.keys.root_key):
        assert is_pkcs11_uri(keyref), f"{path.name}: {keyref} is not in an HSM"
        uri = parse_pkcs11_uri(keyref)
        assert uri.pin_value is None and uri.token, f"{path.name}: {keyref}"
    assert config.node.data_dir.is_absolute()


def test_the_consumer_policy_loads() -> None:
    policy = load_policy(DEPLOY / "policy.toml")
    assert {a.org for a in policy.anchors} == set(ORGS)
    assert policy.max_transitive_hops == 0 and policy.require_hsm_root


# --- systemd ---------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (repeated keys accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not Key=Value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "Restart": "on-failure",
    "ReadWritePaths": "/var/lib/turtles/%i",
}


def test_unit_starts_the_turtles_console_script() -> None:
    service = _unit(UNIT)["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "turtles"
    assert argv[1:4] == ["node", "start", "--config"]
    assert argv[4] == "/etc/turtles/%i/node.toml"
    assert service["User"] == ["turtles"] or service.get("DynamicUser") == ["yes"]


def test_unit_is_hardened() -> None:
    service = _unit(UNIT)["Service"]
    for key, want in HARDENING.items():
        assert want in service.get(key, []), f"{key}={want} is missing"
    assert service["CapabilityBoundingSet"] == [""]
    assert int(service["LimitNOFILE"][0]) >= 65536
    stop = service["TimeoutStopSec"][0]
    assert int(stop.rstrip("s")) >= 60, "graceful shutdown gives requests 30 s, then drains the sequencer"
    assert not any("PIN" in v and "FILE" not in v for values in service.values() for v in values)
    assert service["LoadCredential"] == ["pin:/etc/turtles/%i/pin"]
    host = load_config(DEPLOY / "config" / "host-example.toml")
    assert str(host.keys.pin_file) == "/run/credentials/turtles-node@acme.service/pin"
    assert str(host.node.data_dir).startswith("/var/lib/turtles/acme/")


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed to check the unit"
    shutil.copy(UNIT, tmp_path / UNIT.name)
    done = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / UNIT.name)], capture_output=True,
                          text=True, timeout=60, check=False)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if line and "/opt/turtles/bin/turtles is not executable" not in line]
    assert complaints == [], "\n".join(complaints)


# --- the entry point, run for real ------------------------------------------------------------


class Org:
    """One organisation's container, laid out in a temporary directory."""

    def __init__(self, base: Path, org: str, port: int, peers: Path, module: str) -> None:
        self.org = org
        self.dir = base / org
        self.state = self.dir / "state"
        self.secrets = self.dir / "secrets"
        self.port = port
        for d in (self.state, self.secrets, self.dir / "hsm"):
            d.mkdir(parents=True)
        conf = self.dir / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {self.dir / 'hsm' / 'tokens'}\nobjectstore.backend = file\n"
                        "log.level = ERROR\nslots.removable = false\n")
        text = (DEPLOY / "config" / f"{org}.toml").read_text()
        for container, here in (("/var/lib/turtles-secrets", str(self.secrets)),
                                ("/var/lib/turtles/", f"{self.state}/"),
                                ("/usr/lib/softhsm/libsofthsm2.so", module),
                                (f"http://{org}:8080", f"http://127.0.0.1:{port}"),
                                ('host = "0.0.0.0"', 'host = "127.0.0.1"'),
                                ("port = 8080", f"port = {port}")):
            assert container in text, container
            text = text.replace(container, here)
        self.config = self.dir / "node.toml"
        self.config.write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TURTLES_", "SOFTHSM"))}
        self.env = {
            **env, "TURTLES_CONFIG": str(self.config), "TURTLES_STATE": str(self.state),
            "TURTLES_PEERS": str(peers), "SOFTHSM2_CONF": str(conf),
            "TURTLES_SO_PIN_FILE": str(self.secrets / "so-pin"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(self, step: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, str(ENTRYPOINT), step], env=self.env, capture_output=True,
                              text=True, timeout=180, check=False)
        if check:
            assert done.returncode == 0, f"{self.org} {step}: {done.stdout}\n{done.stderr}"
        return done

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def orgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Org]:
    assert shutil.which("softhsm2-util"), "softhsm2-util is needed (make bootstrap installs it)"
    base = tmp_path_factory.mktemp("deploy")
    peers = base / "peers"
    peers.mkdir()
    module = find_softhsm_module()
    ports = free_ports(len(ORGS))
    made = {org: Org(base, org, port, peers, module) for org, port in zip(ORGS, ports, strict=True)}
    for org in made.values():
        org.run("init")
    return made


def test_init_makes_the_token_pins_keys_and_announcement(orgs: dict[str, Org]) -> None:
    for org in orgs.values():
        for pin in ("pin", "so-pin"):
            mode = stat.S_IMODE((org.secrets / pin).stat().st_mode)
            assert mode == 0o600, f"{org.org} {pin}: mode {mode:o}"
        ident = json.loads((org.state / "identity.json").read_text())
        assert ident == json.loads((org.state.parent.parent / "peers" / f"{org.org}.json").read_text())
        assert ident["origin"] == f"{org.org}.example/log"
        assert parse_verifier_key(ident["vkey"]).name == ident["origin"]
        assert (org.state / "keys" / "root.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
        pin = (org.secrets / "pin").read_text().strip()
        assert pin not in json.dumps(ident) and pin not in (org.state / "identity.json").read_text()


def test_init_again_changes_nothing(orgs: dict[str, Org]) -> None:
    org = orgs["packager"]
    before = (org.state / "identity.json").read_text(), (org.secrets / "pin").read_text()
    done = org.run("init")
    assert "exists" in done.stdout and "generated" not in done.stdout
    assert ((org.state / "identity.json").read_text(), (org.secrets / "pin").read_text()) == before


def test_config_composes_the_other_nodes_as_peers_and_pins_the_own_root(orgs: dict[str, Org]) -> None:
    org = orgs["upstream"]
    org.run("config")
    config: NodeConfig = load_config(org.state / "node.toml")
    assert {p.origin for p in config.peers} == {"packager.example/log", "appvendor.example/log"}
    for peer in config.peers:
        other = orgs[peer.origin.split(".")[0]]
        assert peer.url == other.url
        assert peer.vkey == json.loads((other.state / "identity.json").read_text())["vkey"]
    own = json.loads((org.state / "identity.json").read_text())
    assert config.admission.roots == (own["root_key_id"],)


_MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed: " + os.strerror(ctypes.get_errno()))
print("mdwe", libc.prctl(66, 0, 0, 0, 0), flush=True)  # PR_GET_MDWE
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture(scope="module")
def upstream_node(orgs: dict[str, Org]) -> Iterator[tuple[Org, subprocess.Popen[str]]]:
    """The upstream node, started by the entry point's ``node`` step under PR_SET_MDWE."""
    org = orgs["upstream"]
    log = (org.dir / "node.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", _MDWE, sys.executable, str(ENTRYPOINT), "node"],
                            env=org.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while org.run("healthcheck", check=False).returncode != 0:
            assert proc.poll() is None, (org.dir / "node.log").read_text()
            assert time.monotonic() < deadline, "the node did not become healthy in 60 s"
            time.sleep(0.2)
        yield org, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        log.close()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_the_node_runs_under_memory_deny_write_execute(upstream_node: tuple[Org, subprocess.Popen[str]]) -> None:
    """What MemoryDenyWriteExecute=yes in the unit relies on: the node needs no W+X memory."""
    org, proc = upstream_node
    assert (org.dir / "node.log").read_text().startswith("mdwe 1\n")
    assert _get(org.url + "/healthz")["status"] == "ok"
    assert proc.poll() is None


def test_the_deployed_node_is_a_full_node(upstream_node: tuple[Org, subprocess.Popen[str]]) -> None:
    """`turtles node start` (what the image and the unit run) witnesses and serves bundles."""
    org, _ = upstream_node
    paths = set(_get(org.url + "/openapi.json")["paths"])
    assert {"/add-checkpoint", "/v1/witness/checkpoints", "/v1/bundle/{sha256}"} <= paths
    witnessed = _get(org.url + "/v1/witness/checkpoints")
    assert witnessed["name"] == "upstream.example/log"


def test_publish_writes_the_root_and_log_delegation_once(upstream_node: tuple[Org, subprocess.Popen[str]]) -> None:
    org, _ = upstream_node
    org.run("publish")  # signs in the token while the node holds it open (its log key is there)
    assert _get(org.url + "/v1/log")["size"] == 2
    root = _get(org.url + "/v1/entries/0")["record"]
    delegation = _get(org.url + "/v1/entries/1")["record"]
    ident = json.loads((org.state / "identity.json").read_text())
    assert root["kind"] == "root" and root["hsm"] is True and root["org"] == "upstream"
    assert delegation["kind"] == "delegation" and delegation["purposes"] == ["log"]
    assert delegation["artefacts"] == [ident["origin"]] and delegation["not_after"] is None
    done = org.run("publish")
    assert "nothing to publish" in done.stdout
    assert _get(org.url + "/v1/log")["size"] == 2


def test_policy_step_prints_a_policy_pinning_every_root(orgs: dict[str, Org]) -> None:
    text = orgs["appvendor"].run("policy").stdout
    policy = load_policy(text)
    roots = {org: json.loads((o.state / "identity.json").read_text())["root_key_id"] for org, o in orgs.items()}
    assert {a.org: a.root for a in policy.anchors} == roots


def test_sigterm_stops_the_node_gracefully(upstream_node: tuple[Org, subprocess.Popen[str]]) -> None:
    org, proc = upstream_node
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert org.run("healthcheck", check=False).returncode == 1


def test_the_kernel_supports_pr_set_mdwe() -> None:
    """The MDWE check above needs Linux >= 6.3; say so plainly when it is older."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(66, 0, 0, 0, 0) >= 0, f"PR_GET_MDWE: {os.strerror(ctypes.get_errno())} (Linux >= 6.3 needed)"
