#!/usr/bin/env bash
# Starts Debian's PostgreSQL (the `postgresql` package) for the tests unless it runs, makes a
# `warren` role that may create databases (each test makes its own), and prints the URL the
# tests take as WARREN_TEST_POSTGRES. Listens on 127.0.0.1 only (Debian's default).
# Only the tests need it: Warren itself runs on SQLite unless given --database postgres://…
set -euo pipefail
# Only the URL goes to stdout (the caller captures it): pg_ctlcluster and friends print notes
# such as "Removed stale pid file." there, which once became part of the URL in CI. Their
# output goes to stderr instead, and no daemon they start keeps the caller's pipe open.
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q "install ok installed"; then
    echo "==> apt-get install postgresql" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver main"; then
    pg_createcluster "$ver" main >/dev/null
fi
if ! pg_lsclusters -h | awk '$1=="'"$ver"'" && $2=="main" {print $4}' | grep -qx online; then
    pg_ctlcluster "$ver" main start >&2
fi
port=$(pg_lsclusters -h | awk '$1=="'"$ver"'" && $2=="main" {print $3}')
for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$port"
psql_admin() { runuser -u postgres -- psql -p "$port" -qtAc "$1"; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = 'warren'")" != 1 ]; then
    psql_admin "CREATE ROLE warren LOGIN PASSWORD 'warren' CREATEDB" >&2
fi
echo "postgres://warren:warren@127.0.0.1:$port/postgres"

