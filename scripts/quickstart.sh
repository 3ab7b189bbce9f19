#!/usr/bin/env bash
# The main job on embedded defaults: install, build, start `warren serve` (SQLite and local disk
# under ~/.local/share/warren), import a busybox image, and run a command in a gVisor sandbox.
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
echo "==> warren image import busybox --busybox"
"$W" image import busybox --busybox
echo "==> warren run --rm busybox -- sh -c '...'   (gVisor, the default runtime)"
"$W" run --rm busybox -- sh -c 'echo "Hello from $(hostname), a gVisor sandbox"; uname -sr; id'
echo
echo "Server still running (pid $(cat "$DATA/serve.pid" 2>/dev/null || echo '?')); stop it with: kill \$(cat $DATA/serve.pid)"
echo "Try: $W run busybox --runtime runc -- sh    |    $W ls    |    $W bench"
