#!/usr/bin/env bash
# Run Kueue's manager as a local process against a kwokctl cluster made by e2e/cluster/up.sh.
#
#   1. the cluster NAME is started or reused (e2e/cluster/up.sh), Kueue is built if missing (build.sh)
#   2. a CA and a serving certificate for 127.0.0.1 are made (openssl), once per cluster
#   3. Kueue's CRDs are applied (server-side), with their conversion webhook pointed at
#      https://127.0.0.1:<webhook port>/convert
#   4. Kueue starts (leader election off, internal cert management off, metrics and health on
#      loopback ports, webhook server on 127.0.0.1) and its /readyz is awaited
#   5. the Mutating/ValidatingWebhookConfigurations are applied with clientConfig.url +
#      caBundle, and a server-side dry-run create proves the apiserver reaches the webhook server
#
# Usage: up.sh [NAME]        (NAME defaults to "trainyard")
# Prints the kubeconfig path as the last stdout line. Idempotent: a running, ready Kueue for NAME
# is reused; a dead one is restarted with the same ports and certificates.
#
# Env:
#   KUEUE_FRAMEWORKS            integrations.frameworks (default "batch/job,pod")
#   KUEUE_EXTERNAL_FRAMEWORKS   integrations.externalFrameworks (default
#                               "DistributedTrainingJob.v1alpha1.trainyard.dev")
#   KUEUE_WAIT_FOR_PODS_READY   waitForPodsReady.timeout, e.g. "30s" (default: empty = disabled)
#   KUEUE_WAIT_FOR_PODS_READY_RECOVERY  waitForPodsReady.recoveryTimeout (default: unset)
#   KUEUE_LOG_LEVEL             --zap-log-level (default 2, as upstream's Deployment)
#   KUEUE_MANAGE_JOBS_WITHOUT_QUEUE_NAME  manageJobsWithoutQueueName (default false)
#   KUEUE_IDENTITY              serviceaccount (default): Kueue runs as
#                               system:serviceaccount:kueue-system:kueue-controller-manager with
#                               upstream's ClusterRole (config/components/rbac/role.yaml) and the
#                               extra rules in KUEUE_EXTRA_RBAC; admin: the cluster-admin kubeconfig
#   KUEUE_EXTRA_RBAC            files applied (and bound to Kueue's identity) in addition
#                               (default: e2e/kueue/rbac-trainyard.yaml; "" for none)
#   KUEUE_WEBHOOK_PORT / KUEUE_METRICS_PORT / KUEUE_HEALTH_PORT   fixed ports (default: free ports,
#                               chosen once and kept in the state dir)
# A change of the configuration env vars restarts Kueue with the new configuration.
set -euo pipefail

KUEUE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "${KUEUE_DIR}/lib.sh"

NAME="${1:-trainyard}"
validate_name "$NAME"
START=$SECONDS

KUBECONFIG_PATH="$("${KUEUE_DIR}/../cluster/up.sh" "$NAME" | tail -1)"
"${KUEUE_DIR}/build.sh"
KUEUE_BIN="$(bin_path kueue "$KUEUE_VERSION")"
KUEUE_CFG_DIR="$(dirname "$KUEUE_BIN")/config"
KUBECTL="$(need_bin kubectl)"
kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=30s "$@"; }

STATE="$(kueue_state_dir "$NAME")"
mkdir -p "$STATE/pki/serving" "$STATE/pki/metrics"
chmod 700 "$STATE/pki"

FRAMEWORKS="${KUEUE_FRAMEWORKS:-batch/job,pod}"
EXTERNAL="${KUEUE_EXTERNAL_FRAMEWORKS-DistributedTrainingJob.v1alpha1.trainyard.dev}"
WFPR="${KUEUE_WAIT_FOR_PODS_READY:-}"
WFPR_RECOVERY="${KUEUE_WAIT_FOR_PODS_READY_RECOVERY:-}"
LOG_LEVEL="${KUEUE_LOG_LEVEL:-2}"
MANAGE_WITHOUT_QUEUE="${KUEUE_MANAGE_JOBS_WITHOUT_QUEUE_NAME:-false}"

# ---------------------------------------------------------------------------------------------
# Ports: chosen once per cluster (the webhook URL is baked into the apiserver's configuration).
# ---------------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [[ -f "$STATE/ports.env" ]]; then . "$STATE/ports.env"; fi
WEBHOOK_PORT="${KUEUE_WEBHOOK_PORT:-${WEBHOOK_PORT:-$(free_port)}}"
METRICS_PORT="${KUEUE_METRICS_PORT:-${METRICS_PORT:-$(free_port)}}"
HEALTH_PORT="${KUEUE_HEALTH_PORT:-${HEALTH_PORT:-$(free_port)}}"
printf 'WEBHOOK_PORT=%s\nMETRICS_PORT=%s\nHEALTH_PORT=%s\n' "$WEBHOOK_PORT" "$METRICS_PORT" "$HEALTH_PORT" > "$STATE/ports.env"

# ---------------------------------------------------------------------------------------------
# PKI: CA + serving cert for the webhook server (and one for the metrics endpoint).
# ---------------------------------------------------------------------------------------------
make_cert() { # make_cert DIR CN: key + cert signed by our CA, SAN 127.0.0.1 and localhost
  local dir="$1" cn="$2"
  openssl req -newkey rsa:2048 -nodes -keyout "$dir/tls.key" -subj "/CN=$cn" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > "$dir/ext.cnf"
  openssl x509 -req -in "$dir/tls.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null
  rm -f "$dir/tls.csr" "$dir/ext.cnf"
  chmod 600 "$dir/tls.key"
}
if [[ ! -s "$STATE/pki/ca.crt" || ! -s "$STATE/pki/serving/tls.crt" ]]; then
  log "generating CA and serving certificates for 127.0.0.1 in $STATE/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=trainyard-kueue-ca-${NAME}" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt" 2>/dev/null
  chmod 600 "$STATE/pki/ca.key"
  make_cert "$STATE/pki/serving" kueue-webhook
  make_cert "$STATE/pki/metrics" kueue-metrics
fi

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
yaml_list() { local IFS=,; local x; for x in $1; do [[ -n "$x" ]] && printf '  - "%s"\n' "$x"; done; }
CONFIG="$STATE/config.yaml"
{
  cat <<YAML
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:${HEALTH_PORT}
metrics:
  bindAddress: 127.0.0.1:${METRICS_PORT}
webhook:
  host: 127.0.0.1
  port: ${WEBHOOK_PORT}
  certDir: ${STATE}/pki/serving
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
manageJobsWithoutQueueName: ${MANAGE_WITHOUT_QUEUE}
managedJobsNamespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: [kube-system, kueue-system]
controller:
  groupKindConcurrency:
    Job.batch: 5
    Pod: 5
    Workload.kueue.x-k8s.io: 5
    LocalQueue.kueue.x-k8s.io: 1
    Cohort.kueue.x-k8s.io: 1
    ClusterQueue.kueue.x-k8s.io: 1
    ResourceFlavor.kueue.x-k8s.io: 1
clientConnection:
  qps: 50
  burst: 100
featureGates:
  # The visibility API server wants certificates at /visibility and an APIService routed to an
  # in-cluster Service; neither exists here and the operator does not need it.
  VisibilityOnDemand: false
integrations:
  frameworks:
YAML
  yaml_list "$FRAMEWORKS"
  if [[ -n "$EXTERNAL" ]]; then printf '  externalFrameworks:\n'; yaml_list "$EXTERNAL"; fi
  if [[ -n "$WFPR" ]]; then
    printf 'waitForPodsReady:\n  timeout: %s\n  blockAdmission: false\n' "$WFPR"
    [[ -n "$WFPR_RECOVERY" ]] && printf '  recoveryTimeout: %s\n' "$WFPR_RECOVERY"
    printf '  requeuingStrategy:\n    timestamp: Eviction\n    backoffBaseSeconds: 10\n    backoffMaxSeconds: 60\n'
  fi
  # Not read by Kueue; makes a change of identity count as a configuration change (restart).
  printf '# identity: %s, extra RBAC: %s\n' "${KUEUE_IDENTITY:-serviceaccount}" "${KUEUE_EXTRA_RBAC-${KUEUE_DIR}/rbac-trainyard.yaml}"
} > "$CONFIG.new"
CONFIG_CHANGED=0
if ! cmp -s "$CONFIG.new" "$CONFIG"; then CONFIG_CHANGED=1; mv -f "$CONFIG.new" "$CONFIG"; else rm -f "$CONFIG.new"; fi

# ---------------------------------------------------------------------------------------------
# Manifests (CRDs with conversion webhook URL, webhook configurations)
# ---------------------------------------------------------------------------------------------
python3 "${KUEUE_DIR}/manifests.py" "$KUEUE_CFG_DIR" "$WEBHOOK_PORT" "$STATE/pki/ca.crt" "$FRAMEWORKS" \
  "$STATE/crds.yaml" "$STATE/webhooks.yaml" 2> "$STATE/manifests.log" || { cat "$STATE/manifests.log" >&2; die "rendering manifests failed"; }

# Applying the CRDs (1.6 MB, server-side) takes seconds on a busy machine: skip it when exactly
# these manifests were applied to this cluster already and the Workload CRD still points at us.
CRD_SHA="$(cat "$STATE/crds.yaml" | sha256sum | cut -d' ' -f1)"
crds_current() {
  [[ "$(cat "$STATE/crds.applied" 2>/dev/null)" == "$CRD_SHA" ]] &&
  [[ "$(kctl get crd workloads.kueue.x-k8s.io -o jsonpath='{.spec.conversion.webhook.clientConfig.url}' 2>/dev/null)" == "https://127.0.0.1:${WEBHOOK_PORT}/convert" ]]
}
if ! crds_current; then
  kctl apply --server-side --force-conflicts --field-manager=trainyard-kueue-up -f "$STATE/crds.yaml" >/dev/null
  kctl wait --for=condition=Established --timeout=60s -f "$STATE/crds.yaml" >/dev/null
  printf '%s\n' "$CRD_SHA" > "$STATE/crds.applied"
fi
kctl get namespace kueue-system >/dev/null 2>&1 || kctl create namespace kueue-system >/dev/null

# ---------------------------------------------------------------------------------------------
# Identity: by default the ServiceAccount identity of an in-cluster install, with upstream's RBAC,
# so that missing permissions show up here as they would in a real cluster.
# ---------------------------------------------------------------------------------------------
IDENTITY="${KUEUE_IDENTITY:-serviceaccount}"
EXTRA_RBAC="${KUEUE_EXTRA_RBAC-${KUEUE_DIR}/rbac-trainyard.yaml}"
KUEUE_SA=kueue-controller-manager
case "$IDENTITY" in
  admin) KUEUE_KUBECONFIG="$KUBECONFIG_PATH" ;;
  serviceaccount)
    # Upstream's manager RBAC with what kustomize (config/default) does to it: namePrefix
    # "kueue-", namespace "system" -> kueue-system.
    python3 - "$KUEUE_CFG_DIR/rbac" > "$STATE/rbac.yaml" <<'PY'
import glob, os, sys, yaml
out = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        d["metadata"]["name"] = "kueue-" + d["metadata"]["name"]
        if "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = "kueue-system"
        if "roleRef" in d:
            d["roleRef"]["name"] = "kueue-" + d["roleRef"]["name"]
        for sub in d.get("subjects", []):
            sub["name"] = "kueue-" + sub["name"]
            sub["namespace"] = "kueue-system"
        out.append(d)
yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
PY
    kctl apply --server-side --force-conflicts --field-manager=trainyard-kueue-up -f "$STATE/rbac.yaml" >/dev/null
    if [[ -n "$EXTRA_RBAC" ]]; then
      kctl apply --server-side --force-conflicts --field-manager=trainyard-kueue-up -f "$EXTRA_RBAC" >/dev/null
    fi
    KUEUE_KUBECONFIG="${CLUSTERS_DIR}/${NAME}/kubeconfig-system_serviceaccount_kueue-system_${KUEUE_SA}"
    [[ -s "$KUEUE_KUBECONFIG" ]] ||
      KUEUE_KUBECONFIG="$("${KUEUE_DIR}/../cluster/kubeconfig-for.sh" "$NAME" "system:serviceaccount:kueue-system:${KUEUE_SA}" \
        system:serviceaccounts system:serviceaccounts:kueue-system system:authenticated | tail -1)"
    ;;
  *) die "KUEUE_IDENTITY must be serviceaccount or admin (got '$IDENTITY')" ;;
esac

# ---------------------------------------------------------------------------------------------
# Start (or reuse) the process
# ---------------------------------------------------------------------------------------------
ready() { [[ "$(curl -s --max-time 2 "http://127.0.0.1:${HEALTH_PORT}/readyz" 2>/dev/null)" == "ok" ]]; }

PID="$(kueue_pid "$NAME" || true)"
if [[ -n "$PID" && $CONFIG_CHANGED -eq 1 ]]; then
  log "configuration changed; restarting Kueue (pid $PID)"
  stop_pid "$PID"; PID=""
fi
if [[ -n "$PID" ]] && ready; then
  log "Kueue ${KUEUE_VERSION} for cluster '${NAME}' already running (pid ${PID}); reusing it"
else
  [[ -n "$PID" ]] && { log "Kueue (pid $PID) is not ready; restarting it"; stop_pid "$PID"; }
  log "starting Kueue ${KUEUE_VERSION} for cluster '${NAME}' (webhook 127.0.0.1:${WEBHOOK_PORT}, health :${HEALTH_PORT}, metrics :${METRICS_PORT}); log: $STATE/kueue.log"
  ARGS=(--config "$CONFIG" --kubeconfig "$KUEUE_KUBECONFIG" --zap-log-level="$LOG_LEVEL")
  # Kueue (cmd/kueue/main.go) reads the metrics certificate from the fixed path
  # /etc/kueue/metrics/certs when internal cert management is off, and exits if it is missing.
  # Give the process a private mount namespace in which our metrics certificate is bind-mounted
  # there; the host only gets the (empty) mount point.
  METRICS_MNT=/etc/kueue/metrics/certs
  if [[ -f "$METRICS_MNT/tls.crt" && -f "$METRICS_MNT/tls.key" ]] && ! mountpoint -q "$METRICS_MNT"; then
    LAUNCH=("$KUEUE_BIN" "${ARGS[@]}")    # someone provided them on the host already
  elif mkdir -p "$METRICS_MNT" 2>/dev/null && unshare --mount --propagation private true 2>/dev/null; then
    LAUNCH=(unshare --mount --propagation private -- sh -c 'mount --bind "$0" /etc/kueue/metrics/certs && exec "$@"' \
      "$STATE/pki/metrics" "$KUEUE_BIN" "${ARGS[@]}")
  else
    die "Kueue needs $METRICS_MNT/tls.{crt,key}: run as root (private mount namespace) or install them there"
  fi
  : > "$STATE/kueue.log"
  # setsid: its own session, so it survives this shell; fd 9 (cluster lock) is not inherited.
  # The launcher writes its own PID and execs (bash -> unshare -> sh -> kueue keep that PID).
  rm -f "$STATE/kueue.pid"
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE/kueue.pid" "${LAUNCH[@]}" >>"$STATE/kueue.log" 2>&1 < /dev/null 9>&- &
  for (( i = 0; i < 50; i++ )); do [[ -s "$STATE/kueue.pid" ]] && break; sleep 0.1; done
  t0=$SECONDS
  until ready; do
    kill -0 "$(cat "$STATE/kueue.pid")" 2>/dev/null || { tail -30 "$STATE/kueue.log" >&2; die "Kueue exited during startup (log: $STATE/kueue.log)"; }
    (( SECONDS - t0 < ${KUEUE_UP_TIMEOUT:-120} )) || { tail -30 "$STATE/kueue.log" >&2; die "Kueue not ready after ${KUEUE_UP_TIMEOUT:-120}s"; }
    sleep 0.5
  done
  log "Kueue ready after $(( SECONDS - t0 ))s (pid $(cat "$STATE/kueue.pid"))"
fi

# ---------------------------------------------------------------------------------------------
# Webhook configurations, applied once the webhook server answers (failurePolicy is Fail).
# ---------------------------------------------------------------------------------------------
kctl apply --server-side --force-conflicts --field-manager=trainyard-kueue-up -f "$STATE/webhooks.yaml" >/dev/null
# Prove the path apiserver -> webhook: a dry-run create goes through mresourceflavor/vresourceflavor,
# and a v1beta1 read goes through the conversion webhook. Retry briefly: the apiserver's webhook
# client picks up new configurations within a second or so.
probe() {
  printf 'apiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\nmetadata: {name: trainyard-kueue-probe}\n' |
    kctl create --dry-run=server -f - >/dev/null 2>"$STATE/probe.err" &&
  kctl get --raw /apis/kueue.x-k8s.io/v1beta1/workloads >/dev/null 2>>"$STATE/probe.err"
}
t0=$SECONDS
until probe; do
  (( SECONDS - t0 < 30 )) || { cat "$STATE/probe.err" >&2; die "the apiserver cannot reach Kueue's webhook server at https://127.0.0.1:${WEBHOOK_PORT}"; }
  sleep 0.5
done
log "$(tr '\n' ';' < "$STATE/manifests.log")"
log "Kueue ${KUEUE_VERSION} up for cluster '${NAME}' in $(( SECONDS - START ))s"
printf '%s\n' "$KUBECONFIG_PATH"
