#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for `make demo` and the
# end-to-end suite. Test infrastructure, not a product: it runs as root, trusts every
# component with one admin token and keeps everything in $REPLICANT_CLUSTER_DIR.
#
#   test/cluster/cluster.sh up      leftovers of a killed run are removed first
#   test/cluster/cluster.sh down    stops everything, removes mounts, cgroups, netns,
#                                   iptables chains, the bridge and the state directory
#   test/cluster/cluster.sh env     prints KUBECONFIG=… for eval
#   test/cluster/cluster.sh crash NAMESPACE POD CONTAINER
#                                   SIGKILLs the container's main process from the
#                                   node, as the kernel's OOM killer would
#   test/cluster/cluster.sh diagnose
#                                   writes what a failure needs into logs/diagnostics
#                                   (kept by down): pods with roles, events, objects,
#                                   every container's log, each pod's replicant status
#   test/cluster/cluster.sh partition NAMESPACE POD on|off [PORT]
#                                   drops every packet of the pod's network namespace
#                                   except loopback (iptables inside it), or only TCP
#                                   to PORT, or stops
#   test/cluster/cluster.sh pid NAMESPACE POD [CONTAINER]
#                                   a host pid in the pod's network namespace (its
#                                   sandbox's), or its container's; from containerd
#                                   alone, so it works while the apiserver is down
#   test/cluster/cluster.sh apiserver stop|start
#                                   stops or starts the kube-apiserver alone
#
# Binaries and image tarballs come from `make cluster-build` (paths in the variables
# below). One function per component; LOCAL-CLUSTER-FACTS.md (beside DESIGN.md) says
# why each setting is there. Every address is on loopback or in 198.18.0.0/15:
#   198.18.0.1        node IP: the gateway of the pod bridge; apiserver, kubelet
#   198.18.0.0/16     pods (bridge "replicant0", host-local IPAM)
#   198.19.0.0/16     Services; 198.19.0.1 kubernetes, 198.19.0.10 kube-dns
#   127.0.0.1:2479    etcd
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DIR=${REPLICANT_CLUSTER_DIR:-/tmp/replicant-cluster}
K8S_BIN=${K8S_BIN:-$root/bin/k8s/v1.34.4}
IMAGES=${IMAGES:-$root/bin/images}
CERT_MANAGER_CHART=${CERT_MANAGER_CHART:-$root/bin/cert-manager/chart}
CERT_MANAGER_CRDS=${CERT_MANAGER_CRDS:-$root/bin/cert-manager/crds}
HELM=${HELM:-$root/bin/helm}
# Volumes are Retain (a deleted claim's volume is never bound again, so no test sees
# another's data): the e2e suite uses one per claim it ever makes, about 20 with both
# stories' restores.
PV_COUNT=${PV_COUNT:-40}

NODE_IP=198.18.0.1
POD_CIDR=198.18.0.0/16
SERVICE_CIDR=198.19.0.0/16
API_IP=198.19.0.1
DNS_IP=198.19.0.10
BRIDGE=replicant0
NODE=replicant-node
ETCD=127.0.0.1:2479
SOCK=$DIR/containerd/containerd.sock
KUBECONFIG=$DIR/kubeconfig
export KUBECONFIG

started=$(date +%s)
log() { printf 'cluster [%3ds] %s\n' "$(( $(date +%s) - started ))" "$*"; }
die() { log "FAILED: $*"; exit 1; }
kubectl() { "$K8S_BIN/kubectl" "$@"; }
ctr() { command ctr --address "$SOCK" -n k8s.io "$@"; }

# until SECONDS WHAT CMD…: retries CMD every half second, at most SECONDS.
until_ok() {
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "$what not ready after ${limit}s (logs: $DIR/logs)"
    sleep 0.5
  done
}

# start NAME CMD…: runs a component in its own session, output to logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/pids/$name"
}

# --- up ------------------------------------------------------------------------

network() {
  log "network: bridge $BRIDGE with node IP $NODE_IP, forwarding on"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  cat /proc/sys/net/ipv4/ip_forward >"$DIR/ip_forward.saved"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Replies between pods on one bridge must pass iptables for Service NAT.
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] ||
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
}

pki() {
  log "pki: CA, apiserver serving certificate, service-account keys, admin token"
  local p=$DIR/pki
  mkdir -p "$p"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=replicant-test-ca \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  cat >"$p/apiserver.ext" <<EOF
subjectAltName=IP:$NODE_IP,IP:$API_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$p/apiserver.key" \
    -out "$p/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
    -days 2 -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  local token
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$token,admin,admin,system:masters" >"$p/tokens.csv"
  kubectl config set-cluster local --server="https://$NODE_IP:6443" --certificate-authority="$p/ca.crt" \
    --embed-certs >/dev/null
  kubectl config set-credentials admin --token="$token" >/dev/null
  kubectl config set-context local --cluster=local --user=admin >/dev/null
  kubectl config use-context local >/dev/null
}

etcd() {
  log "etcd: $ETCD"
  start etcd "$K8S_BIN/etcd" --name=replicant --data-dir="$DIR/etcd" \
    --listen-client-urls="http://$ETCD" --advertise-client-urls="http://$ETCD" \
    --listen-peer-urls=http://127.0.0.1:2480 --initial-advertise-peer-urls=http://127.0.0.1:2480 \
    --initial-cluster=replicant=http://127.0.0.1:2480 --log-level=warn
}

apiserver() {
  log "kube-apiserver: https://$NODE_IP:6443"
  local p=$DIR/pki
  start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers="http://$ETCD" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --allow-privileged=true --kubelet-preferred-address-types=InternalIP \
    --enable-aggregator-routing=true --profiling=false
  until_ok 90 kube-apiserver kubectl get --raw /readyz
}

controllers() {
  log "kube-controller-manager, kube-scheduler"
  local p=$DIR/pki
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --controllers='*' --use-service-account-credentials \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" --leader-elect=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" \
    --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --leader-elect=false
}

containerd() {
  log "containerd: $SOCK"
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # root here cannot lower oom_score_adj (no CAP_SYS_RESOURCE): without this every sandbox fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  cat >"$DIR/cni/net.d/10-replicant.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "replicant", "plugins": [{
  "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam", "routes": [{"dst": "0.0.0.0/0"}],
           "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP", "rangeStart": "198.18.1.1", "rangeEnd": "198.18.255.254"}]]}
}]}
EOF
  start containerd /usr/bin/containerd --config "$DIR/containerd/config.toml"
  until_ok 30 containerd ctr version
  local t
  for t in "$IMAGES"/*.tar; do
    ctr images import "$t" >/dev/null || die "importing $t"
  done
  log "containerd: imported $(ls "$IMAGES"/*.tar | wc -l) images"
}

kubelet() {
  log "kubelet: node $NODE at $NODE_IP"
  mkdir -p "$DIR/kubelet"
  : >"$DIR/resolv.conf"
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: unix://$SOCK
# This machine has cgroup v1 and swap: both refused by default.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $DIR/resolv.conf
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
# The root filesystem's stats are not readable here: thresholds low enough never to evict.
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
EOF
  start kubelet "$K8S_BIN/kubelet" --config="$DIR/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
    --root-dir="$DIR/kubelet/root" --cert-dir="$DIR/kubelet/pki" --hostname-override="$NODE" \
    --node-ip="$NODE_IP"
}

kube_proxy() {
  log "kube-proxy: iptables mode"
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# Leave the machine's conntrack limits and timeouts as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$DIR/kube-proxy.yaml"
}

node_ready() {
  until_ok 90 "node $NODE" kubectl wait --for=condition=Ready "node/$NODE" --timeout=1s
  log "node $NODE Ready"
}

addons() {
  log "addons: CoreDNS, a default StorageClass and $PV_COUNT hostPath volumes"
  sed "s/@DNS_IP@/$DNS_IP/" "$here/manifests/coredns.yaml" | kubectl apply -f - >/dev/null
  {
    cat "$here/manifests/storage.yaml"
    local i
    for i in $(seq 1 "$PV_COUNT"); do
      cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv-$i, labels: {replicant.dev/test-volume: "true"}}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  hostPath: {path: $DIR/volumes/pv-$i, type: DirectoryOrCreate}
EOF
    done
  } | kubectl apply -f - >/dev/null
}

cert_manager() {
  log "cert-manager: CRDs and the chart (controller, cainjector, webhook)"
  # The module's CRDs carry the chart's label templates: fill them as the chart would.
  local f
  for f in "$CERT_MANAGER_CRDS"/*.yaml; do echo ---; cat "$f"; done | sed -e 's/{{ template "cert-manager.name" . }}/cert-manager/' \
    -e 's/{{ .Release.Name }}/cert-manager/' -e 's/{{-* include "labels" . | nindent 4 }}//' |
    kubectl apply --server-side -f - >/dev/null
  kubectl create namespace cert-manager >/dev/null
  "$HELM" template cert-manager "$CERT_MANAGER_CHART" --namespace cert-manager \
    --set installCRDs=false --set startupapicheck.enabled=false |
    kubectl apply -f - >/dev/null
}

wait_system() {
  local d
  for d in kube-system/coredns cert-manager/cert-manager cert-manager/cert-manager-cainjector \
    cert-manager/cert-manager-webhook; do
    kubectl -n "${d%/*}" rollout status "deployment/${d#*/}" --timeout=120s >/dev/null ||
      die "deployment $d not available"
  done
  log "CoreDNS and cert-manager available"
}

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (containerd, kubelet, iptables)"
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run 'make cluster-build'"
  done
  if [ -e "$DIR" ] || ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "removing a leftover cluster first"
    down
  fi
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/volumes"
  network
  pki
  etcd
  apiserver
  controllers
  containerd
  kubelet
  kube_proxy
  node_ready
  addons
  cert_manager
  wait_system
  log "up: export KUBECONFIG=$KUBECONFIG"
}

# A failed up prints the end of every component's log and what runs: in a CI log that
# is often the only trace of why.
log_tails() {
  local f
  for f in "$DIR"/logs/*.log; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f"
    tail -n 15 "$f"
  done
  kubectl get pods -A -o wide --request-timeout=5s 2>&1 || true
}

# --- down ----------------------------------------------------------------------

stop() { # stop NAME…: TERM, then KILL after 10 s
  local name pid
  for name in "$@"; do
    [ -f "$DIR/pids/$name" ] || continue
    pid=$(cat "$DIR/pids/$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/pids/$name"
  done
}

# Every process left in the kubelet's pod cgroups (containers, shims' children) is
# killed, then the cgroups are removed deepest first in every hierarchy.
pod_cgroups() {
  local h pids
  for _ in 1 2 3; do
    pids=$(cat /sys/fs/cgroup/*/kubepods*/cgroup.procs /sys/fs/cgroup/*/kubepods*/*/cgroup.procs \
      /sys/fs/cgroup/*/kubepods*/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods*/*/*/*/cgroup.procs 2>/dev/null | sort -u)
    [ -n "$pids" ] || break
    kill -9 $pids 2>/dev/null || true
    sleep 0.5
  done
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h/kubepods" ] || [ -d "$h/kubepods.slice" ] || continue
    find "$h"kubepods* -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  [ -d "$DIR" ] || [ -e "/sys/class/net/$BRIDGE" ] || return 0
  set +e # best effort: every step runs whatever the one before left
  log "down: stopping kubelet, kube-proxy, pods, containerd, control plane"
  stop kubelet kube-proxy
  pod_cgroups
  # Shims of this containerd (they outlive it), then containerd itself.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  stop containerd kube-scheduler kube-controller-manager kube-apiserver etcd
  # A killed earlier run leaves no pid files: anything still running from $DIR goes.
  pkill -9 -f -- "$DIR/" 2>/dev/null || true
  pod_cgroups

  # Mounts under the state directory (volumes, rootfs, shm), deepest first; then the
  # pod network namespaces CNI made (their veth ends vanish with them).
  local m
  for m in $(awk -v d="$DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for m in /var/run/netns/cni-*; do
    [ -e "$m" ] || continue
    ip netns delete "$(basename "$m")" 2>/dev/null || { umount -l "$m" 2>/dev/null; rm -f "$m"; }
  done
  ip link delete "$BRIDGE" 2>/dev/null || true

  # iptables chains kubelet and kube-proxy made (all named KUBE-*): the jumps to them
  # from built-in chains, then their rules, then the chains.
  local t table rule chains
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || continue
    for table in filter nat mangle; do
      chains=$("$t" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p')
      [ -n "$chains" ] || continue
      "$t" -t "$table" -S | grep -- '-j KUBE-' | grep -v '^-A KUBE-' | sed 's/^-A /-D /' |
        while read -r rule; do eval "$t -t $table $rule"; done
      for c in $chains; do "$t" -t "$table" -F "$c"; done
      for c in $chains; do "$t" -t "$table" -X "$c"; done
    done
  done
  [ -f "$DIR/ip_forward.saved" ] && cat "$DIR/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward

  # Logs survive until the next up, for whoever debugs a failure.
  rm -rf "${DIR}.logs" && { [ -d "$DIR/logs" ] && mv "$DIR/logs" "${DIR}.logs" || true; }
  rm -rf "$DIR"
  log "down: done (logs kept in ${DIR}.logs)"
}

# task_pid NAMESPACE POD [CONTAINER]: the host pid of a running task of the pod, from
# containerd alone (it answers while the kube-apiserver is down): the container's,
# or without CONTAINER the pod sandbox's, whose network namespace every container of
# the pod shares and which outlives their restarts. A container that just restarted
# may still be listed under its old task: look again for a moment.
task_pid() {
  local filter="labels.\"io.kubernetes.pod.namespace\"==$1,labels.\"io.kubernetes.pod.name\"==$2"
  if [ -n "${3:-}" ]; then
    filter="$filter,labels.\"io.kubernetes.container.name\"==$3"
  else
    filter="$filter,labels.\"io.cri-containerd.kind\"==sandbox"
  fi
  local try id pid
  for try in 1 2 3 4 5 6 7 8 9 10; do
    for id in $(ctr containers ls -q "$filter"); do
      pid=$(ctr tasks ls | awk -v id="$id" '$1 == id && $3 == "RUNNING" {print $2}')
      [ -z "$pid" ] || { echo "$pid"; return 0; }
    done
    sleep 0.5
  done
  die "no running ${3:-sandbox} in pod $1/$2"
}

# crash NAMESPACE POD CONTAINER
crash() {
  local pid
  pid=$(task_pid "$1" "$2" "$3")
  kill -9 "$pid"
}

diagnose() {
  local out="$DIR/logs/diagnostics" n pod c k=(--request-timeout=10s)
  mkdir -p "$out"
  kubectl "${k[@]}" get pods -A -o wide -L replicant.dev/role,replicant.dev/healthy >"$out/pods.txt" 2>&1 || true
  kubectl "${k[@]}" get events -A --sort-by=.lastTimestamp >"$out/events.txt" 2>&1 || true
  kubectl "${k[@]}" get statefulsets,configmaps,services,endpointslices,deployments -A -o yaml >"$out/objects.yaml" 2>&1 || true
  for n in default replicant-system; do
    for pod in $(kubectl "${k[@]}" -n "$n" get pods -o name 2>/dev/null); do
      pod=${pod#pod/}
      kubectl "${k[@]}" -n "$n" get pod "$pod" -o jsonpath='{.metadata.annotations.replicant\.dev/status}' \
        >"$out/$n.$pod.status.json" 2>/dev/null || true
      for c in $(kubectl "${k[@]}" -n "$n" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}'); do
        kubectl "${k[@]}" -n "$n" logs "$pod" -c "$c" >"$out/$n.$pod.$c.log" 2>&1 || true
        kubectl "${k[@]}" -n "$n" logs "$pod" -c "$c" --previous >"$out/$n.$pod.$c.previous.log" 2>/dev/null ||
          rm -f "$out/$n.$pod.$c.previous.log"
      done
    done
  done
  log "diagnose: written to $out (kept in ${DIR}.logs/diagnostics by down)"
}

# partition NAMESPACE POD on|off [PORT]: every packet of the pod's network namespace
# except loopback, or with PORT only TCP packets to it (a webhook down, say).
partition() {
  local pid op rules
  pid=$(task_pid "$1" "$2")
  case "$3" in
    on) op=-I ;;
    off) op=-D ;;
    *) die "partition: on or off, not $3" ;;
  esac
  if [ -n "${4:-}" ]; then
    rules=("INPUT -p tcp --dport $4")
  else
    rules=("INPUT ! -i lo" "OUTPUT ! -o lo")
  fi
  for rule in "${rules[@]}"; do
    # shellcheck disable=SC2086
    nsenter -t "$pid" -n iptables -w $op $rule -j DROP || [ "$3" = off ]
  done
}

# apiserver_ctl stop|start: the kube-apiserver alone; everything else keeps running
# (kubelet and the pods' containers, as on a real node while its control plane is away).
apiserver_ctl() {
  case "$1" in
    stop) # at once, as a crashed or unreachable one: no graceful shutdown
      [ -f "$DIR/pids/kube-apiserver" ] || die "apiserver: not running"
      kill -9 "$(cat "$DIR/pids/kube-apiserver")" && rm -f "$DIR/pids/kube-apiserver" ;;
    start) apiserver ;;
    *) die "apiserver: stop or start, not $1" ;;
  esac
}

case "${1:-}" in
  up) trap 'rc=$?; [ "$rc" = 0 ] || log_tails >&2; exit "$rc"' EXIT; up ;;
  crash) shift; crash "$@" ;;
  partition) shift; partition "$@" ;;
  pid) shift; task_pid "$@" ;;
  apiserver) shift; apiserver_ctl "$@" ;;
  diagnose) diagnose ;;
  down) down ;;
  env) echo "export KUBECONFIG=$KUBECONFIG" ;;
  *) echo "usage: $0 up|down|env|crash NAMESPACE POD CONTAINER|partition NAMESPACE POD on|off [PORT]|pid NAMESPACE POD [CONTAINER]|apiserver stop|start|diagnose" >&2; exit 2 ;;
esac
