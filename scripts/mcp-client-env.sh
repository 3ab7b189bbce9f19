#!/usr/bin/env bash
# The MCP clients the MCP test drives Warren with. The official MCP Python SDK, pinned (tests/mcp/requirements.txt), in a virtualenv at
# WARREN_MCP_VENV (default /opt/warren-mcp), for the MCP test (crates/warren-cli/tests/mcp.rs),
# whose agent script (tests/mcp/agent.py) drives `warren mcp` and the server's /mcp with it.
# Idempotent: does nothing when it is already installed at the pinned version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/venv-pin.sh" "${WARREN_MCP_VENV:-/opt/warren-mcp}" \
  "$root/tests/mcp/requirements.txt"
# The MCP inspector's CLI (npm, pinned by tests/mcp/js/package-lock.json) in
# tests/mcp/js/node_modules; install scripts are not run (the CLI needs none).
bash "$root/scripts/npm-pin.sh" "$root/tests/mcp/js"
