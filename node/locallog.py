"""A log directory on local disk (the CLI's ``--log DIR`` sink and ``turtles log`` verbs).

``DIR/log.toml`` names the log and its key; ``DIR/db`` is the LevelDB. The file holds no
secret: the key is a KEYREF (PEM path or pkcs11: URI) and the PIN comes from a pin file or
the environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputError, NotFoundError, PolicyError
from ledger.holdings import Holdings
from ledger.keyref import load_signer
from ledger.merkle import prove_inclusion
from ledger.trust import RootsPolicy

CONFIG_NAME = "log.toml"
_KEYS = {"origin", "log_key", "pkcs11_module", "pin_file", "roots"}


@dataclass(frozen=True)
class LocalLogConfig:
    """What ``DIR/log.toml`` says."""

    origin: str
    log_key: str
    pkcs11_module: str | None = None
    pin_file: str | None = None
    roots: str | tuple[str, ...] = "any"

    def to_toml(self) -> str:
        """The file's text (values quoted as TOML basic strings)."""
        lines = [
            "# turtles local log: the origin names the log in checkpoints; log_key signs them.",
            f"origin = {_q(self.origin)}",
            f"log_key = {_q(self.log_key)}",
        ]
        if self.pkcs11_module:
            lines.append(f"pkcs11_module = {_q(self.pkcs11_module)}")
        if self.pin_file:
            lines.append(f"pin_file = {_q(self.pin_file)}")
        roots = _q(self.roots) if isinstance(self.roots, str) else "[" + ", ".join(map(_q, self.roots)) + "]"
        lines.append(f"# which root records this log admits: \"any\" self-signed root, or key ids\nroots = {roots}")
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_local_config(directory: str | Path) -> LocalLogConfig:
    """Read and check ``DIR/log.toml``."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise NotFoundError(f"{directory} is not a turtles log directory (no {CONFIG_NAME})",
                            hint="create one with `turtles log init DIR --origin ORIGIN --key KEYREF`")
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: {e}") from e
    unknown = set(data) - _KEYS
    if unknown:
        raise PolicyError(f"{path}: unknown setting {sorted(unknown)[0]!r}")
    for key in ("origin", "log_key"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise PolicyError(f"{path}: {key} must be a non-empty string")
    roots = data.get("roots", "any")
    if not (roots == "any" or (isinstance(roots, list) and all(isinstance(r, str) for r in roots))):
        raise PolicyError(f"{path}: roots must be \"any\" or a list of key ids")
    return LocalLogConfig(
        origin=data["origin"], log_key=data["log_key"], pkcs11_module=data.get("pkcs11_module"),
        pin_file=data.get("pin_file"), roots=roots if isinstance(roots, str) else tuple(roots),
    )


def roots_policy(roots: str | tuple[str, ...]) -> RootsPolicy:
    """The admission policy for root records."""
    return RootsPolicy.any_self_signed() if roots == "any" else RootsPolicy.only_keys(frozenset(roots))


class LocalLog:
    """An open local log directory."""

    def __init__(self, holdings: Holdings, config: LocalLogConfig) -> None:
        self.holdings = holdings
        self.config = config

    @property
    def log(self) -> Any:
        """The own Log."""
        assert self.holdings.own is not None
        return self.holdings.own

    def append(self, envelope: Envelope) -> dict[str, Any]:
        """Append and return what a node's POST /v1/entries returns."""
        res = self.log.append(envelope)
        proof = prove_inclusion(res.index, res.size, self.log.store.hashes)
        return {
            "index": res.index, "size": res.size, "leaf_hash": res.leaf_hash.hex(),
            "checkpoint": res.checkpoint, "inclusion_proof": [h.hex() for h in proof],
            "duplicate": res.duplicate,
        }


def init_local_log(directory: str | Path, config: LocalLogConfig) -> LocalLog:
    """Create DIR/log.toml and an empty log in DIR/db; refuses an existing log directory."""
    d = Path(directory)
    if (d / CONFIG_NAME).exists():
        raise InputError(f"{d} already holds a log ({CONFIG_NAME} exists)")
    d.mkdir(parents=True, exist_ok=True)
    signer = load_signer(config.log_key, pkcs11_module=config.pkcs11_module, pin_file=config.pin_file)
    holdings = Holdings.open(d / "db", origin=config.origin, signer=signer,
                             roots=roots_policy(config.roots), create=True)
    (d / CONFIG_NAME).write_text(config.to_toml())
    return LocalLog(holdings, config)


@contextmanager
def open_local_log(directory: str | Path) -> Iterator[LocalLog]:
    """Open a local log directory for the duration of a ``with`` block."""
    config = load_local_config(directory)
    signer = load_signer(config.log_key, pkcs11_module=config.pkcs11_module, pin_file=config.pin_file)
    holdings = Holdings.open(Path(directory) / "db", origin=config.origin, signer=signer,
                             roots=roots_policy(config.roots))
    try:
        yield LocalLog(holdings, config)
    finally:
        holdings.close()


__all__ = ["LocalLog", "LocalLogConfig", "init_local_log", "load_local_config", "open_local_log"]
