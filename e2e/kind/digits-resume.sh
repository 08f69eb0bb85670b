#!/usr/bin/env bash
# A real training run on a real cluster (kind in .github/workflows/e2e-kind.yaml): the digits DDP
# example (e2e/kind/digits-ddp: examples/digits-ddp.yaml with 2 workers and a ReadWriteOnce
# claim), one worker pod killed mid-training, and the job must resume from its last checkpoint
# (not step 0) and end Succeeded.
#
# Needs: kubectl on PATH (or $KUBECTL) pointing at a cluster (KUBECONFIG) where the Trainyard chart
# is installed and the trainer image (trainyard/trainer:<tag> of the example) can be run.
#
# Env: NS (digits-e2e), KILL_AFTER_CHECKPOINT (100: kill once a checkpoint at or past this step
#      exists), RUNNING_TIMEOUT (600 s), KILL_TIMEOUT (300 s), SUCCESS_TIMEOUT (900 s), POLL (2 s).
# tests/chart/test_e2e_scripts.py runs it against a scripted kubectl.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBECTL="${KUBECTL:-kubectl}"
NS="${NS:-digits-e2e}"
JOB=digits-ddp
KILL_AFTER_CHECKPOINT="${KILL_AFTER_CHECKPOINT:-100}"
RUNNING_TIMEOUT="${RUNNING_TIMEOUT:-600}"
KILL_TIMEOUT="${KILL_TIMEOUT:-300}"
SUCCESS_TIMEOUT="${SUCCESS_TIMEOUT:-900}"
POLL="${POLL:-2}"

log() { printf '[digits-e2e] %s\n' "$*" >&2; }
k() { "$KUBECTL" "$@"; }

diagnose() {
  log "FAILED; the state of the cluster:"
  k get dtj "$JOB" -n "$NS" -o yaml >&2 || true
  k get pods,pvc,svc -n "$NS" -o wide >&2 || true
  k get events -n "$NS" --sort-by=.lastTimestamp >&2 || true
  local p
  for p in $(k get pods -n "$NS" -l "trainyard.dev/job-name=${JOB}" -o name 2>/dev/null); do
    log "--- logs of ${p}"
    k logs -n "$NS" "$p" -c trainer --tail=60 >&2 || true
  done
  log "--- operator logs"
  k logs -n "${OPERATOR_NS:-trainyard-system}" -l app.kubernetes.io/name=trainyard --tail=200 >&2 || true
}
trap 'diagnose' ERR

die() { log "ERROR: $*"; diagnose; trap - ERR; exit 1; }

field() { k get dtj "$JOB" -n "$NS" -o "jsonpath={$1}" 2>/dev/null || true; }

# wait_until DESCRIPTION SECONDS CMD...: poll every $POLL s; a Failed job ends the wait at once.
wait_until() {
  local what="$1" limit="$2" t0=$SECONDS; shift 2
  until "$@"; do
    [[ "$(field .status.phase)" != "Failed" ]] || die "the job failed while waiting for ${what}: $(field .status.message)"
    (( SECONDS - t0 < limit )) || die "timed out after ${limit}s waiting for ${what}"
    sleep "$POLL"
  done
  log "${what}: after $(( SECONDS - t0 ))s"
}

# Every trainer log line of the given attempt's pods (only rank 0 prints progress, and c10d
# decides which worker holds rank 0).
attempt_logs() {
  local p
  for p in $(k get pods -n "$NS" -l "trainyard.dev/job-name=${JOB},trainyard.dev/attempt=$1" -o name); do
    k logs -n "$NS" "$p" -c trainer 2>/dev/null || true
  done
}

# The highest step N of the lines `[trainyard] <what> step=N` in attempt $2's logs (empty: none).
max_step() {
  attempt_logs "$2" | sed -n "s/^\[trainyard\] $1step=\([0-9][0-9]*\).*/\1/p" | sort -n | tail -1
}

phase_is() { [[ "$(field .status.phase)" == "$1" ]]; }
checkpointed() { local s; s="$(max_step 'checkpoint ' 0)"; [[ -n "$s" && "$s" -ge "$KILL_AFTER_CHECKPOINT" ]]; }
new_gang_running() { [[ "$(field .status.attempt)" -ge 1 ]] && phase_is Running; }

# ---------------------------------------------------------------------------------------------
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
manifest="$(k kustomize --load-restrictor LoadRestrictionsNone "$HERE/digits-ddp")"
image="$(sed -n 's/^ *image: //p' <<<"$manifest" | head -1)"
log "applying ${JOB} (image ${image}) in namespace ${NS}"
k apply -n "$NS" -f - <<<"$manifest"

START=$SECONDS
wait_until "phase Running (2 workers)" "$RUNNING_TIMEOUT" phase_is Running
wait_until "a checkpoint at step >= ${KILL_AFTER_CHECKPOINT}" "$KILL_TIMEOUT" checkpointed
at_kill="$(max_step '' 0)"
last_checkpoint="$(max_step 'checkpoint ' 0)"
log "killing worker 1 (pod ${JOB}-0-1) at step ${at_kill}; last checkpoint: step ${last_checkpoint}"
k delete pod "${JOB}-0-1" -n "$NS" --grace-period=0 --force --wait=false

wait_until "a new gang (attempt 1) Running" "$RUNNING_TIMEOUT" new_gang_running
wait_until "phase Succeeded" "$SUCCESS_TIMEOUT" phase_is Succeeded

# ---------------------------------------------------------------------------------------------
restarts="$(field .status.restarts)" disruptions="$(field .status.disruptions)" attempt="$(field .status.attempt)"
log "status: phase=$(field .status.phase) restarts=${restarts} disruptions=${disruptions} attempt=${attempt}: $(field .status.message)"
# A pod deleted by someone else is a disruption: the gang is restarted, the failure budget
# (restarts, backoffLimit) is not charged.
[[ "$disruptions" == 1 ]] || die "expected 1 disruption, got ${disruptions}"
[[ "$restarts" == 0 ]] || die "expected 0 restarts (a deleted pod is a disruption), got ${restarts}"
[[ "$attempt" == 1 ]] || die "expected attempt 1, got ${attempt}"

logs="$(attempt_logs 1)"
resumed="$(sed -n 's/^\[trainyard\] resumed from step=\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p' <<<"$logs" | head -1)"
done_line="$(grep -m1 '^\[trainyard\] done step=' <<<"$logs" || true)"
[[ -n "$resumed" ]] || die "attempt 1 did not resume from a checkpoint (no 'resumed from step=N' line)"
[[ -n "$done_line" ]] || die "attempt 1 has no 'done' line"
final="$(sed -n 's/^\[trainyard\] done step=\([0-9][0-9]*\).*/\1/p' <<<"$done_line")"
# Not step 0, and not older than the last checkpoint seen before the kill (one more may have
# been written between reading the logs and the kill).
(( resumed >= last_checkpoint && resumed < final )) ||
  die "attempt 1 resumed from step ${resumed}; expected the last checkpoint before the kill (>= ${last_checkpoint}, < ${final})"
trap - ERR
log "OK in $(( SECONDS - START ))s: killed at step ${at_kill}, resumed from step ${resumed}; ${done_line#\[trainyard\] }"
