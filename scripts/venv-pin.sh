#!/usr/bin/env bash
# venv-pin.sh VENV REQUIREMENTS: a Python virtualenv at VENV holding exactly REQUIREMENTS
# (pinned), made again only when the pins changed (a copy of them is kept in the venv).
set -euo pipefail
venv="$1"
req="$2"
if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
  echo "==> $(grep -v '^#' "$req" | head -1) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
