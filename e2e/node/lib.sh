# shellcheck shell=bash disable=SC2034  # settings for the scripts that source this file
# Common settings for e2e/node/*.sh. Sourced, never executed.

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/lib.sh
. "${NODE_DIR}/../cluster/lib.sh"
# shellcheck source=versions.env
. "${NODE_DIR}/versions.env"

log() { printf '[node] %s\n' "$*" >&2; }
die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }

# Persistent (kept by down.sh): configs, logs, containerd's root (the imported images), pidfiles.
NODE_HOME="${TRAINYARD_CACHE}/node"
NODE_LOGS="${NODE_HOME}/logs"
PIDS="${NODE_HOME}/pids"
CONTAINERD_ROOT="${NODE_HOME}/containerd/root"
CONTAINERD_RESET="${NODE_HOME}/containerd/RESET"
CNI_CONF_DIR="${NODE_HOME}/cni/net.d"
CNI_IPAM_DIR="${NODE_HOME}/cni/ipam"
KUBELET_ROOT="${NODE_HOME}/kubelet"
# Runtime state (sockets, mounts of running containers): short paths, as unix sockets need them.
RUN_DIR="/run/trainyard-node"
CONTAINERD_STATE="${RUN_DIR}/containerd"
CONTAINERD_SOCK="${RUN_DIR}/containerd.sock"
# The pre-created local PersistentVolumes' directories (e2e/node/up.sh, LOCAL_PVS of them).
PV_ROOT="${NODE_HOME}/pv"
LOCAL_PVS="${LOCAL_PVS:-8}"
STORAGE_CLASS=trainyard-local

# The cluster the node joins (e2e/cluster/up.sh NAME).
NODE_CLUSTER="${NODE_CLUSTER:-trainyard-node}"
CLUSTER_KUBECONFIG="${CLUSTERS_DIR}/${NODE_CLUSTER}/kubeconfig"

# iptables chains of ours (filter: FORWARD -> TRAINYARD-NODE; nat: PREROUTING -> TRAINYARD-NODE).
IPT_CHAIN=TRAINYARD-NODE
# /etc/hosts line marker: the node's name must resolve on this machine for the apiserver.
HOSTS_MARK="# trainyard-node (e2e/node/up.sh)"
# The kubernetes Service's ClusterIP: first address of the apiserver's default 10.0.0.0/24.
KUBERNETES_SVC_IP=10.0.0.1
SANDBOX_IMAGE="docker.io/trainyard/pause:${PAUSE_VERSION}"

CTR=(ctr --address "${CONTAINERD_SOCK}" --namespace k8s.io)
crictl_() { "${CURRENT_BIN}/crictl" --runtime-endpoint "unix://${CONTAINERD_SOCK}" --image-endpoint "unix://${CONTAINERD_SOCK}" --timeout 30s "$@"; }

mkdir -p "${NODE_LOGS}" "${PIDS}"

# pid_alive NAME: the process in pids/NAME.pid is running (and is what we started: same exe).
pid_alive() {
  local f="${PIDS}/$1.pid" pid
  [[ -s "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -d "/proc/${pid}" ]] || return 1
  [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "$(cat "${PIDS}/$1.exe" 2>/dev/null)" ]]
}

# start_daemon NAME LOG EXE ARGS...: start a long-lived process in its own session, record its
# PID (and executable, so a recycled PID is never taken for ours).
start_daemon() {
  local name="$1" logf="$2" exe="$3"; shift 3
  exe="$(readlink -f "$exe")"
  setsid "$exe" "$@" </dev/null >>"$logf" 2>&1 9>&- &
  printf '%s\n' "$!" > "${PIDS}/${name}.pid"
  printf '%s\n' "$exe" > "${PIDS}/${name}.exe"
}

# stop_daemon NAME [TIMEOUT]: SIGTERM, then SIGKILL after TIMEOUT seconds; by PID only.
stop_daemon() {
  local name="$1" limit="${2:-20}" pid t0=$SECONDS
  if pid_alive "$name"; then
    pid="$(cat "${PIDS}/${name}.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    while [[ -d "/proc/${pid}" ]]; do
      if (( SECONDS - t0 >= limit )); then
        log "${name} (pid ${pid}) did not stop within ${limit}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        break
      fi
      sleep 0.2
    done
  fi
  rm -f "${PIDS}/${name}.pid" "${PIDS}/${name}.exe"
}

# wait_until DESCRIPTION SECONDS LOGFILE CMD...: poll CMD; on timeout, name what failed and its log.
wait_until() {
  local what="$1" limit="$2" logf="$3" t0=$SECONDS; shift 3
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= limit )); then
      [[ -f "$logf" ]] && tail -15 "$logf" >&2
      die "timed out after ${limit}s waiting for ${what} (log: ${logf})"
    fi
    sleep 0.5
  done
}
