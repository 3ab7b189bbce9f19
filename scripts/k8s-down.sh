#!/usr/bin/env bash
# Stops the test cluster scripts/k8s-up.sh started and removes everything it made: its pods'
# containers and sandboxes, processes, mounts, network namespaces, bridge, firewall tables,
# cgroups and state. The built programs under /opt/warren stay. Run as root; safe to run twice.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
S=/var/lib/warren-k8s
RUN=/run/warren-k8s
BRIDGE=wk8s0
ctrd_v="$(tr -d '[:space:]' < "$here/containerd-version")"
runsc_v="$(tr -d '[:space:]' < "$here/gvisor-version")"
ctr="/opt/warren/containerd/$ctrd_v/ctr"
export PATH="/opt/warren/runsc/$runsc_v:/usr/sbin:/usr/bin:/sbin:/bin"

stop() {
  local name=$1 pidfile="$RUN/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  # Each was started in a session of its own: its whole group goes.
  kill -TERM -- "-$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$pidfile"
}

# The kubelet first, so nothing restarts what goes next.
for c in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd registry registry-bridge; do
  stop $c
done

# Every container the node ran, killed and deleted through containerd while it still runs.
if [ -S "$RUN/containerd.sock" ] && [ -x "$ctr" ]; then
  c() { "$ctr" --address "$RUN/containerd.sock" -n k8s.io "$@"; }
  for t in $(c tasks ls -q 2>/dev/null); do c tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 0.5
  for t in $(c tasks ls -q 2>/dev/null); do c tasks delete -f "$t" >/dev/null 2>&1; done
  for t in $(c containers ls -q 2>/dev/null); do c containers delete "$t" >/dev/null 2>&1; done
fi
stop containerd
# Shims (and the sandboxes they hold) outlive containerd: those of this cluster's socket go.
for pid in $(pgrep -f "containerd-shim.*$RUN/containerd.sock" 2>/dev/null); do
  kill -KILL "$pid" 2>/dev/null
done
for pid in $(pgrep -f "runsc.*--root=$RUN/runsc" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
sleep 0.3

# Mounts under the cluster's directories, deepest first.
for dir in "$RUN" "$S"; do
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
done
# Pods' network namespaces (containerd names them cni-<uuid>). This is a test machine's
# cluster: this, the kube-proxy table, the KUBE-* chains and the kubepods cgroups below are
# taken to be its own (another cluster on the same machine would lose them too).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-'); do
  ip netns del "$ns" 2>/dev/null
done
ip link del "$BRIDGE" 2>/dev/null
for fam in ip ip6; do nft delete table "$fam" kube-proxy 2>/dev/null; done
# The kubelet's iptables chains (KUBE-FIREWALL, canaries, hints): the rules jumping to them,
# then the chains; then the tables the kubelet's iptables made, if they were not there before
# the cluster and are empty now.
for fam in iptables ip6tables; do
  for t in filter nat mangle; do
    "$fam-save" -t $t 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -v '^-A KUBE-' |
      sed 's/^-A/-D/' | while read -r rule; do
        # shellcheck disable=SC2086
        "$fam" -t $t $rule 2>/dev/null
      done
    chains="$("$fam-save" -t $t 2>/dev/null | sed -n 's/^:\(KUBE-[A-Z0-9-]*\) .*/\1/p')"
    for chain in $chains; do "$fam" -t $t -F "$chain" 2>/dev/null; done
    for chain in $chains; do "$fam" -t $t -X "$chain" 2>/dev/null; done
  done
done
if [ -f "$S/nft-tables.before" ]; then
  nft list tables 2>/dev/null | while read -r _ fam name; do
    grep -qx "table $fam $name" "$S/nft-tables.before" && continue
    [ "$name" = kube-proxy ] && continue
    # Empty: no rule and no set left in it.
    if ! nft list table "$fam" "$name" 2>/dev/null | grep -qE '^\s+(ip|ip6|meta|tcp|udp|counter|jump|goto|ct|iif|oif|mark|reject|drop|accept)\b'; then
      nft delete table "$fam" "$name" 2>/dev/null
    fi
  done
fi
# The kubelet's cgroups (pods' cgroups inside them), deepest first.
for ctl in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do
  [ -d "$ctl/kubepods" ] || continue
  find "$ctl/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf --one-file-system "$RUN" "$S" /tmp/hostpath_pv
left=""
[ -d "$S" ] && left="$left $S"
ip link show "$BRIDGE" >/dev/null 2>&1 && left="$left bridge:$BRIDGE"
if [ -n "$left" ]; then
  echo "k8s-down.sh: could not remove:$left" >&2
  exit 1
fi
echo "==> test cluster down" >&2
