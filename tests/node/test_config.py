"""Node config: the template loads, dump round-trips, unknown or invalid settings are refused
with a message naming the key, relative paths resolve against the file; `turtles node init`."""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

import pytest

from ledger.errors import PolicyError, TurtlesError
from ledger.holdings import HASH_CACHE_BYTES
from ledger.keys import SoftwareSigner
from node.cli import nodecmd
from node.config import (
    CONFIG_NAME,
    LimitsSection,
    NodeConfig,
    PeerConfig,
    dump_config,
    load_config,
    parse_config,
    render_template,
)

MINIMAL = """
[node]
origin = "acme.example/log"
org = "acme"
data_dir = "data"
[keys]
log_key = "keys/log.pem"
"""
VKEY = "beta.example/log+1a2b3c4d+AeRqR5i3a0kNE8Ma2m4yXTFGg7mGtFwHGoa5lECrEGGv"


def cli_main(argv: list[str]) -> int:
    """``turtles node ...`` through the verb module, with main's error printing."""
    parser = argparse.ArgumentParser(prog="turtles")
    nodecmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except TurtlesError as e:
        print(f"turtles: error: {e.message}", file=sys.stderr)
        return 2
    return code


def parse(text: str, base: Path = Path("/srv/node")) -> NodeConfig:
    return parse_config(text, base_dir=base)


def test_minimal_config_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.node.origin == "acme.example/log" and cfg.node.org == "acme"
    assert cfg.node.data_dir == Path("/srv/node/data")
    assert cfg.keys.log_key == "/srv/node/keys/log.pem"
    assert (cfg.node.host, cfg.node.port, cfg.node.public_url) == ("127.0.0.1", 0, None)
    assert cfg.node.verify_processes is None  # one per CPU
    assert parse(MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\nverify_processes = 0')).node.verify_processes == 0
    assert cfg.node.hash_cache_mib << 20 == HASH_CACHE_BYTES  # all logs together
    assert parse(MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\nhash_cache_mib = 0')).node.hash_cache_mib == 0
    assert cfg.limits == LimitsSection()
    assert cfg.limits.max_body_bytes == 2 << 20 and cfg.limits.max_batch == 1000
    assert cfg.limits.rate_per_second == 500 and cfg.limits.rate_burst == 1000 and cfg.limits.max_queue == 8192
    assert cfg.admission.roots == "any" and cfg.admission.orgs == ()
    assert cfg.replication.interval_s == 2 and cfg.replication.page_size == 256
    assert cfg.replication.timeout_s == 10 and cfg.replication.max_backoff_s == 60
    assert cfg.witness.enabled is True and cfg.witness.quorum == 0
    assert not cfg.tls.enabled and cfg.scheme == "http" and cfg.peers == ()


def test_full_config_and_dump_round_trip(tmp_path: Path) -> None:
    text = MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\npublic_url = "https://ledger.acme.example"') + f"""
[admission]
roots = ["sha256:{"ab" * 32}"]
orgs = ["acme", "beta"]
[limits]
max_body_bytes = 1000
rate_per_second = 2.5
request_timeout_s = 5
[tls]
cert = "tls/node.pem"
key = "tls/node.key"
ca = "/etc/turtles/ca.pem"
[[peer]]
url = "https://beta.example:8443/"
origin = "beta.example/log"
vkey = "{VKEY}"
[replication]
interval_s = 0.5
[witness]
enabled = false
quorum = 2
"""
    cfg = parse(text, tmp_path)
    assert cfg.node.public_url == "https://ledger.acme.example"
    assert cfg.admission.roots == ("sha256:" + "ab" * 32,) and cfg.admission.orgs == ("acme", "beta")
    assert cfg.limits.max_body_bytes == 1000 and cfg.limits.rate_per_second == 2.5
    assert cfg.tls.cert == tmp_path / "tls/node.pem" and cfg.tls.ca == Path("/etc/turtles/ca.pem")
    assert cfg.scheme == "https"
    assert cfg.peers == (PeerConfig("https://beta.example:8443", "beta.example/log", VKEY),)
    assert cfg.replication.interval_s == 0.5 and cfg.witness == type(cfg.witness)(False, 2)
    again = parse(dump_config(cfg), Path("/elsewhere"))
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (MINIMAL + "[nodes]\n", "'nodes'"),
        (MINIMAL.replace("[keys]", "colour = 1\n[keys]"), "node.colour"),
        (MINIMAL + "[limits]\nmax_bdy_bytes = 1\n", "limits.max_bdy_bytes"),
        (MINIMAL + "[limits]\nmax_queue = 0\n", "limits.max_queue"),
        (MINIMAL + "[limits]\nmax_queue = true\n", "limits.max_queue"),
        (MINIMAL + "[limits]\nrate_per_second = \"fast\"\n", "limits.rate_per_second"),
        (MINIMAL.replace('org = "acme"', 'org = "Acme Corp"'), "node.org"),
        (MINIMAL.replace('org = "acme"\n', ""), "node.org"),
        (MINIMAL.replace('log_key = "keys/log.pem"\n', ""), "keys.log_key"),
        (MINIMAL.replace('origin = "acme.example/log"', 'origin = "a b"'), "node.origin"),
        (MINIMAL.replace('data_dir = "data"', 'data_dir = 5'), "node.data_dir"),
        (MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\nport = 70000'), "node.port"),
        (MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\npublic_url = "ftp://x"'), "node.public_url"),
        (MINIMAL + "[admission]\nroots = \"some\"\n", "admission.roots"),
        (MINIMAL + "[admission]\nroots = [\"sha256:xyz\"]\n", "admission.roots[0]"),
        (MINIMAL + "[admission]\norgs = [\"ok\", \"NOT OK\"]\n", "admission.orgs[1]"),
        (MINIMAL + "[tls]\ncert = \"c.pem\"\n", "tls"),
        (MINIMAL + "[witness]\nenabled = 1\n", "witness.enabled"),
        (MINIMAL + "[witness]\nquorum = -1\n", "witness.quorum"),
        (MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\nverify_processes = -1'), "node.verify_processes"),
        (MINIMAL.replace('data_dir = "data"', 'data_dir = "data"\nhash_cache_mib = "1G"'), "node.hash_cache_mib"),
        (MINIMAL + "[[peer]]\nurl = \"http://x\"\norigin = \"b/log\"\n", "peer[0].vkey"),
        (MINIMAL + f"[[peer]]\nurl = \"x\"\norigin = \"b/log\"\nvkey = \"{VKEY}\"\n", "peer[0].url"),
        (MINIMAL + "[[peer]]\nurl = \"http://x\"\norigin = \"b/log\"\nvkey = \"nope\"\n", "peer[0].vkey"),
        (MINIMAL + f"[[peer]]\nurl = \"http://x\"\norigin = \"b/log\"\nvkey = \"{VKEY}\"\nextra = 1\n", "peer[0].extra"),
        (MINIMAL + "peer = 1\n", "peer"),
        (MINIMAL + "[node.sub]\n", "node.sub"),
        ("[node\n", "TOML"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(text: str, name: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(text)
    assert name in info.value.message


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="cannot read"):
        load_config(tmp_path / "bad.toml")


def test_template_loads_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    text = render_template(origin="acme.example/log", org="acme", port=8080)
    (tmp_path / CONFIG_NAME).write_text(text)
    cfg = load_config(tmp_path / CONFIG_NAME)
    assert cfg.node.port == 8080 and cfg.node.data_dir == tmp_path / "data"
    assert cfg.keys.log_key == str(tmp_path / "keys" / "log.pem")
    assert cfg.path == tmp_path / CONFIG_NAME
    assert text.count("#") > 20  # commented


def test_pkcs11_keyref_and_module_kept(tmp_path: Path) -> None:
    text = MINIMAL.replace('"keys/log.pem"', '"pkcs11:token=acme;object=log"') + (
        'pkcs11_module = "libsofthsm2.so"\npin_file = "pin.txt"\nroot_key = "pkcs11:token=acme;object=root"\n'
    )
    cfg = parse(text, tmp_path)
    assert cfg.keys.log_key == "pkcs11:token=acme;object=log"
    assert cfg.keys.pkcs11_module == "libsofthsm2.so" and cfg.keys.pin_file == tmp_path / "pin.txt"


def test_cli_node_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "Acme Node"
    assert cli_main(["node", "init", str(target), "--generate-log-key"]) == 0
    cfg = load_config(target / CONFIG_NAME)
    assert cfg.node.org == "acme-node" and cfg.node.origin == "acme-node.turtles.local/log"
    key = Path(cfg.keys.log_key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    SoftwareSigner.from_pem(key.read_bytes())
    assert "wrote" in capsys.readouterr().out
    # A second init refuses to overwrite; --force does, keeping the existing key.
    assert cli_main(["node", "init", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["node", "init", str(target), "--force", "--org", "acme", "--origin", "l.acme.example/log"]) == 0
    assert load_config(target / CONFIG_NAME).node.origin == "l.acme.example/log"
    # Nothing secret unless asked.
    bare = tmp_path / "bare"
    assert cli_main(["node", "init", str(bare), "--log-key", "pkcs11:token=t;object=o"]) == 0
    assert not (bare / "keys").exists()
    assert load_config(bare / CONFIG_NAME).keys.log_key == "pkcs11:token=t;object=o"
    assert cli_main(["node", "init", str(tmp_path / "x"), "--org", "Not Valid"]) == 2


def test_cli_node_start_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / CONFIG_NAME).write_text(MINIMAL + "[limits]\nbogus = 1\n")
    assert cli_main(["node", "start", "--config", str(tmp_path / CONFIG_NAME)]) == 2
    assert "limits.bogus" in capsys.readouterr().err
