#!/usr/bin/env bash
# Builds gVisor's runsc and containerd-shim-runsc-v1 from the gvisor.dev/gvisor Go module at the
# version in scripts/gvisor-version (the one place it is named), static (CGO_ENABLED=0), into
# /opt/warren/runsc/<version>/, where `warren serve` finds it first. Skips the build when that
# version is already there. Needs Go: the machine's, or with GOTOOLCHAIN set to a newer one when
# the module asks for more (the Go module proxy serves toolchains too). Run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(tr -d '[:space:]' < "$here/gvisor-version")"
dest="/opt/warren/runsc/$version"
if [ -x "$dest/runsc" ] && [ -x "$dest/containerd-shim-runsc-v1" ]; then
  exit 0
fi
go=go
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    go=/usr/local/go/bin/go
  else
    echo "build-runsc.sh: Go is needed to build runsc: install it (https://go.dev/dl, or a Go toolchain from your distribution, >= 1.21)" >&2
    exit 1
  fi
fi
echo "==> building runsc $version from gvisor.dev/gvisor (static; a few minutes the first time)"
start=$(date +%s)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# `go install` of a module outside any module: its own go.mod decides the Go version, and
# GOTOOLCHAIN=auto fetches a newer toolchain when the machine's is too old for it.
export CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS="${GOFLAGS:-} -buildvcs=false"
(cd "$scratch" && GOBIN="$scratch/bin" "$go" install \
  -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$version" \
  "gvisor.dev/gvisor/runsc@$version" "gvisor.dev/gvisor/shim@$version")
mkdir -p "$dest"
install -m 0755 "$scratch/bin/runsc" "$dest/runsc"
install -m 0755 "$scratch/bin/shim" "$dest/containerd-shim-runsc-v1"
echo "==> runsc $version built in $(( $(date +%s) - start )) s: $("$dest/runsc" --version | head -1)"
