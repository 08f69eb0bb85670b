"""Warm in-place vs cold pod restarts on the real kubelet node (e2e/node): kill -> first step.

    python -m bench.node_warm KUBECONFIG IMAGE [--warm-kills 10] [--cold-kills 3] [--out FILE]

Needs the node up (e2e/node/up.sh, under flock /tmp/trainyard-realnode.lock) and IMAGE in its
containerd. The operator is this checkout's, run on the host against the node's control plane
(`trainyard operator --namespace NS`), exactly as in its pod but without an image rebuild.

Job: train_digits, 2 workers (pods), gloo/CPU, `--epochs 400 --log-every 1 --checkpoint-every 50
--step-delay 0.02`, a 1Gi ReadWriteOnce checkpoint claim (a local PV of the node).
- warm: `failurePolicy {restartMode: Warm, inPlaceRestarts: K+2}`: trainyard-launch runs each rank in a
  warm spare and restarts both pods' ranks in place (trainyard_trainer.inplace); the pods stay.
- cold: `failurePolicy {restartMode: Cold}` (the default), inPlaceRestarts 0: the launcher exits with
  the rank's code, the pod fails, the operator restarts the gang as new pods.
In both, the victim is rank 1's own training process inside its container (`kubectl exec ... python`:
from PID 1 the oldest child at every level down to a leaf, SIGKILL), the moment of the kill is that
process's time.time(), and the recovery is the first step line after a "resumed from" line in worker
0's log, timed by the container runtime's own log timestamps (`kubectl logs --timestamps`): one clock.
A warm kill waits until both launchers said their next spare is warm. No resumed step within 300 s
of the kill is a hang. The warm job runs its kills first, then the cold job, in one session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUBECTL = str(Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard")) / "bin" / "current" / "kubectl")
ARGS = ["--epochs", "400", "--log-every", "1", "--checkpoint-every", "50", "--step-delay", "0.02"]
KILL = r"""
import os, signal, time
def kids(p):
    out = []
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                f = open(f'/proc/{d}/stat').read(); rest = f[f.rfind(')') + 2:].split()
                if int(rest[1]) == p: out.append((int(rest[19]), int(d)))
            except OSError: pass
    return sorted(out)
p = 1
while (k := kids(p)): p = k[0][1]
os.kill(p, signal.SIGKILL); print(p, repr(time.time()), flush=True)
"""
TS = re.compile(r"^(\S+) (.*)$")


def kubectl(kc: str, *args: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    r = subprocess.run([KUBECTL, "--kubeconfig", kc, *args], text=True, capture_output=True, input=input,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr}")
    return r.stdout


def ts(s: str) -> float:
    s = s.rstrip("Z")
    base, _, frac = s.partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))


class Follower:
    """`kubectl logs -f --timestamps` of one pod: (log time, line) as they come."""

    def __init__(self, kc: str, ns: str, pod: str):
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([KUBECTL, "--kubeconfig", kc, "-n", ns, "logs", "-f", "--timestamps", pod],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            m = TS.match(raw.rstrip("\n"))
            if m:
                self.lines.append((ts(m.group(1)), m.group(2)))

    def stop(self) -> None:
        self.proc.kill()


def job(name: str, ns: str, image: str, mode: str, in_place: int) -> dict:
    return {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "workers": 2,
            "rendezvous": {"joinTimeoutSeconds": 300},
            "checkpoint": {"size": "1Gi", "accessModes": ["ReadWriteOnce"]},
            "failurePolicy": {"restartPolicy": "OnFailure", "backoffLimit": 20, "backoffSeconds": 0,
                              "restartMode": mode, "inPlaceRestarts": in_place},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": image, "imagePullPolicy": "Never",
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_digits"], "args": ARGS,
                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}},
        },
    }


def pods(kc: str, ns: str, name: str) -> dict[str, dict]:
    items = json.loads(kubectl(kc, "-n", ns, "get", "pods", "-l", f"trainyard.dev/job-name={name}", "-o", "json"))["items"]
    return {p["metadata"]["name"]: p for p in items}


def claim_dir(kc: str, ns: str, name: str) -> Path | None:
    pvc = json.loads(kubectl(kc, "-n", ns, "get", "pvc", f"{name}-checkpoints", "-o", "json"))
    pv = pvc.get("spec", {}).get("volumeName")
    if not pv:
        return None
    spec = json.loads(kubectl(kc, "get", "pv", pv, "-o", "json"))["spec"]
    path = (spec.get("local") or spec.get("hostPath") or {}).get("path")
    return Path(path) if path else None


def last_ckpt(d: Path | None) -> int:
    if d is None:
        return -1
    steps = [int(m.group(1)) for p in d.glob("step-*.pt.json") if (m := re.match(r"step-(\d+)\.pt\.json$", p.name))
             and p.with_suffix("").exists()]
    return max(steps, default=-1)


def run_job(kc: str, ns: str, image: str, mode: str, kills: int, log) -> list[dict]:
    name = f"{mode.lower()}-{uuid.uuid4().hex[:4]}"
    body = job(name, ns, image, mode, kills + 2 if mode == "Warm" else 0)
    kubectl(kc, "apply", "-f", "-", input=json.dumps(body))
    followers: dict[str, Follower] = {}
    out: list[dict] = []
    t_start = time.time()
    try:
        kill_at, seen_warm_since = 300, 0.0
        while len(out) < kills:
            if time.time() - t_start > 3600:
                raise TimeoutError(f"{name}: not done in an hour")
            ps = pods(kc, ns, name)
            for pn, p in ps.items():
                if pn not in followers and p["status"].get("phase") == "Running":
                    followers[pn] = Follower(kc, ns, pn)
            attempt = max((int(p["metadata"]["labels"]["trainyard.dev/attempt"]) for p in ps.values()), default=0)
            cur = {int(p["metadata"]["labels"]["trainyard.dev/worker-index"]): pn for pn, p in ps.items()
                   if int(p["metadata"]["labels"]["trainyard.dev/attempt"]) == attempt}
            if 0 not in cur or 1 not in cur or cur[0] not in followers or cur[1] not in followers:
                time.sleep(0.5)
                continue
            f0, f1 = followers[cur[0]], followers[cur[1]]
            steps = [int(m.group(1)) for _, line in f0.lines if (m := re.search(r"\[trainyard\] step=(\d+)", line))]
            warm_ok = mode != "Warm" or sum(1 for f in (f0, f1) for t, line in f.lines
                                            if t > seen_warm_since and "in-place restart" in line and "is warm" in line) >= 2
            if not steps or steps[-1] < kill_at or not warm_ok:
                time.sleep(0.5)
                continue
            ckdir = claim_dir(kc, ns, name)
            last = last_ckpt(ckdir)
            said = kubectl(kc, "-n", ns, "exec", cur[1], "-c", "trainer", "--", "python", "-c", KILL).split()
            kill_t = float(said[1])
            rec: dict = {"mode": mode, "killed_at_step": steps[-1], "last_checkpoint": last, "victim_pid": int(said[0])}
            log(f"  {name}: killed rank 1 (pid {said[0]} in {cur[1]}) at step {steps[-1]}")
            deadline = time.time() + 300
            done = False
            while time.time() < deadline and not done:
                ps = pods(kc, ns, name)
                for pn, p in ps.items():
                    if pn not in followers and p["status"].get("phase") == "Running":
                        followers[pn] = Follower(kc, ns, pn)
                    if pn not in cur.values() and "new_pods_seen_s" not in rec:
                        rec["new_pods_seen_s"] = time.time() - kill_t
                w0 = [pn for pn, p in ps.items() if p["metadata"]["labels"]["trainyard.dev/worker-index"] == "0"]
                for pn in sorted(w0, key=lambda n: int(ps[n]["metadata"]["labels"]["trainyard.dev/attempt"])):
                    f = followers.get(pn)
                    if f is None:
                        continue
                    resumed = None
                    for t, line in list(f.lines):
                        if t <= kill_t:
                            continue
                        if "detected_s" not in rec and "] in-place restart " in line and "is warm" not in line:
                            rec["detected_s"] = t - kill_t
                        if resumed is None and (m := re.search(r"resumed from step=(\d+)", line)):
                            resumed = int(m.group(1))
                            rec["resumed_from"] = resumed
                            rec["resumed_line_s"] = t - kill_t
                        elif resumed is not None and re.search(r"\[trainyard\] step=\d+", line):
                            rec["first_step_s"] = t - kill_t
                            done = True
                            break
                    if done:
                        break
                time.sleep(0.3)
            # The step the gang had reached when rank 1 died: worker 0's last step line logged before
            # the kill (the runtime's timestamps). steps[-1] above was read before the checkpoint
            # listing and the exec, during which training went on (398 read, 400 checkpointed, killed).
            rec["killed_at_step"] = max([int(m.group(1)) for t, line in list(f0.lines)
                                         if t <= kill_t and (m := re.search(r"\[trainyard\] step=(\d+)", line))],
                                        default=rec["killed_at_step"])
            rec["hung"] = not done
            rec["lost_checkpoint"] = bool(done and rec.get("resumed_from", -1) < last)
            log(f"  {name}: {rec}")
            out.append(rec)
            seen_warm_since = kill_t
            if rec["hung"]:
                break
            kill_at = rec["resumed_from"] + 60
        status = json.loads(kubectl(kc, "-n", ns, "get", "dtj", name, "-o", "json")).get("status", {})
        out.append({"status": {k: status.get(k) for k in ("phase", "restarts", "attempt", "message")}})
    finally:
        for f in followers.values():
            f.stop()
        kubectl(kc, "-n", ns, "delete", "dtj", name, "--wait=false", check=False)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kubeconfig")
    p.add_argument("image")
    p.add_argument("--warm-kills", type=int, default=10)
    p.add_argument("--cold-kills", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "node_warm.json"))
    a = p.parse_args()

    def log(msg: str) -> None:
        print(f"[node-warm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    kc = a.kubeconfig
    ns = f"warm-{uuid.uuid4().hex[:6]}"
    kubectl(kc, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl(kc, "create", "namespace", ns)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer-image")])}
    oplog = open(Path("/tmp") / f"node-warm-operator-{ns}.log", "w")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "trainyard.cli", "operator", "--kubeconfig", kc, "--namespace", ns,
                           "--metrics-port", "0"], env=env, stdout=oplog,
                          stderr=subprocess.STDOUT)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        results = {"warm": run_job(kc, ns, a.image, "Warm", a.warm_kills, log) if a.warm_kills else [],
                   "cold": run_job(kc, ns, a.image, "Cold", a.cold_kills, log) if a.cold_kills else []}
    finally:
        op.terminate()
        op.wait(30)
        kubectl(kc, "delete", "namespace", ns, "--wait=false", check=False)

    def fs(rows: list[dict]) -> list[float]:
        return [r["first_step_s"] for r in rows if "first_step_s" in r]

    w, c = fs(results["warm"]), fs(results["cold"])
    summary = {
        "warm_first_step_s": {"n": len(w), "median": statistics.median(w) if w else None, "min": min(w, default=None),
                              "max": max(w, default=None)},
        "cold_first_step_s": {"n": len(c), "median": statistics.median(c) if c else None, "min": min(c, default=None),
                              "max": max(c, default=None)},
        "ratio_of_medians_warm_over_cold": (statistics.median(w) / statistics.median(c)) if w and c else None,
        "hangs": {k: sum(1 for r in v if r.get("hung")) for k, v in results.items()},
        "lost_checkpoints": {k: sum(1 for r in v if r.get("lost_checkpoint")) for k, v in results.items()},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"benchmark": "node_warm", "started": started, "method": __doc__,
                                       "args": ARGS, "summary": summary, "results": results}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
