"""The commented config file ``turtles node init`` writes, and TOML value quoting.

Kept apart from :mod:`node.config` (which parses and checks) because it is mostly text.
The template uses relative paths, so a node directory can be moved as a whole, and names
no secret: keys are KEYREFs, the PIN comes from a file or the environment.
"""

from __future__ import annotations

MiB = 1 << 20


def toml_value(value: object) -> str:
    """A TOML value: basic strings escaped, numbers and booleans as is, lists inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value)
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def render_template(*, origin: str, org: str, log_key: str = "keys/log.pem", port: int = 0) -> str:
    """A commented config for a new node directory (relative paths: the directory moves whole)."""
    return f"""\
# turtles node configuration. Relative paths are relative to this file's directory.
# Unknown keys are refused, so a typo is an error, not a silent default.

[node]
origin = {toml_value(origin)}        # names the log in every checkpoint; never change it
org = {toml_value(org)}                        # this organisation's name in trust verdicts
data_dir = "data"                      # LevelDB directory (own log + mirrors)
host = "127.0.0.1"                     # listen address
port = {port}                               # 0: an ephemeral port, printed at start
# public_url = "https://ledger.example.org"   # how others reach this node, if not host:port

[keys]
# KEYREF: a PEM file, or pkcs11:token=T;object=O (module and PIN below or from the env).
# The log key (Ed25519) signs checkpoints and witness cosignatures.
log_key = {toml_value(log_key)}
# root_key = "pkcs11:token=acme;object=root"   # informational: the org's HSM-held root
# pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
# pin_file = "pin.txt"

[admission]
roots = "any"                          # "any" self-signed root, or ["sha256:...", ...]
orgs = []                              # restrict roots to these orgs (empty: any org)

[limits]
max_body_bytes = {2 * MiB}                # one submission; larger bodies get 413 before buffering
max_batch = 1000                       # envelopes per POST /v1/entries:batch
max_batch_body_bytes = {32 * MiB}          # one batch body
rate_per_second = 500                  # requests per second per client address (429 beyond)
rate_burst = 1000
max_queue = 8192                       # submissions in flight (503 beyond)
request_timeout_s = 30

# [tls]                                # serve HTTPS; ca verifies peers' certificates
# cert = "tls/node.pem"
# key = "tls/node.key"
# ca = "tls/ca.pem"

# [[peer]]                             # a log to mirror and witness (repeat per peer)
# url = "http://127.0.0.1:8081"
# origin = "beta.example/log"
# vkey = "beta.example/log+1a2b3c4d+AeRq..."

[replication]
interval_s = 2
page_size = 256
timeout_s = 10
max_backoff_s = 60

[witness]
enabled = true
quorum = 0                             # peer witness cosignatures an own checkpoint needs to count as witnessed
"""


__all__ = ["render_template", "toml_value"]
