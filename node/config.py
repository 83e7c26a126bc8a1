"""A node's configuration: one TOML file, read strictly into a frozen :class:`NodeConfig`.

Sections and keys (the replication and cluster code rely on these names)::

    [node]        origin, org, data_dir, host = "127.0.0.1", port = 0, public_url,
                  verify_processes (default: one per CPU; 0: verify in threads only),
                  hash_cache_mib = 256 (all logs together; 0: proofs read every hash from LevelDB)
    [keys]        log_key (KEYREF, Ed25519), root_key (KEYREF), pkcs11_module, pin_file
    [admission]   roots = "any" | ["sha256:..."], orgs = [...]
    [limits]      max_body_bytes, max_batch, max_batch_body_bytes, rate_per_second,
                  rate_burst, max_queue, request_timeout_s
    [tls]         cert, key, ca
    [[peer]]      url, origin, vkey
    [replication] interval_s, page_size, timeout_s, max_backoff_s
    [witness]     enabled, quorum

Invariants:
* An unknown section or key, or a value of the wrong type or range, is refused with a
  :class:`~ledger.errors.PolicyError` whose message names the key (``limits.max_queue``).
* Relative paths (data_dir, PEM KEYREFs, pin file, TLS files) are resolved against the
  directory of the config file, so a node directory can be moved as a whole.
* The file never holds a secret: keys are KEYREFs, the PIN comes from a file or the env.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ledger.errors import PolicyError
from node.config_template import render_template, toml_value

CONFIG_NAME = "node.toml"
MiB = 1 << 20
_ORG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_KEY_ID = re.compile(r"sha256:[0-9a-f]{64}")
T = TypeVar("T")


@dataclass(frozen=True)
class NodeSection:
    """``[node]``: who this node is and where it listens."""

    origin: str
    org: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    verify_processes: int | None = None
    """Worker processes verifying large batches (None: one per CPU; 0: threads only)."""
    hash_cache_mib: int = 256
    """Memory for all the logs' stored-hash caches together (ledger.Holdings.share_hash_cache)."""


@dataclass(frozen=True)
class KeysSection:
    """``[keys]``: KEYREFs of the log key (signs checkpoints and cosignatures) and root key."""

    log_key: str
    root_key: str | None = None
    pkcs11_module: str | None = None
    pin_file: Path | None = None


@dataclass(frozen=True)
class AdmissionSection:
    """``[admission]``: which root records the own log admits ("any" self-signed root, or ids)."""

    roots: str | tuple[str, ...] = "any"
    orgs: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitsSection:
    """``[limits]``: what one client may ask of the node (RELIABILITY P1, P6)."""

    max_body_bytes: int = 2 * MiB
    max_batch: int = 1000
    max_batch_body_bytes: int = 32 * MiB
    rate_per_second: float = 500.0
    rate_burst: int = 1000
    max_queue: int = 8192
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class TLSSection:
    """``[tls]``: serve HTTPS with ``cert``/``key``; ``ca`` verifies peers (client side)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @property
    def enabled(self) -> bool:
        """Whether the node serves HTTPS."""
        return self.cert is not None


@dataclass(frozen=True)
class PeerConfig:
    """One ``[[peer]]``: a log this node mirrors and witnesses."""

    url: str
    origin: str
    vkey: str


@dataclass(frozen=True)
class ReplicationSection:
    """``[replication]``: how often and how much to pull from peers."""

    interval_s: float = 2.0
    page_size: int = 256
    timeout_s: float = 10.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class WitnessSection:
    """``[witness]``: whether this node cosigns peers' checkpoints; how many cosignatures to want."""

    enabled: bool = True
    quorum: int = 0


@dataclass(frozen=True)
class NodeConfig:
    """A whole node configuration. Build with :func:`load_config` or :func:`parse_config`."""

    node: NodeSection
    keys: KeysSection
    admission: AdmissionSection = field(default_factory=AdmissionSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    tls: TLSSection = field(default_factory=TLSSection)
    peers: tuple[PeerConfig, ...] = ()
    replication: ReplicationSection = field(default_factory=ReplicationSection)
    witness: WitnessSection = field(default_factory=WitnessSection)
    path: Path | None = field(default=None, compare=False)

    @property
    def scheme(self) -> str:
        """``https`` when TLS is configured, else ``http``."""
        return "https" if self.tls.enabled else "http"


# --- reading -----------------------------------------------------------------------------


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a node config file.

    Raises:
        PolicyError: the file is missing, not TOML, or has an unknown or invalid setting.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise PolicyError(f"config file {p} does not exist", hint="create one with `turtles node init DIR`") from e
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"cannot read config file {p}: {e}") from e
    return parse_config(text, base_dir=p.resolve().parent, path=p.resolve())


def parse_config(text: str, *, base_dir: Path, path: Path | None = None) -> NodeConfig:
    """Parse config text; relative paths are resolved against ``base_dir``.

    Raises:
        PolicyError: not TOML, or an unknown or invalid setting (the message names it).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"config {path or '<text>'} is not valid TOML: {e}") from e
    r = _Reader(doc, base_dir)
    r.only("", {"node", "keys", "admission", "limits", "tls", "peer", "replication", "witness"})
    node = r.section("node", NodeSection, {
        "origin": r.origin, "org": r.org, "data_dir": r.path, "host": r.text,
        "port": r.port, "public_url": r.url, "verify_processes": r.count, "hash_cache_mib": r.count,
    }, required=("origin", "org", "data_dir"))
    keys = r.section("keys", KeysSection, {
        "log_key": r.keyref, "root_key": r.keyref, "pkcs11_module": r.module, "pin_file": r.path,
    }, required=("log_key",))
    admission = r.section("admission", AdmissionSection, {"roots": r.roots, "orgs": r.orgs})
    limits = r.section("limits", LimitsSection, {
        "max_body_bytes": r.positive_int, "max_batch": r.positive_int,
        "max_batch_body_bytes": r.positive_int, "rate_per_second": r.positive_number,
        "rate_burst": r.positive_int, "max_queue": r.positive_int,
        "request_timeout_s": r.positive_number,
    })
    tls = r.section("tls", TLSSection, {"cert": r.path, "key": r.path, "ca": r.path})
    if (tls.cert is None) != (tls.key is None):
        raise PolicyError("tls: cert and key must be set together", hint="set both tls.cert and tls.key, or neither")
    replication = r.section("replication", ReplicationSection, {
        "interval_s": r.positive_number, "page_size": r.positive_int,
        "timeout_s": r.positive_number, "max_backoff_s": r.positive_number,
    })
    witness = r.section("witness", WitnessSection, {"enabled": r.boolean, "quorum": r.count})
    return NodeConfig(
        node=node, keys=keys, admission=admission, limits=limits, tls=tls,
        peers=r.peers(), replication=replication, witness=witness, path=path,
    )


class _Reader:
    """Typed getters; each raises PolicyError naming the dotted key."""

    def __init__(self, doc: dict[str, Any], base_dir: Path) -> None:
        self.doc = doc
        self.base = base_dir

    def only(self, where: str, allowed: set[str], obj: Mapping[str, Any] | None = None) -> None:
        obj = self.doc if obj is None else obj
        for key in obj:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                kind = "setting" if where else "section"
                raise PolicyError(
                    f"config: unknown {kind} {name!r}",
                    hint=f"known: {', '.join(sorted(allowed))}", field=name,
                )

    def section(
        self, name: str, cls: type[T], getters: dict[str, Callable[[str, Any], Any]],
        required: tuple[str, ...] = (),
    ) -> T:
        obj = self.doc.get(name, {})
        if not isinstance(obj, dict):
            raise PolicyError(f"config: {name!r} must be a table ([{name}])", field=name)
        self.only(name, set(getters), obj)
        for key in required:
            if key not in obj:
                raise PolicyError(f"config: {name}.{key} is required", field=f"{name}.{key}")
        kwargs = {k: getters[k](f"{name}.{k}", v) for k, v in obj.items()}
        return cls(**kwargs)

    def peers(self) -> tuple[PeerConfig, ...]:
        items = self.doc.get("peer", [])
        if not isinstance(items, list):
            raise PolicyError("config: peers are written [[peer]] (an array of tables)", field="peer")
        out = []
        for i, obj in enumerate(items):
            where = f"peer[{i}]"
            if not isinstance(obj, dict):
                raise PolicyError(f"config: {where} must be a table", field=where)
            self.only(where, {"url", "origin", "vkey"}, obj)
            for key in ("url", "origin", "vkey"):
                if key not in obj:
                    raise PolicyError(f"config: {where}.{key} is required", field=f"{where}.{key}")
            out.append(PeerConfig(
                url=self.url(f"{where}.url", obj["url"]),
                origin=self.origin(f"{where}.origin", obj["origin"]),
                vkey=self.vkey(f"{where}.vkey", obj["vkey"]),
            ))
        origins = [p.origin for p in out]
        dup = next((o for o in origins if origins.count(o) > 1), None)
        if dup is not None:
            raise PolicyError(f"config: peer origin {dup!r} is listed twice", field="peer")
        return tuple(out)

    # --- value getters -------------------------------------------------------------------

    @staticmethod
    def _bad(name: str, want: str, value: Any) -> PolicyError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return PolicyError(f"config: {name} must be {want}, got {shown}", field=name)

    def text(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value or len(value) > 4096:
            raise self._bad(name, "a non-empty string", value)
        return value

    def origin(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        if len(text) > 255 or text.strip() != text or any(not c.isprintable() or c.isspace() for c in text):
            raise self._bad(name, "a log origin (printable, no spaces, e.g. example.com/log)", value)
        return text

    def org(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        if not _ORG.fullmatch(text):
            raise self._bad(name, "an org name (lowercase letters, digits, . _ -)", value)
        return text

    def url(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
            raise self._bad(name, "an http:// or https:// URL", value)
        return text.rstrip("/")

    def vkey(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        if text.count("+") < 2 or any(c.isspace() for c in text):
            raise self._bad(name, "a signed-note verifier key (name+hash+base64)", value)
        return text

    def path(self, name: str, value: Any) -> Path:
        text = self.text(name, value)
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base / p).resolve()

    def keyref(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        if text.startswith("pkcs11:"):
            return text
        return str(self.path(name, text))

    def module(self, name: str, value: Any) -> str:
        text = self.text(name, value)
        # A bare library name is left to the dynamic loader's search path.
        return str(self.path(name, text)) if "/" in text else text

    def boolean(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self._bad(name, "true or false", value)
        return value

    def _int(self, name: str, value: Any, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self._bad(name, f"an integer in {lo}..{hi}", value)
        return value

    def port(self, name: str, value: Any) -> int:
        return self._int(name, value, 0, 65535)

    def positive_int(self, name: str, value: Any) -> int:
        return self._int(name, value, 1, 1 << 40)

    def count(self, name: str, value: Any) -> int:
        return self._int(name, value, 0, 1 << 16)

    def positive_number(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1e9:
            raise self._bad(name, "a positive number", value)
        return float(value)

    def roots(self, name: str, value: Any) -> str | tuple[str, ...]:
        if value == "any":
            return "any"
        if not isinstance(value, list) or not value:
            raise self._bad(name, '"any" or a non-empty list of key ids', value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not _KEY_ID.fullmatch(item):
                raise self._bad(f"{name}[{i}]", "a key id (sha256:<64 hex>)", item)
        return tuple(value)

    def orgs(self, name: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self._bad(name, "a list of org names", value)
        return tuple(self.org(f"{name}[{i}]", v) for i, v in enumerate(value))


# --- writing -----------------------------------------------------------------------------


def dump_config(config: NodeConfig) -> str:
    """The config as TOML text; :func:`parse_config` of it gives back an equal config."""
    lines: list[str] = []
    sections: list[tuple[str, object]] = [
        ("node", config.node), ("keys", config.keys), ("admission", config.admission),
        ("limits", config.limits), ("tls", config.tls),
        ("replication", config.replication), ("witness", config.witness),
    ]
    for name, section in sections:
        lines.append(f"[{name}]")
        for f in fields(section):  # type: ignore[arg-type]
            value = getattr(section, f.name)
            if value is None or value == ():
                continue
            lines.append(f"{f.name} = {toml_value(value)}")
        lines.append("")
    for peer in config.peers:
        lines += ["[[peer]]"] + [f"{k} = {toml_value(getattr(peer, k))}" for k in ("url", "origin", "vkey")] + [""]
    return "\n".join(lines)


__all__ = [
    "CONFIG_NAME",
    "AdmissionSection",
    "KeysSection",
    "LimitsSection",
    "NodeConfig",
    "NodeSection",
    "PeerConfig",
    "ReplicationSection",
    "TLSSection",
    "WitnessSection",
    "dump_config",
    "load_config",
    "parse_config",
    "render_template",
]
