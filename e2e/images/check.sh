#!/usr/bin/env bash
# Check the built images the way users' clusters run them (Docker, no network):
#   operator: non-root (uid 10001), starts `trainyard operator --help` with a read-only root
#             filesystem, all capabilities dropped, no privilege escalation, /tmp a tmpfs;
#             torch is not in it.
#   trainer:  non-root (uid 1000), `import torch` and a gloo all_reduce between 2 processes
#             (torchrun --standalone), read-only root filesystem as well.
# The trainer's uid writing to a root-owned checkpoint volume through the pod's fsGroup is checked
# on the real node (tests/node), where the kubelet applies the fsGroup.
#
# Usage: check.sh     (after build.sh)
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_docker
OPERATOR_REF="trainyard/operator:$(app_version)"
TRAINER_REF="$(trainer_image_ref)"
LOG="${LOG_DIR}/image-check.log"
: > "$LOG"
START=$SECONDS

fail() { tail -20 "$LOG" >&2; idie "$* (log: ${LOG})"; }
restricted=(--rm --network none --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)

uid="$("$DOCKER" run "${restricted[@]}" --entrypoint id "$OPERATOR_REF" -u 2>>"$LOG")" || fail "running ${OPERATOR_REF} failed"
[[ "$uid" == 10001 ]] || fail "${OPERATOR_REF} runs as uid ${uid}, not 10001"
"$DOCKER" run "${restricted[@]}" "$OPERATOR_REF" operator --help >>"$LOG" 2>&1 ||
  fail "${OPERATOR_REF}: 'trainyard operator --help' failed with a read-only root filesystem"
"$DOCKER" run "${restricted[@]}" --entrypoint python "$OPERATOR_REF" -c \
  "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" >>"$LOG" 2>&1 ||
  fail "${OPERATOR_REF} contains torch"
ilog "operator image: uid 10001, starts with a read-only root filesystem, no torch"

uid="$("$DOCKER" run "${restricted[@]}" "$TRAINER_REF" id -u 2>>"$LOG")" || fail "running ${TRAINER_REF} failed"
[[ "$uid" == 1000 ]] || fail "${TRAINER_REF} runs as uid ${uid}, not 1000"
# Two ranks on loopback (the container has no other network): the gloo all_reduce of their ranks + 1.
# torchrun's store advertises the container's hostname: make it resolve (to loopback).
"$DOCKER" run "${restricted[@]}" --hostname trainer-check --add-host trainer-check:127.0.0.1 \
    --shm-size 256m -e HOME=/tmp "$TRAINER_REF" sh -c '
cat > /tmp/allreduce.py <<"PY"
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
assert t.item() == 3.0, t
if dist.get_rank() == 0:
    print("gloo all_reduce ok:", t.item(), "torch", torch.__version__)
dist.destroy_process_group()
PY
timeout 300 torchrun --standalone --nnodes 1 --nproc-per-node 2 /tmp/allreduce.py' >>"$LOG" 2>&1 ||
  fail "${TRAINER_REF}: the gloo all_reduce between 2 processes failed"
grep -q 'gloo all_reduce ok: 3.0' "$LOG" || fail "${TRAINER_REF}: the all_reduce printed no result"
ilog "trainer image: uid 1000, $(grep -o 'torch [^ ]*$' "$LOG" | tail -1), gloo all_reduce of 2 ranks ok"
ilog "image checks passed in $(( SECONDS - START ))s"
