#!/usr/bin/env bash
# Forks on the whole host, and the server's memory, while a Warren server holds N idle runc
# busybox sandboxes: scripts/measure-idle-forks.sh [N] [warren binary]. Starts a server of its
# own on 127.0.0.1:18090 with a scratch data dir, and deletes its sandboxes and stops it at the
# end. Run it on an otherwise idle host: every fork on the host counts.
set -euo pipefail
N=${1:-50}
W=${2:-target/debug/warren}
D=$(mktemp -d /var/tmp/warren-measure-XXXXXX)
root=$D/bbroot
mkdir -p "$root/bin"
cp "$(command -v busybox)" "$root/bin/busybox"
for tool in sh sleep; do ln -s busybox "$root/bin/$tool"; done
tar -C "$root" -cf "$D/bb.tar" .
WARREN_LOG=warn setsid "$W" serve --default-runtime runc --listen 127.0.0.1:18090 \
    --subnet 10.251.0.0/20 --data-dir "$D/data" >"$D/server.log" 2>&1 </dev/null &
server=$!
for _ in $(seq 100); do
    [ -f "$D/data/admin.key" ] && curl -fs 127.0.0.1:18090/healthz >/dev/null && break
    sleep 0.2
done
export WARREN_URL=http://127.0.0.1:18090 WARREN_API_KEY
WARREN_API_KEY=$(cat "$D/data/admin.key")
api() { curl -fs -H "authorization: Bearer $WARREN_API_KEY" "$@"; }
"$W" image import bb "$D/bb.tar" >/dev/null
for _ in $(seq "$N"); do
    api -o /dev/null -d '{"image":"bb","cmd":["sleep","3600"],"timeout_s":0}' "$WARREN_URL/v1/sandboxes"
done
sleep 8
a=$(awk '/^processes/ {print $2}' /proc/stat)
sleep 30
b=$(awk '/^processes/ {print $2}' /proc/stat)
echo "forks on the host in 30 s with $N idle runc sandboxes: $((b - a))"
grep VmRSS "/proc/$server/status"
for id in $(api "$WARREN_URL/v1/sandboxes" | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["sandboxes"]))'); do
    api -o /dev/null -X DELETE "$WARREN_URL/v1/sandboxes/$id"
done
kill -TERM "$server"
wait "$server" || true
rm -rf "$D"
