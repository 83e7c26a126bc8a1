#!/usr/bin/env bash
# Installs what turtles needs on a fresh Debian machine: SoftHSM2 (apt), the system's
# libsodium (apt; ledger/_ed25519.py verifies with it when present, else with PyNaCl's own
# copy, ~10% slower) and a virtualenv.
# Idempotent: does nothing that is already done. Used by every Makefile target.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_apt+=(softhsm2)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
compgen -G "/usr/lib/*/libsodium.so.2[36]" >/dev/null || need_apt+=(libsodium23)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "bootstrap: installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[test]' >&2
  rm -f .venv/.installed-*; touch "$stamp"
fi
