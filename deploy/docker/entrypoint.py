#!/usr/bin/env python3
"""Container entry point of a turtles node: ``init``, ``config``, ``node``, ``publish``,
``policy``, ``healthcheck``.

One image serves every organisation; what differs is the base node config mounted at
``$TURTLES_CONFIG`` (deploy/config/ORG.toml) and the volumes. The steps, in the order
docker-compose.yml runs them:

``init`` (one-shot, once per organisation; safe to re-run: it only does what is missing)
    1. SoftHSM2 only: make the token directory, write random user and SO PINs to 0600
       files (never to the environment or a log) and run ``softhsm2-util --init-token``
       for the token the config's KEYREFs name. softhsm2-util takes PINs only as
       arguments, so they are on its command line for that one call, in a container that
       runs nothing else and has no network; turtles itself reads the PIN from the file.
    2. ``turtles keys generate --hsm KEYREF`` for the root key and the log key when the
       token does not hold them yet: generated inside the token, non-extractable.
    3. Write the public keys to ``$TURTLES_STATE/keys/`` and announce the node (origin, URL,
       log verifier key, root key id) as ``$TURTLES_PEERS/ORG.json`` for the other nodes.
``config``
    Compose the node's running config ``$TURTLES_STATE/node.toml`` from the base config:
    every other announced node becomes a ``[[peer]]``, and when the base config has no
    ``[admission]`` table the own log admits only this organisation's root key.
``node``
    ``config``, then ``exec turtles node start`` (PID 1 receives SIGTERM: graceful stop).
``publish`` (one-shot, after the node is healthy)
    When the own log is empty: ``turtles root init`` (the self-signed root record, signed
    in the token) and ``turtles delegate`` of purpose ``log`` from the root to the log key.
``policy``
    Print a consumer policy (TOML) pinning every announced root, for ``turtles verify``.
``healthcheck``
    Exit 0 when ``GET /healthz`` on the node answers 200.

Environment: ``TURTLES_CONFIG`` (default /etc/turtles/node.toml), ``TURTLES_STATE``
(/var/lib/turtles), ``TURTLES_PEERS`` (/var/lib/turtles-peers), ``TURTLES_SO_PIN_FILE``
(the SO PIN, SoftHSM2 only; default: ``so-pin`` beside the config's ``pin_file``),
``TURTLES_NODE_URL`` (publish: default the config's ``public_url``), ``TURTLES_ROOT_ALG``
(ed25519 or p256; the log key is always Ed25519), ``SOFTHSM2_CONF``. The PKCS#11 module
and PIN file come from the config's ``[keys]``.

Invariants: the PIN is read from a file by turtles itself; this script never logs it.
Every file it writes is written whole (temp file + rename). Nothing here decides trust:
it only runs the same ``turtles`` verbs an operator would.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from ledger.checkpoint import cosigner_vkey, verifier_key
from ledger.errors import NotFoundError, TurtlesError
from ledger.hsm import parse_pkcs11_uri
from ledger.keyref import is_pkcs11_uri, load_public_key
from ledger.keys import PublicKey
from node.config import AdmissionSection, NodeConfig, PeerConfig, dump_config, load_config

TURTLES = shutil.which("turtles") or "turtles"
_LABEL = re.compile(r"^\s*Label:\s*(.*?)\s*$", re.MULTILINE)


def env_path(name: str, default: str) -> Path:
    """A path from the environment, or its default."""
    return Path(os.environ.get(name) or default)


def config_path() -> Path:
    return env_path("TURTLES_CONFIG", "/etc/turtles/node.toml")


def state_dir() -> Path:
    return env_path("TURTLES_STATE", "/var/lib/turtles")


def peers_dir() -> Path:
    return env_path("TURTLES_PEERS", "/var/lib/turtles-peers")


def say(text: str) -> None:
    print(f"turtles-entrypoint: {text}", flush=True)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` whole: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def run(argv: list[str], *, quiet: bool = False) -> str:
    """Run a command; its stdout, or exit with its stderr (never echoing argv: it may hold a PIN)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"turtles-entrypoint: {Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''} "
                         f"failed with status {done.returncode}")
    if not quiet and done.stdout:
        sys.stdout.write(done.stdout)
    return done.stdout


def key_options(config: NodeConfig) -> list[str]:
    """``--pkcs11-module M --pin-file F`` from the config's [keys]."""
    opts = []
    if config.keys.pkcs11_module:
        opts += ["--pkcs11-module", config.keys.pkcs11_module]
    if config.keys.pin_file:
        opts += ["--pin-file", str(config.keys.pin_file)]
    return opts


# --- init ----------------------------------------------------------------------------------------


def is_softhsm(config: NodeConfig) -> bool:
    return "softhsm" in Path(config.keys.pkcs11_module or os.environ.get("TURTLES_PKCS11_MODULE", "")).name


def ensure_pin_files(config: NodeConfig) -> tuple[Path, Path]:
    """The user and SO PIN files (made with random PINs when missing; SoftHSM2 only)."""
    if config.keys.pin_file is None:
        raise SystemExit("turtles-entrypoint: [keys] pin_file is required: the PIN comes from a file")
    pin = config.keys.pin_file
    so_pin = env_path("TURTLES_SO_PIN_FILE", str(pin.with_name("so-pin")))
    for path in (pin, so_pin):
        if not path.exists():
            write_file(path, secrets.token_hex(16) + "\n", mode=0o600)
            say(f"wrote a new random PIN to {path} (mode 0600)")
    return pin, so_pin


def token_labels() -> set[str]:
    out = run(["softhsm2-util", "--show-slots"], quiet=True)
    return {m.group(1) for m in _LABEL.finditer(out) if m.group(1)}


def ensure_softhsm_token(config: NodeConfig, label: str) -> None:
    """Initialise SoftHSM2 token ``label`` unless it exists."""
    conf = os.environ.get("SOFTHSM2_CONF")
    if conf:
        text = Path(conf).read_text()
        m = re.search(r"^\s*directories\.tokendir\s*=\s*(\S+)", text, re.MULTILINE)
        if m:
            Path(m.group(1)).mkdir(parents=True, exist_ok=True, mode=0o700)
    if label in token_labels():
        say(f"SoftHSM2 token {label!r} exists")
        return
    pin_file, so_pin_file = ensure_pin_files(config)
    pin = pin_file.read_text().splitlines()[0].strip()
    so_pin = so_pin_file.read_text().splitlines()[0].strip()
    # softhsm2-util takes the PINs only as arguments: this one-shot container runs nothing else.
    run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin], quiet=True)
    say(f"initialised SoftHSM2 token {label!r}")


def ensure_key(config: NodeConfig, keyref: str, name: str, alg: str) -> PublicKey:
    """The public key ``keyref`` names, generated first (in the token, or a 0600 PEM) if missing."""
    pin_file = str(config.keys.pin_file) if config.keys.pin_file else None
    public: PublicKey | None = None
    where: list[str] = []
    if is_pkcs11_uri(keyref):
        try:
            public = load_public_key(keyref, pkcs11_module=config.keys.pkcs11_module, pin_file=pin_file)
        except NotFoundError:
            where = ["--hsm", keyref, *key_options(config)]
    elif Path(keyref).exists():
        public = load_public_key(keyref)
    else:
        Path(keyref).parent.mkdir(parents=True, exist_ok=True)
        where = ["--out", keyref]
    if public is None:
        out = run([TURTLES, "keys", "generate", *where, "--alg", alg], quiet=True)
        public = PublicKey.from_pem(out.split("\n", 1)[1].encode())
        say(f"generated the {name} key {keyref}: {public.key_id}")
    else:
        say(f"the {name} key {keyref} exists: {public.key_id}")
    write_file(state_dir() / "keys" / f"{name}.pub", public.to_pem().decode())
    return public


def identity(config: NodeConfig, root: PublicKey, log: PublicKey) -> dict[str, Any]:
    """What other nodes and consumers need to know about this node (no secret)."""
    node = config.node
    url = node.public_url or f"{config.scheme}://{node.host}:{node.port}"
    return {
        "org": node.org, "origin": node.origin, "url": url,
        "vkey": verifier_key(node.origin, log.raw), "cosigner_vkey": cosigner_vkey(node.origin, log.raw),
        "root_key_id": root.key_id, "log_key_id": log.key_id,
    }


def cmd_init(config: NodeConfig) -> dict[str, Any]:
    """Make the token, the keys and the announcement (each only if missing)."""
    if config.keys.root_key is None:
        raise SystemExit("turtles-entrypoint: [keys] root_key is required (the organisation's HSM root)")
    refs = [r for r in (config.keys.root_key, config.keys.log_key) if is_pkcs11_uri(r)]
    if refs and is_softhsm(config):
        for label in sorted({parse_pkcs11_uri(r).token or "" for r in refs} - {""}):
            ensure_softhsm_token(config, label)
    root = ensure_key(config, config.keys.root_key, "root", os.environ.get("TURTLES_ROOT_ALG", "ed25519"))
    log = ensure_key(config, config.keys.log_key, "log", "ed25519")
    ident = identity(config, root, log)
    write_file(state_dir() / "identity.json", json.dumps(ident, indent=2) + "\n")
    write_file(peers_dir() / f"{config.node.org}.json", json.dumps(ident, indent=2) + "\n")
    say(f"announced {config.node.org}: origin {ident['origin']}, root {root.key_id}, log vkey {ident['vkey']}")
    return ident


# --- config and node -----------------------------------------------------------------------------


def announced() -> list[dict[str, Any]]:
    """Every node announcement in the peers directory, by org."""
    out = []
    for path in sorted(peers_dir().glob("*.json")):
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not {"org", "origin", "url", "vkey", "root_key_id"} <= set(doc):
            raise SystemExit(f"turtles-entrypoint: {path} is not a node announcement")
        out.append(doc)
    return out


def compose(base: NodeConfig, base_text: str, own: dict[str, Any], others: list[dict[str, Any]]) -> NodeConfig:
    """The running config: the base, every other announced node as a peer, admission pinned.

    Peers the base config lists already are kept as written; an announced node whose origin
    is listed is not added twice. Without an ``[admission]`` table in the base config, the
    own log admits only this organisation's root key.
    """
    peers = list(base.peers)
    listed = {p.origin for p in peers} | {base.node.origin}
    for doc in others:
        if doc["origin"] not in listed:
            peers.append(PeerConfig(url=str(doc["url"]).rstrip("/"), origin=doc["origin"], vkey=doc["vkey"]))
            listed.add(doc["origin"])
    admission = base.admission
    if "admission" not in tomllib.loads(base_text):
        admission = AdmissionSection(roots=(own["root_key_id"],))
    return replace(base, peers=tuple(peers), admission=admission)


def cmd_config(base_path: Path) -> Path:
    """Write ``$TURTLES_STATE/node.toml``; returns its path."""
    base_text = base_path.read_text()
    base = load_config(base_path)
    own_path = state_dir() / "identity.json"
    if not own_path.exists():
        raise SystemExit(f"turtles-entrypoint: {own_path} is missing: run the init step first")
    own = json.loads(own_path.read_text())
    others = [d for d in announced() if d["org"] != base.node.org]
    config = compose(base, base_text, own, others)
    out = state_dir() / "node.toml"
    header = (f"# Generated by turtles-entrypoint from {base_path} and {peers_dir()}/*.json:\n"
              "# edit the base config, not this file.\n")
    write_file(out, header + dump_config(config))
    load_config(out)  # refuse to start from a config that does not load
    say(f"wrote {out}: {len(config.peers)} peer(s): {', '.join(p.origin for p in config.peers) or 'none'}")
    return out


def cmd_node(base_path: Path) -> None:
    running = cmd_config(base_path)
    ready = state_dir() / "ready.json"
    argv = [TURTLES, "node", "start", "--config", str(running), "--ready-file", str(ready)]
    sys.stdout.flush()
    os.execvp(TURTLES, argv)


# --- publish, policy, healthcheck ----------------------------------------------------------------


def local_url(config: NodeConfig) -> str:
    """How this container reaches its own node: the configured port on loopback."""
    port = config.node.port
    ready = state_dir() / "ready.json"
    if port == 0 and ready.exists():  # an ephemeral port: the node wrote the one it bound
        port = int(str(json.loads(ready.read_text())["url"]).rsplit(":", 1)[1])
    host = config.node.host if config.node.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{config.scheme}://{host}:{port}"


def node_url(config: NodeConfig) -> str:
    """The node's URL for publish: ``$TURTLES_NODE_URL``, else ``public_url``, else local."""
    return (os.environ.get("TURTLES_NODE_URL") or config.node.public_url or local_url(config)).rstrip("/")


def _tls(config: NodeConfig) -> ssl.SSLContext | None:
    if config.scheme != "https":
        return None
    return ssl.create_default_context(cafile=str(config.tls.ca) if config.tls.ca else None)


def get_json(url: str, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        return json.loads(resp.read())


def cmd_publish(config: NodeConfig) -> None:
    """Publish the root record and the log key's delegation, unless the own log has entries."""
    url = node_url(config)
    size = int(get_json(url + "/v1/log", _tls(config))["size"])
    if size > 0:
        say(f"{config.node.origin} already holds {size} entries: nothing to publish")
        return
    if config.keys.root_key is None:
        raise SystemExit("turtles-entrypoint: [keys] root_key is required to publish the root record")
    log_pub = state_dir() / "keys" / "log.pub"
    opts = key_options(config)
    run([TURTLES, "root", "init", "--key", config.keys.root_key, "--org", config.node.org, "--node", url, *opts])
    # No expiry: a log key is judged at verification time, so an expired delegation would
    # make every record of the log untrusted. Scope: this log's origin only.
    run([TURTLES, "delegate", "--key", config.keys.root_key, "--to", str(log_pub),
         "--name", f"{config.node.org} log key", "--artefacts", config.node.origin, "--purpose", "log",
         "--max-depth", "0", "--node", url, *opts])
    say(f"published the root record and the log key delegation of {config.node.org} to {url}")


def cmd_policy() -> None:
    """Print a consumer policy pinning every announced root (purpose release)."""
    docs = announced()
    if not docs:
        raise SystemExit(f"turtles-entrypoint: no node announcements in {peers_dir()}")
    lines = ["# Consumer policy generated by turtles-entrypoint policy; see docs/policy.md.",
             "# Log keys, to pin with turtles verify --log-key (optional: anchors delegate them):"]
    lines += [f"#   --log-key '{d['vkey']}'" for d in docs]
    lines += ["# Witness cosigner keys, for turtles verify --witness (they count toward witness_quorum):"]
    lines += [f"#   --witness '{d['cosigner_vkey']}'" for d in docs if d.get("cosigner_vkey")]
    for d in docs:
        lines += ["", "[[anchor]]", f'org = "{d["org"]}"', f'root = "{d["root_key_id"]}"',
                  'purposes = ["release"]']
    lines += ["", "[trust]", "max_transitive_hops = 0", "require_hsm_root = true", "witness_quorum = 0",
              'allowed_algorithms = ["ed25519", "p256"]', "max_path_length = 8", ""]
    sys.stdout.write("\n".join(lines))


def cmd_healthcheck(config: NodeConfig) -> int:
    try:
        with urllib.request.urlopen(local_url(config) + "/healthz", timeout=5, context=_tls(config)) as resp:
            return 0 if resp.status == 200 else 1
    except (OSError, urllib.error.URLError, ValueError):
        return 1


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"init", "config", "node", "publish", "policy", "healthcheck"}:
        sys.stderr.write("usage: turtles-entrypoint init|config|node|publish|policy|healthcheck\n")
        return 2
    step = argv[0]
    if step == "policy":
        cmd_policy()
        return 0
    base = config_path()
    running = state_dir() / "node.toml"
    if step in ("publish", "healthcheck") and running.exists():
        config = load_config(running)
    else:
        config = load_config(base)
    if step == "init":
        cmd_init(config)
    elif step == "config":
        cmd_config(base)
    elif step == "node":
        cmd_node(base)
    elif step == "publish":
        cmd_publish(config)
    else:
        return cmd_healthcheck(config)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except TurtlesError as e:
        hint = f" (hint: {e.hint})" if e.hint else ""
        sys.exit(f"turtles-entrypoint: {e.message}{hint}")
