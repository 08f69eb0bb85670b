"""The floor contender, as its own process: a bare client creating pods with full concurrency.

Protocol on stdin/stdout, one line each way:
  ping                                  -> ok
  prepare NS PREFIX JOBS WORKERS [svc]  -> ok      (builds JOBS x WORKERS pod manifests; with svc
                                                    also each job's headless Service)
  go                                    -> ok SECONDS   (creates them, one thread per pod, at most
                                                         THREADS at once; SECONDS inside the process)

The manifests are exactly the pods the Trainyard operator would create for the same jobs
(`trainyard.builders.worker_pod`, env, labels, hostname and subdomain), minus the owner reference
(there is no job object to own them, and the garbage collector would delete orphans of a missing
owner). With `svc` (the contender "floor+svc") each job's headless Service (the operator's own
manifest, minus the owner) is created too, before its pods in the same burst: the least a controller
can do for pods that must resolve each other by name. The client is the official one with its
connection pool sized to the thread count.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from bench.cluster import dtj, new_client
from trainyard import api
from trainyard.engine import Launch
from trainyard.kube.manifests import headless_service, worker_pod


def manifests(ns: str, prefix: str, jobs: int, workers: int, service: bool = False) -> list[dict]:
    out = []
    for j in range(jobs):
        body = dtj(f"{prefix}-{j}" if jobs > 1 else prefix, workers)
        body["metadata"].update(namespace=ns, uid=f"floor-{prefix}-{j}")
        job = api.DistributedTrainingJob.from_dict(body)
        if service:
            svc = headless_service(job)
            svc["metadata"].pop("ownerReferences", None)
            out.append(svc)
        for i in range(workers):
            pod = worker_pod(job, Launch(f"{job.metadata.name}-0-{i}", i, 0, 0))
            pod["metadata"].pop("ownerReferences", None)
            out.append(pod)
    return out


def main() -> None:
    kubeconfig, threads = sys.argv[1], int(sys.argv[2])
    core = client.CoreV1Api(new_client(kubeconfig, pool=threads))
    pool = ThreadPoolExecutor(max_workers=threads)
    prepared: tuple[str, list[dict]] | None = None
    for line in sys.stdin:
        cmd = line.split()
        try:
            if cmd[0] == "ping":
                reply = "ok"
            elif cmd[0] == "prepare":
                ns, prefix, jobs, workers = cmd[1], cmd[2], int(cmd[3]), int(cmd[4])
                prepared = (ns, manifests(ns, prefix, jobs, workers, service="svc" in cmd[5:]))
                reply = "ok"
            elif cmd[0] == "go" and prepared is not None:
                ns, pods = prepared
                t0 = time.monotonic()
                futures = [pool.submit(core.create_namespaced_pod if p["kind"] == "Pod" else core.create_namespaced_service,
                                       ns, p) for p in pods]
                errors = [f.exception() for f in futures if f.exception() is not None]
                dt = time.monotonic() - t0
                prepared = None
                reply = f"ok {dt:.6f}" if not errors else f"error {len(errors)} failed: {errors[0]}"
            else:
                reply = f"error unknown command {line.strip()!r}"
        except Exception as e:  # report, keep serving
            reply = f"error {type(e).__name__}: {e}".replace("\n", " ")
        print(reply, flush=True)


if __name__ == "__main__":
    main()
