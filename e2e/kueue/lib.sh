# shellcheck shell=bash
# Common settings for e2e/kueue/*.sh. Sourced, never executed.
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
# shellcheck source=versions.env
. "$(dirname "${BASH_SOURCE[0]}")/versions.env"

log() { printf '[kueue] %s\n' "$*" >&2; }
die() { printf '[kueue] ERROR: %s\n' "$*" >&2; exit 1; }

# Per-cluster state: pki/, config.yaml, ports.env, crds.yaml, webhooks.yaml, kueue.pid, kueue.log
kueue_state_dir() { printf '%s/kueue/%s' "$TRAINYARD_CACHE" "$1"; }

# kueue_pid NAME: the PID of the running Kueue of that cluster (exit 1 if none). The PID file is
# trusted only if that process is still the Kueue binary started for this state dir.
kueue_pid() {
  local f pid
  f="$(kueue_state_dir "$1")/kueue.pid"
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(kueue_state_dir "$1")/config.yaml" || return 1
  printf '%s' "$pid"
}

# stop_pid PID: TERM, wait up to 15 s, then KILL. Only ever the PID we recorded.
stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for (( i = 0; i < 30; i++ )); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  log "pid $pid did not stop after 15s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
