# shellcheck shell=bash
# Common settings for e2e/cluster/*.sh. Sourced, never executed.

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "${CLUSTER_DIR}/versions.env"

TRAINYARD_CACHE="${TRAINYARD_CACHE:-${HOME}/.cache/trainyard}"
BIN_ROOT="${TRAINYARD_CACHE}/bin"
CURRENT_BIN="${BIN_ROOT}/current"
CLUSTERS_DIR="${TRAINYARD_CACHE}/clusters"
# kwokctl keeps its clusters under $KWOK_WORKDIR/clusters/<name>; keep them inside our cache.
export KWOK_WORKDIR="${KWOK_WORKDIR:-${TRAINYARD_CACHE}/kwok}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# bin_path NAME VERSION -> versioned location of a built binary
bin_path() { printf '%s/%s-%s/%s' "${BIN_ROOT}" "$1" "$2" "$1"; }

# Resolve a tool from the stable symlink dir; fail with a hint if it was never built.
need_bin() {
  local p="${CURRENT_BIN}/$1"
  [[ -x "$p" ]] || die "$1 not found at $p; run 'make cluster-tools' (e2e/cluster/build.sh) first"
  printf '%s' "$p"
}

validate_name() {
  [[ "$1" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || die "invalid cluster name '$1' (use [a-z0-9-])"
}

# kwok_delete KWOKCTL NAME: stop and delete a kwokctl cluster without touching ~/.kube/config.
# (`kwokctl delete cluster --kubeconfig ''` fails with "empty path", and the default would edit
# ~/.kube/config; point it at a scratch file that only ever holds an empty config.)
kwok_delete() {
  local scratch="${CLUSTERS_DIR}/$2/.kwokctl-delete-kubeconfig"
  mkdir -p "$(dirname "$scratch")"
  kwokctl_run "$1" delete cluster --name "$2" --kubeconfig "$scratch" >&2
  local rc=$?
  rm -f "$scratch"
  return $rc
}

# cluster_lock NAME: hold an exclusive lock (fd 9) for the rest of the calling script.
# Anything that may start long-lived processes (kwokctl create/start) must run with `9>&-`, or the
# cluster's daemons would inherit fd 9 and hold the lock forever (see kwokctl_run).
# The lock is advisory: after LOCK_TIMEOUT seconds the script goes on with a warning rather than
# hang (e.g. if some process leaked the fd).
cluster_lock() {
  command -v flock >/dev/null 2>&1 || return 0
  local f="${CLUSTERS_DIR}/.locks/$1"
  mkdir -p "${CLUSTERS_DIR}/.locks"
  exec 9>"$f"
  flock -w "${LOCK_TIMEOUT:-120}" 9 ||
    log "warning: could not lock $f within ${LOCK_TIMEOUT:-120}s (held by: $(fuser "$f" 2>/dev/null || echo '?')); going on without it"
}

# kwokctl_run KWOKCTL ARGS...: run kwokctl without the lock fd (its daemons must not inherit it).
kwokctl_run() { "$@" 9>&-; }

# kwok_cluster_exists KWOKCTL NAME. (Not `| grep -q`: grep -q exits at the first match, kwokctl
# may then die of SIGPIPE, and with pipefail the pipeline fails at random.)
kwok_cluster_exists() {
  local list
  list="$("$1" get clusters 2>/dev/null)" || return 1
  grep -qx -- "$2" <<<"$list"
}
