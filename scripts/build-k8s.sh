#!/usr/bin/env bash
# Builds the one-node test cluster's programs from their Go modules (the Go module proxy), static,
# into versioned directories under /opt/warren (skipped when already there):
#   /opt/warren/k8s/<k8s-version>/        kube-apiserver kube-controller-manager kube-scheduler
#                                         kubelet kube-proxy kubectl
#   /opt/warren/etcd/<etcd-version>/      etcd etcdctl
#   /opt/warren/containerd/<version>/     containerd containerd-shim-runc-v2 ctr, and
#                                         containerd-shim-runsc-v1 (see below)
# The versions are in scripts/{k8s,etcd,containerd}-version. Kubernetes 1.34: the newest minor
# whose kubelet runs on a cgroup v1 (hybrid) host without being told to (1.35 refuses unless
# `failCgroupV1: false`); etcd 3.6 is the line it is tested with. Test infrastructure, not
# product. Prints each cold build's time. Run as root. WARREN_OPT puts them elsewhere than
# /opt/warren (to time a cold build beside the cached one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s="$(tr -d '[:space:]' < "$here/k8s-version")"
etcd="$(tr -d '[:space:]' < "$here/etcd-version")"
containerd="$(tr -d '[:space:]' < "$here/containerd-version")"
gvisor="$(tr -d '[:space:]' < "$here/gvisor-version")"
export CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" GOFLAGS="${GOFLAGS:-} -buildvcs=false"
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  else
    echo "build-k8s.sh: Go is needed to build the test cluster (https://go.dev/dl, >= 1.24)" >&2
    exit 1
  fi
fi

opt="${WARREN_OPT:-/opt/warren}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

took() { echo "==> $1 built in $(( $(date +%s) - $2 )) s"; }

# A wrapper module for modules `go install` refuses (their go.mod replaces others by path):
# `wrapper_init DIR` makes it and enters it; the caller adds its requires (and replaces);
# `wrapper_tidy PKG...` imports the packages to build and resolves the rest.
wrapper_init() {
  mkdir -p "$1"
  cd "$1"
  go mod init "warren.test/$(basename "$1")" >/dev/null 2>&1
}
wrapper_tidy() {
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "%s"\n' "$@"
    printf ')\n'
  } > tools.go
  go mod tidy >/dev/null 2>&1 || go mod tidy
}

# Kubernetes: its go.mod requires the k8s.io/* staging modules at v0.0.0 and replaces them by
# local paths, so `go install k8s.io/kubernetes/cmd/...@v` cannot work; a wrapper module
# requires it and replaces each staging module by its published v0.<minor>.<patch>.
dest="$opt/k8s/$k8s"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
missing=()
for c in "${components[@]}"; do [ -x "$dest/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> building Kubernetes $k8s: ${missing[*]} (~5 min cold on 2 cores)"
  start=$(date +%s)
  wrapper_init "$scratch/k8s"
  gomod="$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  staging="v0${k8s#v1}"
  # Every `k8s.io/x => ./staging/src/k8s.io/x` of its go.mod, at the published version.
  replaces="$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  for m in $replaces; do
    go mod edit -replace "$m=$m@$staging"
  done
  go mod edit -require "k8s.io/kubernetes@$k8s"
  wrapper_tidy "${components[@]/#/k8s.io/kubernetes/cmd/}"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$k8s" | cut -d. -f2)"
  mkdir -p "$scratch/k8s-bin"
  for c in "${missing[@]}"; do
    go build -ldflags "$ldflags" -o "$scratch/k8s-bin/$c" "k8s.io/kubernetes/cmd/$c"
  done
  mkdir -p "$dest"
  install -m 0755 "$scratch/k8s-bin/"* "$dest/"
  took "Kubernetes $k8s" "$start"
fi

# etcd: its modules' go.mod files replace each other by local paths, so `go install` refuses
# them; a wrapper module requires them at their published versions.
dest="$opt/etcd/$etcd"
if ! [ -x "$dest/etcd" ]; then
  echo "==> building etcd $etcd"
  start=$(date +%s)
  wrapper_init "$scratch/etcd"
  go mod edit -require "go.etcd.io/etcd/server/v3@$etcd" -require "go.etcd.io/etcd/etcdctl/v3@$etcd"
  wrapper_tidy go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/server/v3
  go build -ldflags "-s -w" -o "$scratch/etcd-bin/etcd" go.etcd.io/etcd/server/v3
  go build -ldflags "-s -w" -o "$scratch/etcd-bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
  mkdir -p "$dest"
  install -m 0755 "$scratch/etcd-bin/"* "$dest/"
  took "etcd $etcd" "$start"
fi

# containerd 2 (its CRI plugin is what kubelet talks to) and its runc shim; without cgo, so
# without the btrfs snapshotter (overlayfs is the one used).
dest="$opt/containerd/$containerd"
if ! [ -x "$dest/containerd" ]; then
  echo "==> building containerd $containerd"
  start=$(date +%s)
  (cd "$scratch" && GOBIN="$scratch/ctrd-bin" go install -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd" \
    "github.com/containerd/containerd/v2/cmd/containerd@$containerd" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd" \
    "github.com/containerd/containerd/v2/cmd/ctr@$containerd")
  mkdir -p "$dest"
  install -m 0755 "$scratch/ctrd-bin/"* "$dest/"
  took "containerd $containerd" "$start"
fi

# gVisor's containerd shim, for the cluster's `runsc` handler, from the same gVisor as runsc,
# with one change: its start sets the shim's OOM score to -999 and fails when the kernel says
# no, which it does to a root without CAP_SYS_RESOURCE (this VM's root lacks it; a normal
# host's root has it). Here the shim keeps the score it inherits. The shim under /opt/warren/
# runsc stays as gVisor publishes it.
if ! [ -x "$dest/containerd-shim-runsc-v1" ]; then
  echo "==> building containerd-shim-runsc-v1 ($gvisor, OOM score left as inherited)"
  start=$(date +%s)
  src="$(go env GOMODCACHE)/gvisor.dev/gvisor@$gvisor"
  [ -d "$src" ] || (cd "$scratch" && go mod download "gvisor.dev/gvisor@$gvisor")
  cp -r "$src" "$scratch/gvisor"
  chmod -R u+w "$scratch/gvisor"
  manager="$scratch/gvisor/pkg/shim/v1/manager.go"
  grep -q 'failed to set OOM Score on shim' "$manager" || {
    echo "build-k8s.sh: gVisor's shim changed: the OOM score patch no longer applies" >&2
    exit 1
  }
  sed -i 's|return shim.BootstrapParams{}, fmt.Errorf("failed to set OOM Score on shim: %w", err)|_ = err // left as inherited: see build-k8s.sh|' "$manager"
  (cd "$scratch/gvisor" && go build -ldflags "-s -w" -o "$scratch/shim" ./shim)
  install -m 0755 "$scratch/shim" "$dest/containerd-shim-runsc-v1"
  took "containerd-shim-runsc-v1" "$start"
fi
