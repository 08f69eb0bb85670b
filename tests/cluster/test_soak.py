"""A bounded, seeded soak (issue 11): faults injected into several jobs on the real control plane,
with the operator SIGKILLed at random moments and pods deleted while it is down. Every fault is
counted exactly once, as a restart or a disruption, and the invariants hold throughout.

SOAK_SEED picks another sequence, SOAK_FAULTS another length; a failure prints the seed."""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field

from .helpers import job_manifest, wait_for

SEED = int(os.environ.get("SOAK_SEED", "1101"))
FAULTS = int(os.environ.get("SOAK_FAULTS", "24"))
JOBS = 5
STALE_BOUND = 15.0  # an old gang's pod may stay live this long after its job moved on


@dataclass
class Ledger:
    name: str
    workers: int
    restarts: int = 0
    disruptions: int = 0
    attempt: int = 0
    reactions: list[float] = field(default_factory=list)


def live(kube, ns, job):
    return [p for p in kube.pods(ns, job) if p.metadata.deletion_timestamp is None
            and p.status.phase not in ("Succeeded", "Failed")]


def check_invariants(kube, ns, jobs: dict[str, Ledger], moved_on: dict[str, float], violations: list[str]) -> None:
    now = time.monotonic()
    for name in jobs:
        status = kube.status(ns, name)
        attempt = status.get("attempt", 0)
        pods = live(kube, ns, name)
        seen: dict[tuple[str, str], str] = {}
        for p in pods:
            key = (p.metadata.labels["trainyard.dev/attempt"], p.metadata.labels["trainyard.dev/worker-index"])
            if key in seen:
                violations.append(f"{name}: two live pods for attempt/index {key}")
            seen[key] = p.metadata.name
            old = int(key[0]) < status.get("rendezvousAttempt", 0)
            if old and now - moved_on.get(name, now) > STALE_BOUND:
                violations.append(f"{name}: {p.metadata.name} of an old gang still live {now - moved_on[name]:.0f}s "
                                  f"after attempt {attempt}")


def react(kube, ns, led: Ledger, timeout: float = 90) -> None:
    """Waits until the job shows the reaction to the last fault: a new attempt, Running again."""
    t0 = time.monotonic()
    want = led.attempt + 1

    def done():
        s = kube.status(ns, led.name)
        return s.get("attempt") == want and s.get("phase") == "Running" and \
            len(kube.running(ns, led.name, want, led.workers)) == led.workers and s

    wait_for(done, timeout, f"{led.name} back to Running at attempt {want} (seed {SEED})", interval=0.2)
    led.attempt = want
    led.reactions.append(time.monotonic() - t0)


def test_soak(kube, ns, operator):
    rng = random.Random(SEED)
    jobs = {f"soak{i}": Ledger(f"soak{i}", rng.choice([2, 3, 4])) for i in range(JOBS)}
    for led in jobs.values():
        kube.create_job(ns, job_manifest(led.name, workers=led.workers,
                                         failurePolicy={"restartPolicy": "OnFailure", "backoffLimit": 1000,
                                                        "backoffSeconds": 0}))
    for led in jobs.values():
        kube.wait_phase(ns, led.name, "Running", 120)
    violations: list[str] = []
    moved_on: dict[str, float] = {}
    kinds = {"fail": 0, "delete": 0, "evict": 0, "down+delete": 0, "down+fail": 0, "operator-kill": 0}
    for _ in range(FAULTS):
        led = jobs[rng.choice(sorted(jobs))]
        victim = rng.choice(sorted(p.metadata.name for p in live(kube, ns, led.name)
                                   if int(p.metadata.labels["trainyard.dev/attempt"]) == led.attempt))
        kind = rng.choice(["fail", "fail", "delete", "evict", "down+delete", "down+fail", "operator-kill"])
        kinds[kind] += 1
        if kind == "operator-kill":  # a crash with no fault at all: nothing may be counted
            operator.kill()
            operator.start()
            check_invariants(kube, ns, jobs, moved_on, violations)
            continue
        down = kind.startswith("down+")
        if down:
            operator.kill()
        if kind.endswith("fail"):
            kube.finish_pod(ns, victim, rng.choice([1, 137, 143]), reason=rng.choice(["Error", "OOMKilled"]))
            led.restarts += 1
        elif kind.endswith("delete"):
            kube.core.delete_namespaced_pod(victim, ns, grace_period_seconds=rng.choice([0, 1]))
            led.disruptions += 1
        else:
            kube.evict(ns, victim)
            led.disruptions += 1
        if down:
            time.sleep(rng.uniform(0, 1.5))  # the chaos: the operator stays down a random while
            operator.start()
        react(kube, ns, led)
        moved_on[led.name] = time.monotonic()
        check_invariants(kube, ns, jobs, moved_on, violations)

    for led in jobs.values():  # every job ends as its policy implies
        for p in kube.running(ns, led.name, led.attempt, led.workers):
            kube.finish_pod(ns, p.metadata.name, 0)
    for led in jobs.values():
        status = kube.wait_phase(ns, led.name, "Succeeded", 90)
        got = (status["restarts"], status["disruptions"], status["attempt"])
        if got != (led.restarts, led.disruptions, led.attempt):
            violations.append(f"{led.name}: restarts/disruptions/attempt {got}, expected "
                              f"{(led.restarts, led.disruptions, led.attempt)}")
    reactions = [r for led in jobs.values() for r in led.reactions]
    print(f"soak seed {SEED}: {FAULTS} faults {kinds} over {JOBS} jobs; violations {len(violations)}; "
          f"fault -> gang Running again: median {statistics.median(reactions):.2f} s, max {max(reactions):.2f} s")
    assert violations == [], f"seed {SEED}: " + "; ".join(violations)

    for led in jobs.values():
        kube.delete_job(ns, led.name)
    wait_for(lambda: kube.core.list_namespaced_pod(ns).items == [], 90, "every pod garbage-collected (no orphans)")
    services = [s.metadata.name for s in kube.core.list_namespaced_service(ns).items]
    wait_for(lambda: [s.metadata.name for s in kube.core.list_namespaced_service(ns).items] == [], 60,
             f"every Service garbage-collected (left: {services})")
