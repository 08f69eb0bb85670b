#!/usr/bin/env bash
# Take the node made by up.sh apart, leaving no process, mount, bridge, iptables rule, network
# namespace or /etc/hosts line behind. Idempotent: a second run (or a run with nothing up) finds
# nothing to do. Kept: $TRAINYARD_CACHE/node (configs, logs, containerd's root with the imported
# images, so the next up.sh imports nothing) and the cluster's other objects.
#
# Usage: down.sh [--cluster] [--docker]
#   --cluster   also delete the control plane (e2e/cluster/down.sh NODE_CLUSTER)
#   --docker    also stop a dockerd that e2e/images/lib.sh started (by its pidfile)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER=0 DOCKER_TOO=0
for a in "$@"; do
  case "$a" in
    --cluster) CLUSTER=1 ;;
    --docker) DOCKER_TOO=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "the node needs root"
START=$SECONDS
KUBECTL="${CURRENT_BIN}/kubectl"
kctl() { "$KUBECTL" --kubeconfig "$CLUSTER_KUBECONFIG" --request-timeout=10s "$@"; }
api_up() { [[ -s "$CLUSTER_KUBECONFIG" && -x "$KUBECTL" ]] && kctl get --raw /readyz >/dev/null 2>&1; }

# 1. The kubelet first, so it restarts nothing while the pods go.
stop_daemon kubelet 30

# 2. Every pod sandbox through the CRI: containers stopped, CNI DEL (veth, IP released), network
#    namespace and shm unmounted. Then containerd itself.
if pid_alive containerd; then
  if [[ -x "${CURRENT_BIN}/crictl" ]]; then
    crictl_ rmp --all --force >>"${NODE_LOGS}/down.log" 2>&1 || log "crictl rmp failed (log: ${NODE_LOGS}/down.log); cleaning up by hand"
  fi
  stop_daemon containerd 30
fi
# Shims of containers that outlived containerd: by the PIDs the shims recorded in our state dir.
if [[ -d "${CONTAINERD_STATE}" ]]; then
  while IFS= read -r f; do
    pid="$(cat "$f" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ && "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == */containerd-shim-runc-v2 ]]; then
      log "killing leftover shim ${pid} ($f)"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done < <(find "${CONTAINERD_STATE}" -name shim.pid 2>/dev/null)
fi
stop_daemon coredns 10

# 3. Mounts left under our directories (container rootfs, shm, the kubelet's volumes), deepest
#    first; then network namespaces our CNI network still holds.
our_mounts() {
  awk -v a="${RUN_DIR}/" -v b="${NODE_HOME}/" '{ if (index($2, a) == 1 || index($2, b) == 1) print $2 }' /proc/self/mounts | sort -r
}
for _ in 1 2 3; do
  m="$(our_mounts)"
  [[ -n "$m" ]] || break
  while IFS= read -r p; do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true; done <<<"$m"
done
[[ -z "$(our_mounts)" ]] || log "warning: mounts still left: $(our_mounts | tr '\n' ' ')"
# host-local's records name each pod's netns only through its container ID; a namespace our
# containerd made and the CRI did not remove is a /run/netns/cni-* whose veth sits on our bridge.
if ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    if ip -n "$ns" -o addr show 2>/dev/null | grep -q "inet ${NODE_POD_CIDR%.*}\."; then
      log "removing leftover network namespace ${ns}"
      ip netns delete "$ns" 2>/dev/null || true
    fi
  done
fi
rm -rf "${CNI_IPAM_DIR}"

# 4. Network: iptables chains, the bridge, the /etc/hosts line.
if iptables -w -C FORWARD -j "${IPT_CHAIN}" 2>/dev/null; then iptables -w -D FORWARD -j "${IPT_CHAIN}"; fi
if iptables -w -F "${IPT_CHAIN}" 2>/dev/null; then iptables -w -X "${IPT_CHAIN}"; fi
if iptables -w -t nat -C PREROUTING -j "${IPT_CHAIN}" 2>/dev/null; then iptables -w -t nat -D PREROUTING -j "${IPT_CHAIN}"; fi
if iptables -w -t nat -F "${IPT_CHAIN}" 2>/dev/null; then iptables -w -t nat -X "${IPT_CHAIN}"; fi
# The kubelet's own chains, IPv4 and IPv6: KUBE-FIREWALL (drops non-loopback packets to
# 127.0.0.0/8 unless DNAT'ed; jumped to from INPUT and OUTPUT), KUBE-KUBELET-CANARY (to notice an
# iptables flush) and KUBE-IPTABLES-HINT (tells other tools which iptables backend it uses).
# No other kubelet runs on this machine, so these are ours.
for ipt in iptables ip6tables; do
  command -v "$ipt" >/dev/null 2>&1 || continue
  for t in filter nat mangle; do
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      "$ipt" -w -t "$t" -S "$chain" >/dev/null 2>&1 || continue
      # Rules in other chains that jump to it, e.g. "-A INPUT -j KUBE-FIREWALL".
      while read -r _ from rest; do
        # shellcheck disable=SC2086  # the rule's words, as iptables -S printed them
        "$ipt" -w -t "$t" -D "$from" $rest 2>/dev/null || true
      done < <("$ipt" -w -t "$t" -S 2>/dev/null | grep -E "^-A [^ ]+ .*-j ${chain}( |\$)" | grep -v "^-A ${chain} ")
      "$ipt" -w -t "$t" -F "$chain" 2>/dev/null || true
      "$ipt" -w -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
done
if ip link show "${NODE_BRIDGE}" >/dev/null 2>&1; then ip link delete "${NODE_BRIDGE}"; fi
if grep -qF "${HOSTS_MARK}" /etc/hosts; then
  # /etc/hosts may be a bind mount: rewrite it in place rather than replace the file.
  grep -vF "${HOSTS_MARK}" /etc/hosts > "${NODE_HOME}/hosts.tmp" || true
  cat "${NODE_HOME}/hosts.tmp" > /etc/hosts
  rm -f "${NODE_HOME}/hosts.tmp"
fi
rm -rf "${RUN_DIR}"

# 5. The cluster's view: the Node object and the local PVs (their directories are emptied by the
#    next up.sh). Or the whole control plane.
if (( CLUSTER )); then
  "${CLUSTER_DIR}/down.sh" "${NODE_CLUSTER}"
elif api_up; then
  kctl delete node "${NODE_NAME}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kctl delete pv -l trainyard.dev/local-pv=true --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
if (( DOCKER_TOO )) && [[ -s "${TRAINYARD_CACHE}/node/dockerd.pid" ]]; then
  pid="$(cat "${TRAINYARD_CACHE}/node/dockerd.pid")"
  if [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == */dockerd ]]; then
    log "stopping dockerd (pid ${pid})"
    kill -TERM "$pid"
    for _ in $(seq 100); do [[ -d "/proc/${pid}" ]] || break; sleep 0.2; done
  fi
fi
log "node down in $(( SECONDS - START ))s"
