#!/usr/bin/env python3
"""A scripted stand-in for kubectl, to test e2e/kind/digits-resume.sh without a cluster whose pods
run: it plays a DistributedTrainingJob that trains STEPS_PER_CALL steps per kubectl call (a clock
of events, not of seconds, so a slow machine sees the same story), checkpoints every 50 steps,
restarts as a new gang when worker 1 is deleted and then finishes. The scenario comes from the
JSON file $FAKE_KUBECTL_STATE ({"scenario": "resume" | "from-zero" | "restart-counted"}); every
call is appended to its "calls". `kustomize` is passed to the real kubectl ($REAL_KUBECTL)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STEPS_PER_CALL = 10
RUNNING_READS = 2  # after the kill, the new gang is seen Running this many times, then Succeeded
FINAL = 460


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_KUBECTL_STATE"])
    st = json.loads(path.read_text())
    st.setdefault("calls", []).append(argv)
    if "applied" in st:
        st["ticks"] = st.get("ticks", 0) + 1
    try:
        return run(argv, st, st.get("ticks", 0))
    finally:
        path.write_text(json.dumps(st))


def step_of(st: dict, now: int) -> int:
    return min(FINAL, (now - st["applied"]) * STEPS_PER_CALL) if "applied" in st else 0


def run(argv: list[str], st: dict, now: int) -> int:
    verb = argv[0]
    if verb == "kustomize":
        os.execv(os.environ["REAL_KUBECTL"], [os.environ["REAL_KUBECTL"], *argv])
    if verb == "create":  # create namespace NS --dry-run=client -o yaml
        print(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {argv[2]}")
        return 0
    if verb == "apply":
        if "kind: DistributedTrainingJob" in sys.stdin.read():
            st.setdefault("applied", now)
        return 0
    if verb == "delete":  # delete pod NAME ...
        st["killed_at"] = step_of(st, now)
        st["killed"] = now
        return 0
    killed = "killed" in st
    resumed = (st["killed_at"] // 50) * 50 if killed else 0
    if st["scenario"] == "from-zero":
        resumed = 0
    finished = killed and st.get("running_reads", 0) >= RUNNING_READS
    if verb == "get" and argv[1] == "dtj":
        field = next((a for a in argv if a.startswith("jsonpath=")), "")[len("jsonpath={.status."):-1]
        if not field:
            return 0  # diagnostics (-o yaml): nothing to say
        if killed and field == "phase" and not finished:
            st["running_reads"] = st.get("running_reads", 0) + 1
        status = {
            "phase": "Succeeded" if finished else "Running",
            "attempt": 1 if killed else 0,
            "restarts": 1 if killed and st["scenario"] == "restart-counted" else 0,
            "disruptions": 0 if st["scenario"] == "restart-counted" or not killed else 1,
            "message": "all 2 workers succeeded" if finished else "",
        }
        print(status[field], end="")
        return 0
    if verb == "get" and argv[1] == "pods":
        attempt = int(next(a for a in argv if "trainyard.dev/attempt=" in a).rsplit("=", 1)[1])
        if attempt == 0 or killed:
            print(f"pod/digits-ddp-{attempt}-0\npod/digits-ddp-{attempt}-1")
        return 0
    if verb == "logs":
        pod = argv[3]
        if not pod.endswith("-0"):  # rank 0 is worker 0 here
            return 0
        attempt = int(pod.split("-")[-2])
        if attempt == 0:
            upto = st.get("killed_at", step_of(st, now))
            start, first = 0, "[trainyard] starting from step=0"
        else:
            upto, start, first = FINAL, resumed, (f"[trainyard] resumed from step={resumed}" if resumed
                                                   else "[trainyard] starting from step=0")
        print(first)
        for s in range(start + 10, upto + 1, 10):
            print(f"[trainyard] step={s} epoch={s // 23} loss=0.1000 samples_per_s=500.0")
            if s % 50 == 0 or s == FINAL:
                print(f"[trainyard] checkpoint step={s} stall_s=0.004 async=false")
        if attempt == 1:
            print(f"[trainyard] done step={FINAL} accuracy=0.9639")
        return 0
    return 0  # diagnostics (get -o yaml, events, ...): nothing to say


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
