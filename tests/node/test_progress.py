"""Progress and hang detection on the real node (issue 14): the operator in its pod, the digits
example in the trainer image, rank 0 reporting through the job's Lease with the pod's own token.

- `kubectl get dtj` shows a live STEP, % and ETA while the digits example trains;
- a trainer stopped with SIGSTOP, and a frozen collective (one rank waits for a message that never
  comes, the other in the next all_reduce): each a Hung gang restart by the engine (its message, not
  the launcher's exit 86) and a resume from the checkpoint, then Succeeded;
- a healthy slow job (a first step later than the progress deadline, 3 s steps under a 20 s
  deadline) runs to the end with no restart;
- gang start with and without worker 0's IP from the Lease (issue 12's DNS finding), measured.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import yaml

from ..support import ALL_REDUCE
from .conftest import OPERATOR_NS, REPO, Node, operator_pod, wait_for

EXAMPLE = REPO / "examples" / "digits-ddp.yaml"


def digits(name: str, ns: str, args: list[str], run_policy: dict | None = None, **template_spec) -> dict:
    """examples/digits-ddp.yaml as the node runs it (e2e/kind/digits-ddp: 2 workers, ReadWriteOnce), with
    smaller requests: a gang being replaced and its successor fit on the node's 2 CPUs together."""
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"] = {"name": name, "namespace": ns}
    spec = job["spec"]
    spec["workers"] = 2
    spec["checkpoint"]["accessModes"] = ["ReadWriteOnce"]
    spec["runPolicy"].update(run_policy or {})
    trainer = spec["template"]["spec"]["containers"][0]
    trainer["args"] = args
    trainer["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
    spec["template"]["spec"].update(template_spec)
    return job


def status(node: Node, ns: str, name: str) -> dict:
    return (node.get("dtj", name, ns) or {}).get("status") or {}


def events(node: Node, ns: str, name: str) -> list[tuple[str, str]]:
    out = node.kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json",
                       check=False).stdout
    items = json.loads(out)["items"] if out else []
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["reason"], e["message"]) for e in items]


def failure(node: Node, ns: str, name: str, what: str) -> str:
    st = status(node, ns, name)
    op = node.logs(OPERATOR_NS, operator_pod(node)["metadata"]["name"])[-4000:]
    return f"{what}: {json.dumps(st)[-3000:]}\n{events(node, ns, name)}\n{node.diagnostics(ns)}\n--- operator\n{op}"


def until(node: Node, ns: str, name: str, fn, timeout: float, what: str):
    def check():
        st = status(node, ns, name)
        if st.get("phase") == "Failed":
            raise AssertionError(failure(node, ns, name, f"the job failed while waiting for {what}"))
        return fn(st)
    try:
        return wait_for(check, timeout, what, interval=1.0)
    except AssertionError as e:
        if "the job failed" in str(e):
            raise
        raise AssertionError(failure(node, ns, name, str(e))) from None


def stop_training(node: Node, ns: str, pod: str, sig: str = "SIGSTOP") -> str:
    """Sends `sig` to the pod's training process (not torchrun's agent, not the launcher)."""
    script = textwrap.dedent(f"""
        import os, signal
        hit = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                argv = open(f"/proc/{{p}}/cmdline", "rb").read().split(b"\\0")
            except OSError:
                continue
            cmd = b" ".join(argv)
            if b"train_digits" in cmd and b"torch.distributed.run" not in cmd and b"trainyard-launch" not in cmd \\
                    and b"trainyard_trainer.launch" not in cmd:
                os.kill(int(p), signal.{sig})
                hit.append(p)
        print("signalled", ",".join(hit))
    """)
    out = node.kubectl("-n", ns, "exec", pod, "-c", "trainer", "--", "python", "-c", script).stdout
    assert re.search(r"signalled \d+", out), out
    return out


def columns_of(head: str, row: str) -> dict[str, str]:
    """One row of kubectl's table by the header's column offsets: an empty cell (kubectl prints
    nothing for an empty string) leaves the cells after it in place."""
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    ends = [*starts[1:], None]
    return {head[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


class Columns:
    """`kubectl get dtj NAME` every 2 s in a thread: the rows it printed while the job ran."""

    def __init__(self, node: Node, ns: str, name: str):
        self.rows: list[dict[str, str]] = []
        self.wide: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(node, ns, name), daemon=True)
        self._t.start()

    def _run(self, node: Node, ns: str, name: str) -> None:
        while not self._stop.is_set():
            for wide, into in ((False, self.rows), (True, self.wide)):
                out = node.kubectl("-n", ns, "get", "dtj", name, *(["-o", "wide"] if wide else []), check=False)
                lines = out.stdout.splitlines()
                if out.returncode == 0 and len(lines) == 2:
                    into.append(columns_of(*lines))
            self._stop.wait(2)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(30)


def test_digits_shows_live_step_and_eta_and_a_stopped_trainer_is_a_hung_restart_and_resume(chart: Node, ns: str):
    name = "dz"
    job = digits(name, ns, ["--epochs", "20", "--checkpoint-every", "50", "--step-delay", "0.2"],
                 {"progressDeadlineSeconds": 30, "firstProgressDeadlineSeconds": 400})
    chart.apply(job)
    columns = Columns(chart, ns, name)
    try:  # status.progress changes at most every 30 s: two changes take the run to about step 250
        until(chart, ns, name, lambda st: (st.get("progress") or {}).get("lastCheckpointStep", 0) >= 250 and st,
              900, "a checkpoint at step 250 or later")
        live = [r for r in columns.rows if r.get("PHASE") == "Running" and r.get("STEP", "<none>") != "<none>"]
        wide = [r for r in columns.wide if r.get("LOSS", "<none>") != "<none>"]
    finally:
        columns.stop()
    print("\n[kubectl get dtj while training]\n" + "\n".join(
        "   ".join(f"{k}={v}" for k, v in r.items()) for r in live[:3] + live[-2:]))
    assert len({r["STEP"] for r in live}) >= 2, columns.rows  # live: the step moved between two looks
    with_eta = [r for r in live if r["ETA"] not in ("", "<none>")]
    assert with_eta and all(0 < float(r["%"]) < 100 for r in with_eta), live  # an ETA once a rate is known
    assert wide and wide[-1]["LAST-CKPT"] not in ("", "<none>"), columns.wide
    before = status(chart, ns, name)
    at = before["progress"]["step"]
    stop_training(chart, ns, f"{name}-0-1")
    stopped = time.monotonic()
    hung = until(chart, ns, name, lambda st: [m for r, m in events(chart, ns, name) if r == "Hung"], 180,
                 "the Hung restart")
    print(f"[SIGSTOP] at step {at}: Hung after {time.monotonic() - stopped:.0f} s: {hung[0]}")
    assert len(hung) == 1 and "no training step reported for" in hung[0], hung  # the engine's, not exit 86
    st = until(chart, ns, name, lambda st: (p := st.get("progress") or {}).get("attempt") == 1
               and p.get("resumedFromStep") and st, 900, "the new gang's resume")
    ckpt = before["progress"]["lastCheckpointStep"]
    assert st["progress"]["resumedFromStep"] >= ckpt and st["restarts"] == 1
    st = until(chart, ns, name, lambda st: st.get("phase") == "Succeeded" and st, 900, "Succeeded")
    p = st["progress"]
    assert (p["step"], p["percent"], st["restarts"], st["attempt"]) == (p["totalSteps"], 100.0, 1, 1), st
    text = chart.kubectl("-n", ns, "get", "dtj", name, "-o", "yaml").stdout
    print(f"[resume] resumed at step {p['resumedFromStep']} after restart 1; final step {p['step']}")
    assert "exit code 86" not in text


FREEZE = textwrap.dedent("""
    # train_digits with a frozen collective at FREEZE_AT_STEP in attempt 0: the last rank waits for a
    # message rank 0 never sends; rank 0 goes on into the next step's all_reduce, which waits for the
    # last rank forever. Every process is alive, none makes progress.
    import os, sys
    import torch
    import torch.distributed as dist
    from trainyard_trainer import progress as P
    from trainyard_trainer.examples import train_digits

    AT = int(os.environ["FREEZE_AT_STEP"])
    step_of = P.Progress.step

    def step(self, step, *args, **kw):
        step_of(self, step, *args, **kw)
        if step == AT and os.environ.get("TRAINYARD_ATTEMPT") == "0" and dist.get_rank() == dist.get_world_size() - 1:
            print(f"[trainyard-test] rank {dist.get_rank()} freezes at step {step}", flush=True)
            dist.recv(torch.zeros(1), src=0)  # never sent

    P.Progress.step = step
    sys.exit(train_digits.main())
""")


def test_a_frozen_collective_is_a_hung_restart_and_the_job_resumes(chart: Node, ns: str):
    name = "fz"
    chart.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "freeze", "namespace": ns},
                 "data": {"freeze_digits.py": FREEZE}})
    job = digits(name, ns, ["--epochs", "12", "--checkpoint-every", "50", "--step-delay", "0.05"],
                 {"progressDeadlineSeconds": 30, "firstProgressDeadlineSeconds": 400},
                 volumes=[{"name": "test", "configMap": {"name": "freeze"}}])
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    trainer["command"] = ["trainyard-launch", "/opt/test/freeze_digits.py"]
    trainer["env"] = [*trainer.get("env", []), {"name": "FREEZE_AT_STEP", "value": "120"}]
    trainer["volumeMounts"] = [{"name": "test", "mountPath": "/opt/test"}]
    chart.apply(job)
    hung = until(chart, ns, name, lambda st: [m for r, m in events(chart, ns, name) if r == "Hung"], 1200,
                 "the Hung restart")
    print(f"[frozen collective] {hung[0]}")
    assert len(hung) == 1 and "no training step reported for" in hung[0] and "since step 1" in hung[0], hung
    st = until(chart, ns, name, lambda st: st.get("phase") == "Succeeded" and st, 900, "Succeeded")
    p = st["progress"]
    assert (st["restarts"], p["attempt"], p["step"]) == (1, 1, p["totalSteps"]), st
    assert p["resumedFromStep"] >= 100  # the checkpoint before the freeze, not step 0
    frozen = chart.logs(ns, f"{name}-0-1") + chart.logs(ns, f"{name}-0-0")
    assert "freezes at step 120" in frozen or not frozen  # the failed gang's pods may be gone already


def test_a_healthy_slow_job_runs_to_the_end(chart: Node, ns: str):
    """A first step 60 s after the start (more than the 20 s progress deadline: the startup budget
    covers it) and 3 s steps (under the deadline): no hang, no restart."""
    name = "sz"
    job = digits(name, ns, ["--epochs", "20", "--max-steps", "15", "--checkpoint-every", "5", "--step-delay", "3",
                            "--first-step-delay", "60"],
                 {"progressDeadlineSeconds": 20, "firstProgressDeadlineSeconds": 400})
    chart.apply(job)
    t0 = time.monotonic()
    st = until(chart, ns, name, lambda st: st.get("phase") == "Succeeded" and st, 1200, "Succeeded")
    print(f"[slow job] Succeeded after {time.monotonic() - t0:.0f} s, restarts {st['restarts']}")
    assert (st["restarts"], st["attempt"], st["progress"]["step"]) == (0, 0, 15), st
    assert [r for r, _ in events(chart, ns, name) if r == "Hung"] == []


def _gang_start(node: Node, ns: str, name: str, **template_spec) -> dict:
    job = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"workers": 2, "rendezvous": {"joinTimeoutSeconds": 300},
                 "template": {"spec": {**template_spec, "containers": [{
                     "name": "trainer", "image": node.trainer_image,
                     "command": ["sh", "-c", f"cat > /tmp/t.py <<'PY'\n{ALL_REDUCE}\nPY\nexec trainyard-launch /tmp/t.py"],
                     "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}}},
    }
    node.apply(job)
    until(node, ns, name, lambda st: st.get("phase") == "Succeeded" and st, 600, f"{name} to succeed")
    created = datetime.fromisoformat(node.get("dtj", name, ns)["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    out = {}
    for i in (0, 1):
        log = node.logs(ns, f"{name}-0-{i}", "--timestamps")
        done = next(line.split()[0] for line in log.splitlines() if "all_reduce=3.0" in line)
        out[f"worker {i} all_reduce after job creation (s)"] = round(
            (datetime.fromisoformat(done[:26] + "+00:00") - created).total_seconds(), 1)
        m = re.search(r"rendezvous host \S+ (resolved after ([\d.]+) s|does not resolve yet after ([\d.]+) s; using "
                      r"(\S+),)", log)
        if m:
            out[f"worker {i} waited (s)"] = float(m.group(2) or m.group(3))
            out[f"worker {i} reached worker 0 by"] = "DNS" if m.group(2) else f"IP {m.group(4)}"
    return out


def test_gang_start_with_worker_0s_ip_from_the_lease(chart: Node, ns: str):
    """Issue 12's finding: the non-zero worker's first lookup of worker 0's name beats its
    EndpointSlice, and the cluster DNS caches the NXDOMAIN for ~30 s. Without a token (so without
    the Lease) the launcher waits for DNS, as before; with it, it takes worker 0's pod IP from the
    Lease once the operator published it. Measured, both ways."""
    before = _gang_start(chart, ns, f"b{uuid.uuid4().hex[:4]}", automountServiceAccountToken=False)
    after = _gang_start(chart, ns, f"a{uuid.uuid4().hex[:4]}")
    print(f"\n[gang start] DNS only (no token, no Lease): {before}\n[gang start] with the Lease: {after}")
    # No "waited" entry means the first lookup (or the Lease) answered at once: the launcher only
    # logs a wait that happened. Worker 0 hosts the store on its pod IP: it never waits for its name.
    assert "worker 0 waited (s)" not in before and "worker 0 waited (s)" not in after, (before, after)
    assert after.get("worker 1 reached worker 0 by", "DNS").startswith("IP ") or after.get("worker 1 waited (s)") \
        is None, after
    if before.get("worker 1 waited (s)", 0.0) > 5:
        assert after.get("worker 1 waited (s)", 0.0) < before["worker 1 waited (s)"], (before, after)
        assert after["worker 1 all_reduce after job creation (s)"] < before["worker 1 all_reduce after job creation (s)"], \
            (before, after)
    if os.environ.get("TRAINYARD_RECORD") == "1":  # the recorded run; `make test` leaves the tree clean
        Path(REPO / "bench" / "results").mkdir(exist_ok=True)
        (REPO / "bench" / "results" / "node_gang_start.json").write_text(
            json.dumps({"dns_only": before, "with_lease": after}, indent=2) + "\n")

