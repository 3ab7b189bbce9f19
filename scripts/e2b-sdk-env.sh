#!/usr/bin/env bash
# E2B's own SDKs, pinned, for the compatibility tests (crates/warren-cli/tests/e2b_sdk.rs):
# the Python `e2b` package with pytest in two virtualenvs under WARREN_E2B_VENVS (default
# /opt/warren-e2b): `venv` (the newest SDK, tests/e2b/requirements.txt) and `venv-2.45` (the
# last one that checks the key's format, requirements-2.45.txt); and the npm `e2b` packages
# (newest and 2.45) in tests/e2b/js/node_modules.
# Idempotent: does nothing when all are already installed at the pinned versions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venvs="${WARREN_E2B_VENVS:-/opt/warren-e2b}"
for pair in "venv:requirements.txt" "venv-2.45:requirements-2.45.txt"; do
  bash "$root/scripts/venv-pin.sh" "$venvs/${pair%%:*}" "$root/tests/e2b/${pair#*:}"
done
js="$root/tests/e2b/js"
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.warren-lock" 2>/dev/null; then
  echo "==> E2B JavaScript SDK into $js/node_modules"
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
  cp "$js/package-lock.json" "$js/node_modules/.warren-lock"
fi
