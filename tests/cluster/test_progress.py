"""Progress through the job's Lease on a real control plane (kwok's pods run nothing, so the test
writes the Lease as the trainer would: the trainer library's own Reporter and LeaseClient, with a
real token of the pod's ServiceAccount): the Lease, Role and RoleBinding the operator creates, exactly
what that ServiceAccount may do, status.progress and kubectl's columns, the bounded status writes,
the engine's hang detection (reason Hung) and the stale progress across the restart."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch
from trainyard_trainer.lease import LeaseClient, LeaseError
from trainyard_trainer.progress import Reporter

from trainyard import sdk
from trainyard.api import contract
from trainyard.engine.progress import PROGRESS_WRITE_SECONDS

from .helpers import job_manifest, wait_for

RBAC = "rbac.authorization.k8s.io"


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def trainer_lease(installed, tmp_path):
    """A LeaseClient as a worker pod has it: the job's Lease, a real token of the pod's ServiceAccount
    (TokenRequest), the apiserver's CA; only the address is the test cluster's, not the Service's."""
    cfg = yaml.safe_load(Path(installed.kubeconfig).read_text())
    ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
    server = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))

    def make(ns: str, job: str, account: str = "default", lease: str | None = None) -> LeaseClient:
        token = installed.kubectl_run("create", "token", account, "-n", ns, "--duration=1h").stdout.strip()
        path = tmp_path / f"token-{ns}-{account}"
        path.write_text(token)
        return LeaseClient(ns, lease or f"{job}-progress", server["server"], token_file=str(path), ca_file=str(ca))

    return make


def _maybe(read):
    """read(), or None while the object is not there (404)."""
    try:
        return read()
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def lease_of(kube, ns: str, name: str) -> dict | None:
    try:
        return kube.api_client.sanitize_for_serialization(
            client.CoordinationV1Api(kube.api_client).read_namespaced_lease(name, ns))
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def test_the_operator_makes_the_lease_and_lets_the_workers_service_account_patch_only_it(
        kube, ns, operator, installed, trainer_lease):
    kube.create_job(ns, job_manifest("lz", workers=2))
    kube.wait_phase(ns, "lz", "Running")
    uid = kube.job(ns, "lz")["metadata"]["uid"]
    lease = wait_for(lambda: lease_of(kube, ns, "lz-progress"), 30, "the Lease")
    assert [o["uid"] for o in lease["metadata"]["ownerReferences"]] == [uid]
    rbac = client.RbacAuthorizationV1Api(kube.api_client)
    role = wait_for(lambda: _maybe(lambda: rbac.read_namespaced_role("lz-progress", ns)), 30, "the Role")
    assert [(r.api_groups, r.resources, r.resource_names, r.verbs) for r in role.rules] == [
        (["coordination.k8s.io"], ["leases"], ["lz-progress"], ["get", "patch"])]
    # the binding is the second round trip (it needs its Role there): made just after the Lease
    binding = wait_for(lambda: _maybe(lambda: rbac.read_namespaced_role_binding("lz-progress", ns)), 30,
                       "the RoleBinding")
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", "default", ns)]
    # the pods' identity may get and patch that one Lease, and nothing else
    who = f"system:serviceaccount:{ns}:default"
    for verb, what, allowed in [("patch", "leases/lz-progress", "yes"), ("get", "leases/lz-progress", "yes"),
                                ("update", "leases/lz-progress", "no"), ("delete", "leases/lz-progress", "no"),
                                ("patch", "leases/other", "no"), ("create", "leases", "no"), ("list", "leases", "no"),
                                ("get", "pods", "no"), ("patch", "distributedtrainingjobs.trainyard.dev/lz", "no")]:
        out = installed.kubectl_run("auth", "can-i", verb, what, "-n", ns, "--as", who, check=False)
        assert out.stdout.strip() == allowed, (verb, what, out.stdout, out.stderr)
    # ... as the real trainer library does it, with the pod's token
    mine = trainer_lease(ns, "lz")
    mine.patch({contract.ANNOTATION_PROGRESS: json.dumps({"attempt": 0, "step": 1, "time": "2026-01-01T00:00:00Z"})},
               holder="lz-0-0", renew=True)
    assert mine.annotations()[contract.ANNOTATION_PROGRESS].startswith('{"attempt": 0')
    with pytest.raises(LeaseError, match="403") as refused:
        trainer_lease(ns, "lz", lease="kube-controller-manager").patch({"x": "y"})
    # what a launcher sees before the operator made its job's Lease and RoleBinding: "not yet"
    assert refused.value.status == 403 and refused.value.not_made_yet
    # worker 0's pod IP for this rendezvous, published by the operator (kwok gives fake pods one)
    ip = wait_for(lambda: kube.core.read_namespaced_pod("lz-0-0", ns).status.pod_ip, 30, "worker 0's pod IP")
    published = wait_for(lambda: (lease_of(kube, ns, "lz-progress")["metadata"].get("annotations") or {}).get(
        contract.ANNOTATION_RENDEZVOUS), 30, "the rendezvous address in the Lease")
    assert json.loads(published) == {"attempt": 0, "ip": ip}


def test_reports_become_status_progress_and_kubectl_columns(kube, ns, operator, installed, trainer_lease):
    kube.create_job(ns, job_manifest("pz", workers=2))
    kube.wait_phase(ns, "pz", "Running")
    wait_for(lambda: lease_of(kube, ns, "pz-progress"), 30, "the Lease")
    reporter = Reporter(trainer_lease(ns, "pz"), interval=0.2, attempt=0, worker=0, holder="pz-0-0")
    reporter.start(0, total_steps=460)
    for step in range(1, 41):
        reporter.report(step, loss=2.0 / step, samples=64)
        time.sleep(0.02)
    reporter.checkpointed(40)
    assert reporter.flush(10)
    reporter.close()
    st = wait_for(lambda: (s := kube.status(ns, "pz")).get("progress", {}).get("lastCheckpointStep") == 40 and s,
                  PROGRESS_WRITE_SECONDS + 30, "status.progress with the checkpoint")
    p = st["progress"]
    assert (p["step"], p["totalSteps"], p["percent"], p["loss"]) == (40, 460, 8.7, 0.05)
    assert p["samplesPerSecond"] > 0 and p["eta"] and "stale" not in p
    lease = lease_of(kube, ns, "pz-progress")
    assert lease["spec"]["holderIdentity"] == "pz-0-0" and lease["spec"]["renewTime"]
    out = installed.kubectl_run("get", "dtj", "pz", "-n", ns).stdout.splitlines()
    assert cells(out[0]) == ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%", "ETA", "AGE"]
    assert cells(out[1])[:8] == ["pz", "Running", "2", "2", "0", "40", "8.7", p["eta"]]
    wide = installed.kubectl_run("get", "dtj", "pz", "-n", ns, "-o", "wide").stdout.splitlines()
    header = cells(wide[0])
    row = dict(zip(header, cells(wide[1]), strict=False))
    assert (row["LOSS"], row["LAST-CKPT"]) == ("0.05", "40")
    c = sdk.TrainyardClient(installed.kubeconfig, namespace=ns)
    assert c.progress("pz").step == 40
    assert sdk.progress_line(c.get_raw("pz")).startswith("step 40/460 (8.7%), ETA ")


def test_status_writes_per_job_stay_bounded_while_the_trainer_reports_every_second(kube, ns, operator,
                                                                                      trainer_lease):
    """The added write rate, measured: rank 0 renews the Lease every second for 75 s; the job's
    status is written (a new resourceVersion of the job) at most once per PROGRESS_WRITE_SECONDS."""
    kube.create_job(ns, job_manifest("wz", workers=2))
    kube.wait_phase(ns, "wz", "Running")
    wait_for(lambda: lease_of(kube, ns, "wz-progress") and kube.status(ns, "wz").get("members"), 30, "settled")
    time.sleep(2)  # the start's own writes (phase, members, the rendezvous address) are done
    rv = kube.job(ns, "wz")["metadata"]["resourceVersion"]
    writes: list[float] = []
    stop = threading.Event()

    def watch_job() -> None:
        w = watch.Watch()
        for ev in w.stream(kube.custom.list_namespaced_custom_object, "trainyard.dev", "v1alpha1", ns,
                           "distributedtrainingjobs", field_selector="metadata.name=wz", resource_version=rv,
                           timeout_seconds=120):
            if ev["type"] == "MODIFIED":
                writes.append(time.monotonic())
            if stop.is_set():
                w.stop()

    t = threading.Thread(target=watch_job, daemon=True)
    t.start()
    reporter = Reporter(trainer_lease(ns, "wz"), interval=1.0, attempt=0, worker=0)
    reporter.start(0, total_steps=10000)
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < 75:
        step += 1
        reporter.report(step, loss=1.0, samples=32)
        time.sleep(0.05)
    assert reporter.flush(10)
    reporter.close()
    stop.set()
    time.sleep(PROGRESS_WRITE_SECONDS + 2)  # the held-back last report is written when it is due
    kube.patch_job(ns, "wz", {"metadata": {"labels": {"poke": "1"}}})  # ends the watch's wait
    t.join(30)
    renewals = reporter.sends
    window = [w for w in writes if w - t0 <= 75]
    print(f"\n[write rate] 75 s: {renewals} Lease renewals by rank 0, {len(window)} job status writes "
          f"({len(window) * 60 / 75:.1f}/min)")
    assert renewals >= 60
    assert 2 <= len(window) <= 75 // PROGRESS_WRITE_SECONDS + 1
    gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
    assert all(g >= PROGRESS_WRITE_SECONDS - 2 for g in gaps), gaps


def test_a_gang_that_stops_reporting_is_restarted_hung_and_resumes_with_the_restart_visible(
        kube, ns, operator, installed, trainer_lease):
    kube.create_job(ns, job_manifest("hz", workers=2, runPolicy={"progressDeadlineSeconds": 10,
                                                               "firstProgressDeadlineSeconds": 120}))
    kube.wait_phase(ns, "hz", "Running")
    wait_for(lambda: lease_of(kube, ns, "hz-progress"), 30, "the Lease")
    lease = trainer_lease(ns, "hz")
    reporter = Reporter(lease, interval=0.5, attempt=0, worker=0)
    reporter.start(0, total_steps=460)
    for step in range(1, 301):
        reporter.report(step, loss=1.0 / step, samples=64)
    reporter.checkpointed(300)
    for step in range(301, 341):
        reporter.report(step, loss=1.0 / step, samples=64)
        time.sleep(0.05)
    assert reporter.flush(10)
    reporter.close()
    stopped = time.monotonic()
    # no step for 10 s: the engine restarts the gang, reason Hung (counted), with a new rendezvous
    hung = wait_for(lambda: [m for r, m in kube.events(ns, "hz") if r == "Hung"], 60, "the Hung restart")
    hung_after = time.monotonic() - stopped
    st = kube.status(ns, "hz")
    assert (st["attempt"], st["restarts"], st["rendezvousAttempt"]) == (1, 1, 1)
    assert len(hung) == 1 and "no training step reported for 1" in hung[0] and "since step 340" in hung[0], hung
    assert hung_after >= 9, hung_after  # never before the deadline (1 s: the clocks' and the report's slack)
    # the last known step stays, stale, until the new gang reports
    assert (st["progress"]["step"], st["progress"]["stale"]) == (340, True) and "eta" not in st["progress"]
    wait_for(lambda: kube.running(ns, "hz", 1, 2), 30, "the new gang")
    kube.wait_phase(ns, "hz", "Running")
    # the new gang resumes from the checkpoint of step 300 and reports
    resumed = Reporter(lease, interval=0.5, attempt=1, worker=0)
    resumed.start(300, total_steps=460)
    for step in range(301, 311):
        resumed.report(step, loss=0.01, samples=64)
    assert resumed.flush(10)
    resumed.close()
    st = wait_for(lambda: (s := kube.status(ns, "hz")).get("progress", {}).get("attempt") == 1 and s,
                  PROGRESS_WRITE_SECONDS + 30, "the new gang's progress")
    assert st["progress"]["resumedFromStep"] == 300 and "stale" not in st["progress"]
    assert "resumed at step 300 after restart 1" in sdk.progress_line(kube.job(ns, "hz"))
    c = sdk.TrainyardClient(installed.kubeconfig, namespace=ns)
    from trainyard.cli.output import describe_text

    text = describe_text(c.get_raw("hz"), [], [])
    assert "resumed at step 300 after restart 1" in text and "Restarts:           1 of backoffLimit 3" in text
