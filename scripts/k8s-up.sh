#!/usr/bin/env bash
# Starts a one-node Kubernetes cluster on this machine, for Warren's Kubernetes tests: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (nftables), kubelet and
# containerd (runc and runsc handlers), CNI bridge networking on a bridge of its own, the
# RuntimeClasses `gvisor` and `runc`, and a registry on 127.0.0.1:5100 (and on 10.244.0.1:5100,
# for pods) that the node pulls from over plain HTTP. Its programs come from
# scripts/build-k8s.sh (built once per version, cached under /opt/warren). Test
# infrastructure, not product. Run as root; scripts/k8s-down.sh stops it and removes
# everything it made.
#
# Everything listens on 127.0.0.1 but the API server, the kubelet and the registry's second
# listener, which listen on the bridge's own address (10.244.0.1, host-only): pods reach the
# API server there (a Service address cannot be NATed to 127.0.0.1), and so does the host.
#
# Prints the kubeconfig's path last; /var/lib/warren-k8s/admin.kubeconfig.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$(id -u)" -ne 0 ]; then
  echo "k8s-up.sh: run as root" >&2
  exit 1
fi
k8s="$(tr -d '[:space:]' < "$here/k8s-version")"
etcd_v="$(tr -d '[:space:]' < "$here/etcd-version")"
ctrd_v="$(tr -d '[:space:]' < "$here/containerd-version")"
runsc_v="$(tr -d '[:space:]' < "$here/gvisor-version")"
bash "$here/build-k8s.sh" >&2
bash "$here/build-runsc.sh" >&2

K=/opt/warren/k8s/$k8s
E=/opt/warren/etcd/$etcd_v
C=/opt/warren/containerd/$ctrd_v
R=/opt/warren/runsc/$runsc_v
S=/var/lib/warren-k8s
RUN=/run/warren-k8s
NODE=warren-node
BRIDGE=wk8s0
GW=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/24
REGISTRY=127.0.0.1:5100
BRIDGE_REGISTRY=$GW:5100
PAUSE=registry.k8s.io/pause:3.10
export PATH="$C:$R:$K:$PATH"
# Go builds the programs (build-k8s.sh) and finds Kubernetes' pause.c in its module cache.
command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
kubeconfig=$S/admin.kubeconfig
kubectl() { "$K/kubectl" --kubeconfig "$kubeconfig" "$@"; }

if [ -f "$RUN/up" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "==> the test cluster already runs" >&2
  echo "$kubeconfig"
  exit 0
fi
if [ -d "$RUN" ] || [ -d "$S" ]; then
  echo "==> clearing what an earlier cluster left" >&2
  bash "$here/k8s-down.sh" >&2
fi
start=$(date +%s)
mkdir -p "$S"/{pki,logs,etcd,cni,cni-state,registry,kubelet,containerd,certs.d/$REGISTRY} "$RUN"
# What k8s-down.sh may remove: the firewall tables the kubelet's iptables makes, only if new.
nft list tables > "$S/nft-tables.before" 2>/dev/null || true

# Started in the background, each with its log and pid file, so k8s-down.sh can stop it.
launch() {
  local name=$1
  shift
  setsid "$@" >"$S/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}
# Waits up to $2 s for `$3...` to succeed, or shows the component's log and fails.
wait_for() {
  local name=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "k8s-up.sh: $name did not come up in ${secs} s; the end of its log:" >&2
  tail -n 30 "$S/logs/$name.log" >&2 || true
  exit 1
}

echo "==> certificates" >&2
pki=$S/pki
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=warren-test-ca" \
  -keyout $pki/ca.key -out $pki/ca.crt 2>/dev/null
# cert NAME CN ORG [SANs]
cert() {
  local name=$1 cn=$2 org=$3 san=${4:-}
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout $pki/$name.key -out $pki/$name.csr 2>/dev/null
  local ext=$pki/$name.ext
  echo "basicConstraints=CA:FALSE" > $ext
  echo "keyUsage=digitalSignature,keyEncipherment" >> $ext
  if [ -n "$san" ]; then
    echo "extendedKeyUsage=serverAuth,clientAuth" >> $ext
    echo "subjectAltName=$san" >> $ext
  else
    echo "extendedKeyUsage=clientAuth" >> $ext
  fi
  openssl x509 -req -in $pki/$name.csr -CA $pki/ca.crt -CAkey $pki/ca.key -CAcreateserial \
    -days 30 -extfile $ext -out $pki/$name.crt 2>/dev/null
}
cert apiserver kube-apiserver "" "IP:$GW,IP:127.0.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin warren-admin system:masters
cert apiserver-kubelet kube-apiserver-kubelet-client system:masters
cert kubelet "system:node:$NODE" system:nodes
cert kubelet-serving "system:node:$NODE" system:nodes "IP:$GW,DNS:$NODE"
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert proxy system:kube-proxy ""
openssl genrsa -out $pki/sa.key 2048 2>/dev/null
openssl rsa -in $pki/sa.key -pubout -out $pki/sa.pub 2>/dev/null

# kubeconfig NAME (for the client certificate NAME)
kubeconfig_for() {
  local name=$1
  cat > $S/$name.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: warren-test
  cluster:
    server: https://$GW:6443
    certificate-authority: $pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $pki/$name.crt
    client-key: $pki/$name.key
contexts:
- name: warren-test
  context: {cluster: warren-test, user: $name}
current-context: warren-test
EOF
}
for n in admin kubelet controller-manager scheduler proxy; do kubeconfig_for $n; done

echo "==> network: bridge $BRIDGE ($GW), pods in $POD_CIDR" >&2
ip link add $BRIDGE type bridge 2>/dev/null || true
ip addr replace $GW/24 dev $BRIDGE
ip link set $BRIDGE up
sysctl -qw net.ipv4.ip_forward=1
cat > $S/cni/10-warren-test.conflist <<EOF
{
  "cniVersion": "1.0.0",
  "name": "warren-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$S/cni-state",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GW", "rangeStart": "10.244.0.10"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

echo "==> registry on $REGISTRY" >&2
cat > $S/registry.yml <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $S/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
log:
  level: warn
EOF
launch registry /usr/bin/docker-registry serve $S/registry.yml
# The same storage served on the bridge's address too ($BRIDGE_REGISTRY), for what runs in
# pods (a Warren server installed on the cluster pulls the images its sandboxes run, and a
# pod's 127.0.0.1 is its own): an image pushed to either address is pulled by the same path
# from the other.
sed "s/^  addr: .*/  addr: $BRIDGE_REGISTRY/" $S/registry.yml > $S/registry-bridge.yml
launch registry-bridge /usr/bin/docker-registry serve $S/registry-bridge.yml
for r in $REGISTRY $BRIDGE_REGISTRY; do
  mkdir -p $S/certs.d/$r
  cat > $S/certs.d/$r/hosts.toml <<EOF
server = "http://$r"
[host."http://$r"]
  capabilities = ["pull", "resolve"]
EOF
done

echo "==> containerd $ctrd_v (runc, runsc)" >&2
cat > $S/runsc.toml <<EOF
[runsc_config]
  platform = "systrap"
  # Set-user-ID files work as on a host (E2B's base image's sudo; Warren's own gVisor
  # sandboxes run with it too): runsc ignores the bits unless told.
  allow-suid = "true"
  root = "$RUN/runsc"
EOF
cat > $S/containerd.toml <<EOF
version = 3
root = "$S/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins.'io.containerd.cri.v1.runtime']
  enable_unprivileged_ports = false
  # Containers' OOM scores no lower than containerd's own: lowering one takes
  # CAP_SYS_RESOURCE, which this VM's root lacks (runc's init then fails).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "$S/runsc.toml"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$S/cni"
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$S/certs.d"
EOF
launch containerd "$C/containerd" --config $S/containerd.toml
wait_for containerd 30 "$C/ctr" --address $RUN/containerd.sock version

echo "==> pause image ($PAUSE, built here)" >&2
pause_src="$(go env GOMODCACHE)/k8s.io/kubernetes@$k8s/build/pause/linux/pause.c"
[ -f "$pause_src" ] || (cd /tmp && go mod download "k8s.io/kubernetes@$k8s" >/dev/null)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -Os -static -DVERSION=3.10 -o "$work/pause" "$pause_src"
strip "$work/pause"
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:3.10" >/dev/null
umoci unpack --rootless --image "$work/oci:3.10" "$work/bundle" >/dev/null
install -m 0755 "$work/pause" "$work/bundle/rootfs/pause"
umoci repack --image "$work/oci:3.10" "$work/bundle" >/dev/null
umoci config --image "$work/oci:3.10" --config.entrypoint /pause --config.user 65535:65535 >/dev/null
umoci gc --layout "$work/oci" >/dev/null
tar -C "$work/oci" -cf "$work/pause.tar" .
"$C/ctr" --address $RUN/containerd.sock -n k8s.io images import --base-name registry.k8s.io/pause \
  "$work/pause.tar" >/dev/null
"$C/ctr" --address $RUN/containerd.sock -n k8s.io images label "$PAUSE" io.cri-containerd.pinned=pinned >/dev/null

echo "==> etcd $etcd_v" >&2
launch etcd "$E/etcd" --name warren-test --data-dir $S/etcd \
  --listen-client-urls http://127.0.0.1:2389 --advertise-client-urls http://127.0.0.1:2389 \
  --listen-peer-urls http://127.0.0.1:2390 --initial-advertise-peer-urls http://127.0.0.1:2390 \
  --initial-cluster warren-test=http://127.0.0.1:2390 --log-level warn
wait_for etcd 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/2389"

echo "==> kube-apiserver $k8s" >&2
launch kube-apiserver "$K/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2389 \
  --bind-address=$GW --advertise-address=$GW --secure-port=6443 \
  --service-cluster-ip-range=$SVC_CIDR \
  --client-ca-file=$pki/ca.crt \
  --tls-cert-file=$pki/apiserver.crt --tls-private-key-file=$pki/apiserver.key \
  --kubelet-client-certificate=$pki/apiserver-kubelet.crt --kubelet-client-key=$pki/apiserver-kubelet.key \
  --service-account-key-file=$pki/sa.pub --service-account-signing-key-file=$pki/sa.key \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --kubelet-preferred-address-types=InternalIP --feature-gates=ImageVolume=true \
  --allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 90 kubectl get --raw /readyz

echo "==> controller-manager, scheduler" >&2
launch kube-controller-manager "$K/kube-controller-manager" \
  --kubeconfig=$S/controller-manager.kubeconfig \
  --authentication-kubeconfig=$S/controller-manager.kubeconfig \
  --authorization-kubeconfig=$S/controller-manager.kubeconfig \
  --bind-address=127.0.0.1 --leader-elect=false \
  --service-account-private-key-file=$pki/sa.key --root-ca-file=$pki/ca.crt \
  --cluster-signing-cert-file=$pki/ca.crt --cluster-signing-key-file=$pki/ca.key \
  --use-service-account-credentials=true --service-cluster-ip-range=$SVC_CIDR \
  --allocate-node-cidrs=true --cluster-cidr=10.244.0.0/16 --node-cidr-mask-size=24 \
  --controllers='*,-cloud-node-lifecycle' --profiling=false --v=1 \
  --enable-hostpath-provisioner=true --node-monitor-grace-period=20s
launch kube-scheduler "$K/kube-scheduler" \
  --kubeconfig=$S/scheduler.kubeconfig \
  --authentication-kubeconfig=$S/scheduler.kubeconfig \
  --authorization-kubeconfig=$S/scheduler.kubeconfig \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

echo "==> kubelet, kube-proxy" >&2
cat > $S/kubelet.yaml <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GW
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$RUN/containerd.sock
failSwapOn: false
podCIDR: $POD_CIDR
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 250
# Image volumes (beta in 1.34, off by default): Warren can mount its agent image read-only
# instead of copying the agent in with an init container.
featureGates: {ImageVolume: true}
EOF
launch kubelet "$K/kubelet" --config=$S/kubelet.yaml --kubeconfig=$S/kubelet.kubeconfig \
  --hostname-override=$NODE --node-ip=$GW --root-dir=$S/kubelet --cert-dir=$S/kubelet/pki --v=1
launch kube-proxy "$K/kube-proxy" --kubeconfig=$S/proxy.kubeconfig --proxy-mode=nftables \
  --hostname-override=$NODE --cluster-cidr=$POD_CIDR --bind-address=127.0.0.1 \
  --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
  --conntrack-max-per-core=0 --v=1
wait_for kubelet 90 bash -c "'$K/kubectl' --kubeconfig '$kubeconfig' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

kubectl apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: gvisor}
handler: runsc
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runc}
handler: runc
---
# The default class: the controller-manager's own host-path provisioner (one node, tests
# only), for Warren's claims of files kept across stop and start. Its volumes are under
# /tmp/hostpath_pv and go with their claims.
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
wait_for kube-controller-manager 60 kubectl -n default get serviceaccount default
touch "$RUN/up"
echo "==> test cluster up in $(( $(date +%s) - start )) s (Kubernetes $k8s, containerd $ctrd_v, etcd $etcd_v, runsc $runsc_v); kubectl --kubeconfig $kubeconfig" >&2
echo "$kubeconfig"
