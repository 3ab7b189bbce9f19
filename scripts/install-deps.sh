#!/usr/bin/env bash
# Installs what Warren needs on Debian 12 (run as root): the OCI runtimes, busybox for the
# demo/test image, iproute2 and nftables for sandbox networks, python3 for the network tests'
# test-made DNS server, tmux for the terminal test, wrk and nginx for `warren bench proxy`,
# debootstrap for the `base` image, docker-registry (the tests and `warren bench image` run their
# own on 127.0.0.1), umoci, skopeo and htpasswd (apache2-utils) to build and push test images,
# a C toolchain for the build, and for the E2B SDK tests: python3-venv, Node.js with npm, and
# libnss-myhostname (so *.localhost names resolve to loopback, as browsers do), then E2B's SDKs
# themselves (scripts/e2b-sdk-env.sh), Schemathesis for the OpenAPI test (scripts/schemathesis-env.sh); then runsc (scripts/build-runsc.sh) and CRIU with a crun
# built against it (scripts/build-criu.sh), for runc sandboxes' pause, resume and forks.
# Chromium (Debian's) and playwright-core (npm, pinned in tests/ui/js) drive the web console's
# browser test (crates/warren-cli/tests/console.rs).
# runc and conntrack are for the Kubernetes test cluster (scripts/k8s-up.sh), which only the tests start.
# Idempotent: packages already present are left alone.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (sudo $0)" >&2
  exit 1
fi
pkgs=(crun runsc runc conntrack busybox-static zstd debootstrap docker-registry umoci skopeo apache2-utils iproute2 nftables python3 tmux wrk nginx build-essential pkg-config ca-certificates curl python3-venv libnss-myhostname chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "==> apt-get install nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bash "$(dirname "$0")/e2b-sdk-env.sh"
bash "$(dirname "$0")/schemathesis-env.sh"
bash "$(dirname "$0")/mcp-client-env.sh"
bash "$(dirname "$0")/npm-pin.sh" "$(dirname "$0")/../tests/ui/js"
bash "$(dirname "$0")/build-runsc.sh"
bash "$(dirname "$0")/build-criu.sh"
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
