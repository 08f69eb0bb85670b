#!/usr/bin/env bash
# Join a real node to the project's control plane (e2e/cluster/up.sh, cluster NODE_CLUSTER,
# default "trainyard-node"): Debian's containerd and runc, Debian's CNI plugins on a bridge made
# for the test, the kubelet and CoreDNS built by build.sh, the sandbox image built here. Every
# process is started by PID (pidfiles in $TRAINYARD_CACHE/node/pids) and stopped by down.sh.
#
# Network: the bridge NODE_BRIDGE (NODE_BRIDGE_IP/24) and the pods' network namespaces only. The
# pods get no default route (only the kubernetes Service's ClusterIP, DNAT'ed to the apiserver on
# 127.0.0.1) and an iptables chain drops anything forwarded off the bridge: nothing leaves the
# machine. CoreDNS serves the cluster domain on NODE_BRIDGE_IP:53 and forwards nothing.
#
# Idempotent: running parts are kept (a healthy node is reused in seconds), missing ones started.
# Prints the cluster's admin kubeconfig path as the last stdout line. Needs root.
#
# Env: NODE_CLUSTER (trainyard-node), NODE_COUNT (0: fake kwok nodes of the cluster),
#      LOCAL_PVS (8), COREDNS_TTL and COREDNS_CACHE (30 and 30: kubeadm's Corefile),
#      COREDNS_NEGATIVE_CACHE (1; 0: no NXDOMAIN caching in the cluster zone), UP_TIMEOUT (180).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

UP_TIMEOUT="${UP_TIMEOUT:-180}"
COREDNS_CACHE="${COREDNS_CACHE:-30}"
COREDNS_TTL="${COREDNS_TTL:-30}"
# COREDNS_NEGATIVE_CACHE=0: do not cache NXDOMAIN in the cluster zone (a headless Service name then
# resolves as soon as its EndpointSlice has it). Off by default: users' clusters cache it.
COREDNS_DENIAL=""
if [[ "${COREDNS_NEGATIVE_CACHE:-1}" == 0 ]]; then COREDNS_DENIAL=" {
        disable denial ${CLUSTER_DOMAIN}
    }"; fi
START=$SECONDS
[[ $(id -u) -eq 0 ]] || die "the node needs root (network namespaces, mounts, cgroups)"

# ---------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------
for b in kubelet coredns crictl kubectl; do
  [[ -x "${CURRENT_BIN}/$b" ]] || die "${CURRENT_BIN}/$b is missing; run e2e/node/build.sh (and e2e/cluster/build.sh)"
done
for c in containerd containerd-shim-runc-v2 runc ctr iptables ip; do
  command -v "$c" >/dev/null 2>&1 || die "$c is not installed; run e2e/node/deps.sh (Debian packages: ${DEB_PACKAGES})"
done
for p in bridge host-local loopback; do
  [[ -x "/usr/lib/cni/$p" ]] || die "/usr/lib/cni/$p is missing; run e2e/node/deps.sh (containernetworking-plugins)"
done
KUBECTL="${CURRENT_BIN}/kubectl"

# ---------------------------------------------------------------------------------------------
# The control plane
# ---------------------------------------------------------------------------------------------
log "control plane: e2e/cluster/up.sh ${NODE_CLUSTER}"
KUBECONFIG_ADMIN="$(NODE_COUNT="${NODE_COUNT:-0}" "${CLUSTER_DIR}/up.sh" "${NODE_CLUSTER}" | tail -1)"
[[ -s "$KUBECONFIG_ADMIN" ]] || die "e2e/cluster/up.sh ${NODE_CLUSTER} printed no kubeconfig"
kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=20s "$@"; }
PKI="${KWOK_WORKDIR}/clusters/${NODE_CLUSTER}/pki"
[[ -s "${PKI}/ca.crt" ]] || die "the cluster's CA ${PKI}/ca.crt is missing"
APISERVER_URL="$(kctl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
APISERVER_PORT="${APISERVER_URL##*:}"
[[ "$APISERVER_URL" == https://127.0.0.1:* && "$APISERVER_PORT" =~ ^[0-9]+$ ]] ||
  die "unexpected apiserver URL '${APISERVER_URL}' (expected https://127.0.0.1:PORT)"

# ---------------------------------------------------------------------------------------------
# Network: the bridge, the node's name, iptables
# ---------------------------------------------------------------------------------------------
if ! ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then
  ip link add "${NODE_BRIDGE}" type bridge
fi
ip addr replace "${NODE_BRIDGE_IP}/${NODE_POD_CIDR#*/}" dev "${NODE_BRIDGE}"
ip link set "${NODE_BRIDGE}" up
# The pods reach the apiserver through the kubernetes Service's ClusterIP, DNAT'ed to the
# apiserver on 127.0.0.1: a destination on loopback is accepted from this interface only with
# route_localnet (set on the bridge alone; it goes away with it).
sysctl -qw "net.ipv4.conf.${NODE_BRIDGE}.route_localnet=1"

# The kubelet refuses a loopback node IP, and the apiserver dials the node by its name first
# (--kubelet-preferred-address-types starts with Hostname): the name must resolve here.
if ! grep -qF "${HOSTS_MARK}" /etc/hosts; then
  printf '%s %s %s\n' "${NODE_BRIDGE_IP}" "${NODE_NAME}" "${HOSTS_MARK}" >> /etc/hosts
fi

# filter: Docker sets FORWARD's policy to DROP (and bridge-nf-call-iptables=1 sends bridged frames
# through it), which would drop pod-to-pod traffic: accept it, and drop whatever would be
# forwarded from the pods to any other interface or from elsewhere into the pods.
iptables -w -N "${IPT_CHAIN}" 2>/dev/null || true
iptables -w -F "${IPT_CHAIN}"
iptables -w -A "${IPT_CHAIN}" -i "${NODE_BRIDGE}" -o "${NODE_BRIDGE}" -j ACCEPT
iptables -w -A "${IPT_CHAIN}" -i "${NODE_BRIDGE}" -j DROP
iptables -w -A "${IPT_CHAIN}" -o "${NODE_BRIDGE}" -j DROP
iptables -w -C FORWARD -j "${IPT_CHAIN}" 2>/dev/null || iptables -w -I FORWARD 1 -j "${IPT_CHAIN}"
# nat: the kubernetes Service (443 on its ClusterIP) -> the apiserver on loopback. No kube-proxy
# runs here: that is the only Service the node's pods reach through a ClusterIP (the trainer's
# gang uses a headless Service, which is DNS only).
iptables -w -t nat -N "${IPT_CHAIN}" 2>/dev/null || true
iptables -w -t nat -F "${IPT_CHAIN}"
iptables -w -t nat -A "${IPT_CHAIN}" -i "${NODE_BRIDGE}" -d "${KUBERNETES_SVC_IP}/32" -p tcp --dport 443 \
  -j DNAT --to-destination "127.0.0.1:${APISERVER_PORT}"
iptables -w -t nat -C PREROUTING -j "${IPT_CHAIN}" 2>/dev/null || iptables -w -t nat -I PREROUTING 1 -j "${IPT_CHAIN}"

# The CNI network: Debian's bridge + host-local plugins on the bridge made above. ipMasq false
# and no default route: a pod can reach the other pods, this host's bridge address (CoreDNS, the
# kubelet) and the kubernetes Service's ClusterIP, nothing else.
mkdir -p "${CNI_CONF_DIR}" "${CNI_IPAM_DIR}"
cat > "${CNI_CONF_DIR}/10-trainyard.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "trainyard-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${CNI_IPAM_DIR}",
        "ranges": [[{"subnet": "${NODE_POD_CIDR}", "gateway": "${NODE_BRIDGE_IP}"}]],
        "routes": [{"dst": "${KUBERNETES_SVC_IP}/32", "gw": "${NODE_BRIDGE_IP}"}]
      }
    }
  ]
}
JSON

# ---------------------------------------------------------------------------------------------
# containerd: its own config, root, state and socket (dockerd runs a containerd of its own)
# ---------------------------------------------------------------------------------------------
# load-images.sh leaves CONTAINERD_RESET when containerd's store proved inconsistent (a snapshot
# whose parent is gone, after a full disk or a killed import): the store starts empty again.
if [[ -e "${CONTAINERD_RESET}" ]] && ! pid_alive containerd; then
  log "containerd's store was found inconsistent; starting it empty (the images are imported again)"
  rm -rf "${CONTAINERD_ROOT}" "${CONTAINERD_RESET}"
fi
mkdir -p "${CONTAINERD_ROOT}" "${CONTAINERD_STATE}" "${NODE_HOME}/containerd"
CONTAINERD_CONFIG="${NODE_HOME}/containerd/config.toml"
cat > "${CONTAINERD_CONFIG}.new" <<TOML
# Written by e2e/node/up.sh.
version = 2
root = "${CONTAINERD_ROOT}"
state = "${CONTAINERD_STATE}"
# Only what the CRI needs here.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${CONTAINERD_SOCK}"
[ttrpc]
  address = "${CONTAINERD_SOCK}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  # Built here (e2e/node/build.sh): there is no registry to pull the upstream pause image from.
  sandbox_image = "${SANDBOX_IMAGE}"
  # Without CAP_SYS_RESOURCE (this VM), runc cannot lower oom_score_adj below its own value, and
  # every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # kubectl exec/attach/port-forward stream through the kubelet, which proxies to this address.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        # The kubelet's cgroupDriver is cgroupfs (cgroup v1, no systemd here).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${CNI_CONF_DIR}"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "${NODE_HOME}/containerd/opt"
TOML
if ! cmp -s "${CONTAINERD_CONFIG}.new" "${CONTAINERD_CONFIG}" && pid_alive containerd; then
  log "containerd's config changed; restarting it"
  stop_daemon containerd
fi
mv -f "${CONTAINERD_CONFIG}.new" "${CONTAINERD_CONFIG}"
if ! pid_alive containerd; then
  log "starting containerd (socket ${CONTAINERD_SOCK}; log: ${NODE_LOGS}/containerd.log)"
  start_daemon containerd "${NODE_LOGS}/containerd.log" "$(command -v containerd)" --config "${CONTAINERD_CONFIG}"
fi
containerd_ready() { pid_alive containerd && crictl_ info >/dev/null; }
wait_until "containerd's CRI on ${CONTAINERD_SOCK}" 60 "${NODE_LOGS}/containerd.log" containerd_ready

# The sandbox image, built by build.sh, imported when containerd lacks this build of it.
"${NODE_DIR}/load-images.sh" "trainyard/pause:${PAUSE_VERSION}" >/dev/null

# ---------------------------------------------------------------------------------------------
# CoreDNS: the cluster domain, on the bridge address, as a host process
# ---------------------------------------------------------------------------------------------
# Its own identity (a client certificate), allowed what upstream's system:coredns ClusterRole allows.
COREDNS_KUBECONFIG="$("${CLUSTER_DIR}/kubeconfig-for.sh" "${NODE_CLUSTER}" trainyard:coredns system:authenticated | tail -1)"
kctl apply --server-side --field-manager=trainyard-node -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "trainyard:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "trainyard:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "trainyard:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "trainyard:coredns"}]
YAML
COREDNS_HEALTH_PORT=18053 COREDNS_READY_PORT=18181
COREFILE="${NODE_HOME}/Corefile"
# The cluster zone as kubeadm's default Corefile serves it (what most users' clusters run):
# `pods insecure`, `ttl 30` (COREDNS_TTL) and `cache 30` (COREDNS_CACHE). The TTL is also the
# SOA minimum of an NXDOMAIN, so a headless Service pod name looked up before its EndpointSlice
# existed stays NXDOMAIN in the cache for up to 30 s. Everything else: the node's name (hosts),
# then NXDOMAIN; nothing is forwarded off the machine (a user's cluster would forward it upstream).
cat > "${COREFILE}.new" <<EOF
${CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {
    bind ${NODE_BRIDGE_IP}
    errors
    log . "{remote} {type} {name} {rcode} {duration}"
    health 127.0.0.1:${COREDNS_HEALTH_PORT}
    ready 127.0.0.1:${COREDNS_READY_PORT}
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${COREDNS_KUBECONFIG}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl ${COREDNS_TTL}
    }
    cache ${COREDNS_CACHE}${COREDNS_DENIAL}
}
.:53 {
    bind ${NODE_BRIDGE_IP}
    errors
    hosts {
        ${NODE_BRIDGE_IP} ${NODE_NAME}
    }
}
EOF
if ! cmp -s "${COREFILE}.new" "${COREFILE}" && pid_alive coredns; then
  log "the Corefile changed; restarting CoreDNS"
  stop_daemon coredns
fi
mv -f "${COREFILE}.new" "${COREFILE}"
if ! pid_alive coredns; then
  log "starting CoreDNS on ${NODE_BRIDGE_IP}:53 (log: ${NODE_LOGS}/coredns.log)"
  start_daemon coredns "${NODE_LOGS}/coredns.log" "${CURRENT_BIN}/coredns" -conf "${COREFILE}"
fi
coredns_ready() { pid_alive coredns && [[ "$(python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:${COREDNS_READY_PORT}/ready',timeout=2).status)" 2>/dev/null)" == 200 ]]; }
wait_until "CoreDNS ready (kubernetes plugin synced)" "$UP_TIMEOUT" "${NODE_LOGS}/coredns.log" coredns_ready

# ---------------------------------------------------------------------------------------------
# kubelet
# ---------------------------------------------------------------------------------------------
# The node's identity: system:node:<name> in system:nodes, as the Node authorizer and the
# NodeRestriction admission plugin expect of a kubelet.
NODE_KUBECONFIG="$("${CLUSTER_DIR}/kubeconfig-for.sh" "${NODE_CLUSTER}" "system:node:${NODE_NAME}" system:nodes system:authenticated | tail -1)"
mkdir -p "${KUBELET_ROOT}"
KUBELET_CONFIG="${NODE_HOME}/kubelet-config.yaml"
cat > "${KUBELET_CONFIG}.new" <<YAML
# Written by e2e/node/up.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
# This VM has cgroup v1 only; kubelet >= 1.35 refuses it unless told otherwise. No systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
# Serve on the bridge address: the apiserver reaches it there (logs, exec), and so could the pods.
address: ${NODE_BRIDGE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# The apiserver's requests (kubectl logs -f, exec) carry its kubelet client certificate (signed by
# the cluster CA; e2e/cluster/up.sh gives it one): authenticate x509 clients against that CA,
# and bearer tokens by TokenReview; authorise by SubjectAccessReview, as kubeadm's nodes do.
# No anonymous access.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${PKI}/ca.crt}
authorization:
  mode: Webhook
clusterDNS: [${NODE_BRIDGE_IP}]
clusterDomain: ${CLUSTER_DOMAIN}
# Pods with dnsPolicy Default would get this machine's resolver: give them none (nothing resolves
# off the machine); ClusterFirst pods get CoreDNS above.
resolvConf: ""
podCIDR: ${NODE_POD_CIDR}
maxPods: 110
failSwapOn: false
# A shared, busy disk: never evict the test's pods for disk pressure, and never garbage-collect
# the images imported by load-images.sh (there is no registry to pull them back from).
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
YAML
kubelet_args=(--config "${KUBELET_CONFIG}" --kubeconfig "${NODE_KUBECONFIG}" --root-dir "${KUBELET_ROOT}"
              --cert-dir "${KUBELET_ROOT}/pki" --hostname-override "${NODE_NAME}" --node-ip "${NODE_BRIDGE_IP}"
              --node-labels "trainyard.dev/node=real" --v=2)
# A running kubelet is restarted when its config or arguments changed.
printf '%s\n' "${kubelet_args[@]}" > "${NODE_HOME}/kubelet.args.new"
if ! { cmp -s "${KUBELET_CONFIG}.new" "${KUBELET_CONFIG}" && cmp -s "${NODE_HOME}/kubelet.args.new" "${NODE_HOME}/kubelet.args"; } &&
   pid_alive kubelet; then
  log "the kubelet's config changed; restarting it"
  stop_daemon kubelet
fi
mv -f "${KUBELET_CONFIG}.new" "${KUBELET_CONFIG}"
mv -f "${NODE_HOME}/kubelet.args.new" "${NODE_HOME}/kubelet.args"
if ! pid_alive kubelet; then
  log "starting the kubelet (node ${NODE_NAME}; log: ${NODE_LOGS}/kubelet.log)"
  start_daemon kubelet "${NODE_LOGS}/kubelet.log" "${CURRENT_BIN}/kubelet" "${kubelet_args[@]}"
fi
node_ready() {
  pid_alive kubelet &&
  [[ "$(kctl get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
wait_until "node ${NODE_NAME} Ready" "$UP_TIMEOUT" "${NODE_LOGS}/kubelet.log" node_ready

# ---------------------------------------------------------------------------------------------
# Storage: pre-created local PersistentVolumes
# ---------------------------------------------------------------------------------------------
# `local` volumes (unlike hostPath) get the kubelet's fsGroup ownership management, as a real
# storage driver's volumes do. Each directory is root-owned 0755, like a fresh file system: a pod
# whose uid is not root can write there only through its fsGroup. The StorageClass has no
# provisioner and binds when the first consumer is scheduled. A PV released by a deleted claim
# is made Available again (its directory emptied) the next time up.sh runs. The class is the
# cluster's default, as kind's "standard" is, so a claim without a class (the operator's, the
# e2e/kind example's) binds here too.
pv_manifest="apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ${STORAGE_CLASS}
  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain"
for (( i = 0; i < LOCAL_PVS; i++ )); do
  d="${PV_ROOT}/pv-${i}"
  phase="$(kctl get pv "trainyard-local-${i}" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  if [[ "$phase" == Released || "$phase" == Failed ]]; then
    kctl delete pv "trainyard-local-${i}" --wait=true >/dev/null
    phase=""
  fi
  if [[ -z "$phase" ]]; then
    rm -rf "$d"
  fi
  mkdir -p "$d"; chown 0:0 "$d"; chmod 0755 "$d"
  pv_manifest+="
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: trainyard-local-${i}
  labels: {trainyard.dev/local-pv: \"true\"}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ${STORAGE_CLASS}
  volumeMode: Filesystem
  local: {path: ${d}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [${NODE_NAME}]}"
done
printf '%s\n' "$pv_manifest" | kctl apply --server-side --field-manager=trainyard-node -f - >/dev/null

log "node ${NODE_NAME} Ready in $(( SECONDS - START ))s (cluster ${NODE_CLUSTER}; kubelet ${KUBE_VERSION}; logs: ${NODE_LOGS})"
printf '%s\n' "$KUBECONFIG_ADMIN"
