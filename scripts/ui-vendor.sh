#!/usr/bin/env bash
# Copies the web console's third-party modules (xterm.js and its fit addon, versions pinned in
# crates/warren-server/ui-deps/package-lock.json) from npm into crates/warren-server/ui/vendor,
# which is committed: building Warren needs no npm. Run it after changing those versions;
# `--check` fails when the committed copies differ from npm's.
set -euo pipefail
cd "$(dirname "$0")/../crates/warren-server"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp ui-deps/package.json ui-deps/package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
out="$work/vendor"
mkdir -p "$out"
m="$work/node_modules/@xterm"
cp "$m/xterm/lib/xterm.mjs" "$m/xterm/css/xterm.css" "$out/"
cp "$m/addon-fit/lib/addon-fit.mjs" "$out/"
cp "$m/xterm/LICENSE" "$out/LICENSE.xterm"
# The modules end with a source map comment; the maps are not shipped.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/xterm.mjs" "$out/addon-fit.mjs"
if [ "${1:-}" = "--check" ]; then
  diff -r "$out" ui/vendor && echo "ui/vendor matches npm's packages"
else
  rm -rf ui/vendor && cp -r "$out" ui/vendor
  echo "ui/vendor: $(ls ui/vendor | tr '\n' ' ')"
fi
