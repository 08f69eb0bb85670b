#!/usr/bin/env bash
# Stop the Kueue process of cluster NAME (by its recorded PID) and remove its webhook
# configurations from the cluster, so that pods/jobs are not rejected by an unreachable webhook
# (failurePolicy: Fail). The CRDs and Kueue objects stay (their storage version, v1beta2, needs no
# conversion webhook); --purge also deletes the CRDs and the state dir (certificates, ports).
#
# Usage: down.sh [NAME] [--purge]      Idempotent.
set -euo pipefail

KUEUE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "${KUEUE_DIR}/lib.sh"

NAME=trainyard PURGE=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    -*) die "unknown argument: $a" ;;
    *) NAME="$a" ;;
  esac
done
validate_name "$NAME"
STATE="$(kueue_state_dir "$NAME")"
KUBECONFIG_PATH="${CLUSTERS_DIR}/${NAME}/kubeconfig"
KUBECTL="${CURRENT_BIN}/kubectl"
kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

cluster_reachable() { [[ -x "$KUBECTL" && -s "$KUBECONFIG_PATH" ]] && kctl get --raw /readyz >/dev/null 2>&1; }

if cluster_reachable; then
  kctl delete mutatingwebhookconfiguration kueue-mutating-webhook-configuration --ignore-not-found >/dev/null
  kctl delete validatingwebhookconfiguration kueue-validating-webhook-configuration --ignore-not-found >/dev/null
  log "removed Kueue's webhook configurations from cluster '${NAME}'"
fi

if PID="$(kueue_pid "$NAME")"; then
  log "stopping Kueue (pid $PID)"
  stop_pid "$PID"
else
  log "no Kueue process running for cluster '${NAME}'"
fi
rm -f "$STATE/kueue.pid"

if (( PURGE )); then
  if cluster_reachable && [[ -f "$STATE/crds.yaml" ]]; then
    kctl delete -f "$STATE/crds.yaml" --ignore-not-found --wait=false >/dev/null || true
    log "deleted Kueue's CRDs"
  fi
  rm -rf "${STATE:?}"
  log "removed $STATE"
  # up.sh's empty mount point for the metrics certificate; left if anything else uses it.
  rmdir /etc/kueue/metrics/certs /etc/kueue/metrics /etc/kueue 2>/dev/null || true
fi
