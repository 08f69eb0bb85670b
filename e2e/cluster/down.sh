#!/usr/bin/env bash
# Delete a cluster created by up.sh (stops its processes, removes its kwokctl workdir and
# $TRAINYARD_CACHE/clusters/NAME). Idempotent: no error if the cluster does not exist.
#
# Usage: down.sh [NAME]     (NAME defaults to "trainyard")
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME="${1:-trainyard}"
validate_name "$NAME"
START=$SECONDS
cluster_lock "$NAME"   # wait for a concurrent up.sh/down.sh of the same cluster

KWOKCTL="${CURRENT_BIN}/kwokctl"
if [[ -x "$KWOKCTL" ]]; then
  export PATH="${CURRENT_BIN}:${PATH}"
  if kwok_cluster_exists "$KWOKCTL" "$NAME"; then
    log "deleting cluster '${NAME}'"
    kwok_delete "$KWOKCTL" "$NAME"
  else
    log "cluster '${NAME}' does not exist; nothing to delete"
  fi
elif [[ -d "${KWOK_WORKDIR}/clusters/${NAME}" ]]; then
  die "kwokctl not found at ${KWOKCTL} but ${KWOK_WORKDIR}/clusters/${NAME} exists; run build.sh, then down.sh again"
fi
rm -rf "${CLUSTERS_DIR:?}/${NAME}"
log "cluster '${NAME}' is down ($(( SECONDS - START ))s)"
