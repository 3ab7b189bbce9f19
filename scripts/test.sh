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
# The store's own tests and the API tests below run on PostgreSQL too (Debian's, started here;
# each test makes a database of its own, dropped here from the last run).
WARREN_TEST_POSTGRES=$(bash scripts/postgres-up.sh)
export WARREN_TEST_POSTGRES
runuser -u postgres -- psql -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'warren\_api\_%' OR datname LIKE 'warren\_test\_%'" |
  while read -r db; do runuser -u postgres -- psql -qc "DROP DATABASE \"$db\" WITH (FORCE)"; done
echo "==> cargo test"
# The Kubernetes backend's tests (named kube_*) run below, on a cluster of their own.
cargo test --locked --workspace -- --skip kube_
echo "==> the API tests again, on PostgreSQL"
WARREN_TEST_SERVER_DATABASE=postgres cargo test --locked -p warren-cli \
  --test lifecycle --test operations --test control --test teams --test team_limits --test api_errors --test logs --test survival --test keys \
  --test openapi --test exec --test files --test snapshots --test pause --test volumes --test pools \
  --test images --test registry_pull --test e2b_api
echo "==> the Kubernetes backend's tests, on a one-node test cluster (scripts/k8s-up.sh)"
# Stopped whatever the tests' outcome.
trap 'bash scripts/k8s-down.sh' EXIT
WARREN_TEST_KUBECONFIG=$(bash scripts/k8s-up.sh)
export WARREN_TEST_KUBECONFIG
cargo test --locked -p warren-cli --test kube
echo "==> Warren itself installed on the test cluster (deploy/kubernetes/, scripts/warren-image.sh)"
cargo test --locked -p warren-cli --test kube_install
echo "==> a node lost under sandboxes (its kubelet stopped: alone, as it stops every Pod's node)"
cargo test --locked -p warren-cli --test kube_node
