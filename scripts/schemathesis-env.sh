#!/usr/bin/env bash
# Schemathesis, pinned (tests/openapi/requirements.txt), in a virtualenv at
# WARREN_SCHEMATHESIS_VENV (default /opt/warren-schemathesis), for the OpenAPI test
# (crates/warren-cli/tests/openapi.rs), which fuzzes a running server from its /openapi.json.
# Idempotent: does nothing when it is already installed at the pinned version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/venv-pin.sh" "${WARREN_SCHEMATHESIS_VENV:-/opt/warren-schemathesis}" \
  "$root/tests/openapi/requirements.txt"
