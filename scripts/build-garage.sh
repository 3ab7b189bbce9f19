#!/usr/bin/env bash
# Builds Garage, the S3-compatible object store the tests run on 127.0.0.1 for
# `warren serve --object-store s3://...`, from crates.io at the version in
# scripts/garage-version (the one place it is named), into /opt/warren/garage/<version>/bin/.
# Skips the build when that version is there. Only the tests need it; Warren itself talks to
# any S3 store. Run as root, with cargo on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(tr -d '[:space:]' < "$here/garage-version")"
dest="/opt/warren/garage/$version"
if [ -x "$dest/bin/garage" ]; then
  exit 0
fi
echo "==> building garage $version from crates.io (about 10 minutes the first time)"
start=$(date +%s)
# SQLite for its metadata (no LMDB), no metrics or K2V: only the S3 API is used.
cargo install --quiet --locked garage --version "$version" --root "$dest" \
  --no-default-features --features bundled-libs,sqlite
echo "==> garage $version built in $(( $(date +%s) - start )) s: $("$dest/bin/garage" --version 2>&1 | head -1)"
