#!/usr/bin/env bash
# Start (or reuse) a local Kubernetes cluster: real etcd, kube-apiserver, kube-controller-manager
# and kube-scheduler built by build.sh, run as plain processes by `kwokctl --runtime binary`,
# with kwok-controller playing the kubelet of 4 fake nodes. Nothing is downloaded.
#
# kwok-controller manages only the nodes annotated kwok.x-k8s.io/node=fake (kwokctl's binary
# runtime would start it with --manage-all-nodes=true, adopting any real kubelet's node and its
# pods), so a real node (e2e/node/up.sh) can join the same cluster; NODE_COUNT=0 makes no fake node.
#
# Usage: up.sh [NAME]     (NAME defaults to "trainyard")
# Writes the admin kubeconfig to $TRAINYARD_CACHE/clusters/NAME/kubeconfig and prints its path
# as the last line on stdout. Idempotent: a healthy existing cluster is reused.
#
# Env: NODE_COUNT (4, may be 0), NODE_CPU (64), NODE_MEMORY (256Gi), NODE_PODS (500), UP_TIMEOUT (180 s).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME="${1:-trainyard}"
validate_name "$NAME"
NODE_COUNT="${NODE_COUNT:-4}"
NODE_CPU="${NODE_CPU:-64}"
NODE_MEMORY="${NODE_MEMORY:-256Gi}"
NODE_PODS="${NODE_PODS:-500}"
UP_TIMEOUT="${UP_TIMEOUT:-180}"

START=$SECONDS

KWOKCTL="$(need_bin kwokctl)"
KUBECTL="$(need_bin kubectl)"
KUBE_APISERVER="$(need_bin kube-apiserver)"
KUBE_CONTROLLER_MANAGER="$(need_bin kube-controller-manager)"
KUBE_SCHEDULER="$(need_bin kube-scheduler)"
ETCD="$(need_bin etcd)"
KWOK="$(need_bin kwok)"
# kwokctl records binary paths in the cluster's config; use the versioned (stable) targets
# rather than the `current` symlinks so an existing cluster keeps running the binaries it was
# created with, even after a version bump re-points `current`.
resolve() { readlink -f "$1"; }

OUT_DIR="${CLUSTERS_DIR}/${NAME}"
KUBECONFIG_OUT="${OUT_DIR}/kubeconfig"
STAMP="${OUT_DIR}/versions"
# kwok's Logs CRDs let a test give a fake pod real log lines (kubectl logs, -f).
KWOK_CRDS="Logs,ClusterLogs"
# CONFIG: bump when the KwokctlConfiguration written below changes (a cluster made from another
# one is recreated). 2: kwok-controller limited to annotated nodes; a kubelet client certificate
# and the kubernetes Service's ClusterIP in the serving certificate (for a real node's pods).
KWOK_CONFIG_VERSION=2
WANT_STAMP="KUBE_VERSION=${KUBE_VERSION} ETCD_VERSION=${ETCD_VERSION} KWOK_VERSION=${KWOK_VERSION} CRDS=${KWOK_CRDS} CONFIG=${KWOK_CONFIG_VERSION}"
cluster_lock "$NAME"   # serialise concurrent up.sh/down.sh runs for the same cluster
mkdir -p "${OUT_DIR}"

# kwokctl runs `kubectl` from PATH for its readiness checks; make sure it is ours (otherwise it
# would try to download one). The KWOK_* variables pin every other binary it could ask for.
export PATH="${CURRENT_BIN}:${PATH}"
KWOK_KUBECTL_BINARY="$(resolve "$KUBECTL")"
export KWOK_KUBECTL_BINARY
export KWOK_KUBE_VERSION="${KUBE_VERSION}"
export KWOK_ETCD_VERSION="${ETCD_VERSION#v}"
export KWOK_RUNTIME=binary
export KWOK_QUIET_PULL=true

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" --request-timeout=10s "$@"; }

cluster_exists() { kwok_cluster_exists "$KWOKCTL" "$NAME"; }

write_kubeconfig() {
  local tmp="${KUBECONFIG_OUT}.tmp.$$"
  "$KWOKCTL" get kubeconfig --name "$NAME" > "$tmp" && mv -f "$tmp" "$KUBECONFIG_OUT" && chmod 600 "$KUBECONFIG_OUT"
}

# Healthy = apiserver ready, controller-manager and scheduler hold their leader leases and the
# default ServiceAccount exists (pods are admitted). Nodes are (re)applied and waited for after.
healthy() {
  [[ -s "$KUBECONFIG_OUT" ]] || return 1
  apiserver_ready && components_ready
}

apiserver_ready() { [[ "$(kctl get --raw /readyz 2>/dev/null)" == "ok" ]]; }

components_ready() {
  kctl -n kube-system get lease kube-controller-manager kube-scheduler >/dev/null 2>&1 &&
  kctl -n default get serviceaccount default >/dev/null 2>&1
}

nodes_ready() {
  local ready
  ready="$(kctl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$' || true)"
  (( ready >= NODE_COUNT ))
}

wait_for() { # wait_for DESCRIPTION SECONDS CMD...
  local what="$1" limit="$2" t0=$SECONDS; shift 2
  until "$@"; do
    (( SECONDS - t0 < limit )) || die "timed out after ${limit}s waiting for ${what} (cluster '${NAME}'; logs: ${KWOK_WORKDIR}/clusters/${NAME}/logs)"
    sleep 0.5
  done
}

wait_for_quiet() { # like wait_for, but returns 1 instead of dying
  local limit="$1" t0=$SECONDS; shift
  until "$@"; do (( SECONDS - t0 < limit )) || return 1; sleep 0.5; done
}

create_nodes() {
  local i manifest=""
  for (( i = 0; i < NODE_COUNT; i++ )); do
    manifest+="
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-${i}
  annotations:
    # kwok-controller manages (plays the kubelet for) only nodes with this annotation: up.sh
    # starts it with --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake.
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-${i}
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: \"\"
# No taint: every node of this cluster is fake (there is no real kubelet to protect), so pods
# schedule here without tolerations. Select them with nodeSelector type=kwok if you like.
spec: {}
status:
  allocatable: {cpu: \"${NODE_CPU}\", memory: ${NODE_MEMORY}, pods: \"${NODE_PODS}\"}
  capacity: {cpu: \"${NODE_CPU}\", memory: ${NODE_MEMORY}, pods: \"${NODE_PODS}\"}
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
    kubeProxyVersion: fake
  phase: Running"
  done
  (( NODE_COUNT > 0 )) || return 0   # `kubectl apply` of nothing is an error
  # Server-side apply: creates missing nodes, leaves existing ones (and their status) alone.
  printf '%s\n' "$manifest" | kctl apply --server-side --field-manager=trainyard-up -f - >/dev/null
}

create_cluster() {
  log "creating cluster '${NAME}' (kwokctl --runtime binary, Kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION})"
  # Only the default components (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
  # kwok-controller): no metrics-server/prometheus/jaeger/dashboard, which would be downloads.
  # --kube-authorization: --authorization-mode=Node,RBAC; --kube-admission: the default admission
  # plugins (ServiceAccount, NamespaceLifecycle, webhooks, ValidatingAdmissionPolicy, ...).
  # --kubeconfig '': do not touch ~/.kube/config. The --config file holds no Stage, so kwok's
  # default Stages apply
  # (node-initialize/heartbeat, pod-ready, pod-complete for Job pods, pod-delete).
  local cfg="${OUT_DIR}/kwokctl.yaml" logf="${OUT_DIR}/kwokctl-create.log"
  # Options without a command-line flag. bindAddress: kwokctl's default is 0.0.0.0, which would
  # expose etcd (no auth) and the apiserver on every interface; keep them on loopback.
  # kubeApiserverCertSANs: the kubernetes Service's ClusterIP (the first address of the
  # apiserver's default --service-cluster-ip-range 10.0.0.0/24), which in-cluster clients (a real
  # node's pods, e2e/node) dial and verify.
  # componentsPatches:
  # - kwok-controller: kwokctl's binary runtime starts it with --manage-all-nodes=true, which would
  #   make kwok play the kubelet of every node, a real one included (it would mark the real
  #   node's pods Running itself). Override it: only nodes annotated kwok.x-k8s.io/node=fake,
  #   as kwokctl's kind runtime does. (kwokctl appends extra args after its own, and the last
  #   --manage-all-nodes on the command line wins; kwok-controller's log then says
  #   "Watch nodes" with that annotation, not "Watch all nodes".)
  # - kube-apiserver: a client certificate for the apiserver -> kubelet connection (logs, exec,
  #   port-forward). kwokctl gives it none, so a real kubelet would see anonymous requests; with
  #   this one (kwokctl's admin certificate, group system:masters), a kubelet that authenticates
  #   x509 clients against the cluster CA and authorises them by webhook allows it, as on a real
  #   cluster (e2e/node/up.sh). kwok's own fake nodes ignore client certificates.
  local pki="${KWOK_WORKDIR}/clusters/${NAME}/pki"
  cat > "$cfg" <<YAML
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
  kubectlBinary: $(resolve "$KUBECTL")
  kubeApiserverCertSANs: [10.0.0.1]
componentsPatches:
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: "kwok.x-k8s.io/node=fake"}
- name: kube-apiserver
  extraArgs:
  - {key: kubelet-client-certificate, value: "${pki}/admin.crt"}
  - {key: kubelet-client-key, value: "${pki}/admin.key"}
YAML
  # An explicit --config also keeps a personal ~/.kwok/kwok.yaml (e.g. custom Stages) out of it.
  if ! kwokctl_run "$KWOKCTL" --config "$cfg" create cluster --name "$NAME" --runtime binary \
    --components etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kwok-controller \
    --kube-apiserver-binary "$(resolve "$KUBE_APISERVER")" \
    --kube-controller-manager-binary "$(resolve "$KUBE_CONTROLLER_MANAGER")" \
    --kube-scheduler-binary "$(resolve "$KUBE_SCHEDULER")" \
    --etcd-binary "$(resolve "$ETCD")" \
    --kwok-controller-binary "$(resolve "$KWOK")" \
    --kube-authorization=true --kube-admission=true \
    --quiet-pull \
    --enable-crds "$KWOK_CRDS" \
    --kubeconfig '' \
    --wait "${UP_TIMEOUT}s" >"$logf" 2>&1; then
    cat "$logf" >&2
    die "kwokctl create cluster failed (log above; component logs: ${KWOK_WORKDIR}/clusters/${NAME}/logs)"
  fi
  printf '%s\n' "$WANT_STAMP" > "$STAMP"
}

delete_cluster() {
  kwok_delete "$KWOKCTL" "$NAME" || true
  rm -f "$KUBECONFIG_OUT" "$STAMP"
}

if cluster_exists; then
  if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT_STAMP" ]]; then
    log "cluster '${NAME}' was created with other versions ($(cat "$STAMP" 2>/dev/null || echo unknown)); recreating"
    delete_cluster
  else
    write_kubeconfig || true
    if healthy; then
      log "cluster '${NAME}' is already up and healthy; reusing it"
    else
      log "cluster '${NAME}' exists but is not healthy; restarting its components"
      # `kwokctl start` alone does not restart a component that died while the others run
      # (it waits for the dead apiserver for minutes); stop everything first, then start.
      # etcd's data survives, so objects in the cluster are kept.
      kwokctl_run "$KWOKCTL" stop cluster --name "$NAME" >"${OUT_DIR}/kwokctl-restart.log" 2>&1 || true
      kwokctl_run "$KWOKCTL" start cluster --name "$NAME" --timeout 90s --wait 60s >>"${OUT_DIR}/kwokctl-restart.log" 2>&1 || true
      write_kubeconfig || true
      if ! wait_for_quiet 60 apiserver_ready || ! wait_for_quiet 60 components_ready; then
        log "cluster '${NAME}' did not recover (see ${OUT_DIR}/kwokctl-restart.log); recreating it"
        delete_cluster
      fi
    fi
  fi
fi

if ! cluster_exists; then
  create_cluster
  write_kubeconfig
fi

wait_for "kube-apiserver /readyz" "$UP_TIMEOUT" apiserver_ready
create_nodes
wait_for "kube-controller-manager, kube-scheduler and the default ServiceAccount" "$UP_TIMEOUT" components_ready
wait_for "${NODE_COUNT} Ready kwok nodes" "$UP_TIMEOUT" nodes_ready

log "cluster '${NAME}' ready in $(( SECONDS - START ))s (Kubernetes ${KUBE_VERSION}, ${NODE_COUNT} kwok nodes)"
log "  export KUBECONFIG=${KUBECONFIG_OUT}"
log "  export PATH=${CURRENT_BIN}:\$PATH"
printf '%s\n' "$KUBECONFIG_OUT"
