#!/usr/bin/env bash
# E2B's own SDKs, pinned, for the compatibility tests (crates/warren-cli/tests/e2b_sdk.rs):
# the Python `e2b` package with pytest in a virtualenv (WARREN_E2B_VENV, default
# /opt/warren-e2b/venv) and the npm `e2b` package in tests/e2b/js/node_modules.
# Idempotent: does nothing when both are already installed at the pinned versions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${WARREN_E2B_VENV:-/opt/warren-e2b/venv}"
req="$root/tests/e2b/requirements.txt"
stamp="$venv/.requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  echo "==> E2B Python SDK into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
js="$root/tests/e2b/js"
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.warren-lock" 2>/dev/null; then
  echo "==> E2B JavaScript SDK into $js/node_modules"
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
  cp "$js/package-lock.json" "$js/node_modules/.warren-lock"
fi
