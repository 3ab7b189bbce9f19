#!/usr/bin/env bash
# npm-pin.sh DIR: the packages DIR/package-lock.json pins, in DIR/node_modules (install
# scripts not run). Idempotent: does nothing when that lock is already installed.
set -euo pipefail
dir="$1"
if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.warren-lock" 2>/dev/null; then
  echo "==> npm ci in $dir"
  npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts --loglevel=error
  cp "$dir/package-lock.json" "$dir/node_modules/.warren-lock"
fi
