#!/usr/bin/env bash
# The whole test suite, as root (tests create real sandboxes under crun and gVisor, network
# namespaces and cgroups): formatting, lints, then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The object store the --object-store tests run against (only the tests need it).
bash scripts/build-garage.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> disk before the tests"
df -h . /var/tmp /dev/shm || true
echo "==> cargo test"
cargo test --locked --workspace
