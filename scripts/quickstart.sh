#!/usr/bin/env bash
# The main job on embedded defaults: install, build, start `warren serve` (SQLite and local disk
# under ~/.local/share/warren), build the `base` image (Debian with python3; cached after the
# first build), and run a command in a gVisor sandbox made from it.
# The server keeps running in the background afterwards; the script prints how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "==> cargo build --release (first build takes a few minutes)"
cargo build --release --locked -p warren-cli
W="$PWD/target/release/warren"
export WARREN_URL="${WARREN_URL:-http://127.0.0.1:8080}"
DATA="${WARREN_DATA_DIR:-$HOME/.local/share/warren}"
mkdir -p "$DATA"
if ! curl -fsS "$WARREN_URL/healthz" >/dev/null 2>&1; then
  echo "==> starting warren serve (log: $DATA/serve.log)"
  nohup "$W" serve >>"$DATA/serve.log" 2>&1 &
  echo $! >"$DATA/serve.pid"
  for _ in $(seq 1 100); do
    curl -fsS "$WARREN_URL/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  grep -A1 "Created the admin API key" "$DATA/serve.log" || true
fi
echo "==> warren image build-base   (debootstrap; a minute the first time, then cached)"
"$W" image build-base
echo "==> warren run --rm -- ...   (the base image, gVisor: the defaults)"
"$W" run --rm -- bash -c 'echo "Hello from $(hostname), a gVisor sandbox"; uname -sr; id; python3 -c "print(\"python\", 6*7)"'
echo
echo "Server still running (pid $(cat "$DATA/serve.pid" 2>/dev/null || echo '?')); stop it with: kill \$(cat $DATA/serve.pid)"
echo "Try: $W run --runtime runc -- bash    |    $W image pull REF    |    $W ls    |    $W bench"
