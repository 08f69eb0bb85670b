"""The operator on a real control plane: creation, status, success, suspend, deadlines, GC."""

from __future__ import annotations

import re

import pytest
import yaml
from kubernetes import client

from trainyard.api import DistributedTrainingJob
from trainyard.engine import Launch
from trainyard.kube.manifests import worker_pod

from .conftest import REPO
from .helpers import env_of, job_manifest, wait_for


def bind_volume(kube, ns: str, claim: str) -> str:
    """A PersistentVolume pre-bound to the claim: kwok has no provisioner, the real PV controller binds it."""
    name = f"pv-{ns}-{claim}"[:63]
    kube.core.create_persistent_volume(client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteMany"], storage_class_name="",
            host_path=client.V1HostPathVolumeSource(path=f"/tmp/{name}"),
            claim_ref=client.V1ObjectReference(namespace=ns, name=claim),
            persistent_volume_reclaim_policy="Delete")))
    return name


def test_kubectl_apply_example_creates_exact_children(kube, ns, installed, operator):
    example = REPO / "examples" / "digits-ddp.yaml"
    pv = bind_volume(kube, ns, "digits-ddp-checkpoints")
    try:
        installed.kubectl_run("apply", "-n", ns, "-f", str(example))
        status = kube.wait_phase(ns, "digits-ddp", "Running", timeout=60)
        job_obj = kube.job(ns, "digits-ddp")
        job = DistributedTrainingJob.from_dict(job_obj)
        uid = job_obj["metadata"]["uid"]

        pods = kube.pods(ns, "digits-ddp")
        assert [p.metadata.name for p in pods] == [f"digits-ddp-0-{i}" for i in range(4)]
        for i, pod in enumerate(pods):
            expected = worker_pod(job, Launch(f"digits-ddp-0-{i}", i, 0, 0))
            assert env_of(pod) == {e["name"]: e.get("value") for e in expected["spec"]["containers"][0]["env"]}
            assert pod.metadata.labels == expected["metadata"]["labels"]
            assert (pod.spec.hostname, pod.spec.subdomain, pod.spec.restart_policy) == (f"digits-ddp-0-{i}",
                                                                                        "digits-ddp", "Never")
            [owner] = pod.metadata.owner_references
            assert (owner.kind, owner.name, owner.uid, owner.controller) == ("DistributedTrainingJob", "digits-ddp",
                                                                             uid, True)
        env0 = env_of(pods[0])
        assert env0["PET_RDZV_ENDPOINT"] == f"digits-ddp-0-0.digits-ddp.{ns}.svc.cluster.local.:29400"
        assert env0["PET_RDZV_ID"] == f"{uid}-0"
        assert env0["PET_NNODES"] == "4:4"

        services = kube.core.list_namespaced_service(ns).items
        assert [s.metadata.name for s in services] == ["digits-ddp"]
        svc = services[0]
        assert (svc.spec.cluster_ip, svc.spec.publish_not_ready_addresses) == ("None", True)
        assert svc.metadata.owner_references[0].uid == uid
        # Worker 0 alone is published (the rendezvous name): the endpoints controllers do not rewrite
        # an N-address object on every pod change of the gang.
        discovery = client.DiscoveryV1Api(kube.api_client)

        def published():
            slices = discovery.list_namespaced_endpoint_slice(
                ns, label_selector="kubernetes.io/service-name=digits-ddp").items
            return [(e.target_ref.name, e.hostname) for s in slices for e in (s.endpoints or [])]
        assert wait_for(published, 30, "worker 0's endpoint") == [("digits-ddp-0-0", "digits-ddp-0-0")]

        claim = kube.core.read_namespaced_persistent_volume_claim("digits-ddp-checkpoints", ns)
        assert claim.metadata.owner_references[0].uid == uid
        assert claim.status.phase == "Bound"
        # (the ServiceAccount admission plugin appends its token volume after ours)
        volume = next(v for v in pods[0].spec.volumes if v.name == "trainyard-checkpoints")
        assert volume.persistent_volume_claim.claim_name == "digits-ddp-checkpoints"

        assert status["workers"] == {"desired": 4, "active": 4, "ready": 4, "succeeded": 0, "failed": 0}
        assert (status["attempt"], status["restarts"], status["disruptions"]) == (0, 0, 0)
        assert status["observedGeneration"] == 1
        conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert conds == {"Created": ("True", "WorkersCreated"), "Running": ("True", "AllWorkersRunning")}
        reasons = [r for r, _ in kube.events(ns, "digits-ddp")]
        assert reasons == ["AllWorkersRunning"]  # Created is the condition's, not an event (engine.writes)

        out = installed.kubectl_run("get", "dtj", "-n", ns).stdout.splitlines()
        assert re.split(r"\s{2,}", out[0].strip()) == ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%",
                                                       "ETA", "AGE"]
        assert re.split(r"\s{2,}", out[1].strip())[:5] == ["digits-ddp", "Running", "4", "4", "0"]
    finally:
        installed.kubectl_run("delete", "-n", ns, "-f", str(example), "--wait=true", check=False)
        kube.delete_volume(pv)


def test_success_needs_every_worker(kube, ns, operator):
    kube.create_job(ns, job_manifest("ok", workers=3))
    kube.wait_phase(ns, "ok", "Running")
    kube.finish_pod(ns, "ok-0-0", 0)
    kube.finish_pod(ns, "ok-0-1", 0)
    wait_for(lambda: kube.status(ns, "ok")["workers"]["succeeded"] == 2, 30, "2 succeeded")
    assert kube.status(ns, "ok")["phase"] == "Running"
    kube.finish_pod(ns, "ok-0-2", 0)
    status = kube.wait_phase(ns, "ok", "Succeeded")
    assert status["completionTime"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
    out = installed_get(kube, ns, "ok")
    assert out == ("Succeeded", 0)


def installed_get(kube, ns, name):
    s = kube.status(ns, name)
    return s["phase"], s["restarts"]


def test_suspend_and_resume(kube, ns, operator):
    kube.create_job(ns, job_manifest("sus", workers=2))
    kube.wait_phase(ns, "sus", "Running")
    kube.patch_job(ns, "sus", {"spec": {"runPolicy": {"suspend": True}}})
    status = kube.wait_phase(ns, "sus", "Suspended")
    wait_for(lambda: kube.pods(ns, "sus") == [], 30, "every pod gone")
    assert status["attempt"] == 1 and status["restarts"] == 0
    kube.patch_job(ns, "sus", {"spec": {"runPolicy": {"suspend": False}}})
    status = kube.wait_phase(ns, "sus", "Running")
    assert [p.metadata.name for p in kube.pods(ns, "sus")] == ["sus-1-0", "sus-1-1"]
    assert (status["attempt"], status["restarts"]) == (1, 0)
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds["Suspended"] == ("False", "JobResumed")


def test_created_suspended_creates_nothing(kube, ns, operator):
    kube.create_job(ns, job_manifest("queued", workers=2, runPolicy={"suspend": True}))
    kube.wait_phase(ns, "queued", "Suspended")
    assert kube.pods(ns, "queued") == []


def test_active_deadline(kube, ns, operator):
    kube.create_job(ns, job_manifest("dl", workers=2, runPolicy={"activeDeadlineSeconds": 2}))
    status = kube.wait_phase(ns, "dl", "Failed", timeout=30)
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Failed"] == "DeadlineExceeded"
    wait_for(lambda: kube.pods(ns, "dl", live_only=True) == [], 30, "running pods deleted (cleanPodPolicy Running)")


def test_ttl_after_finished_deletes_the_job_and_children(kube, ns, operator):
    kube.create_job(ns, job_manifest("ttl", workers=1, runPolicy={"ttlSecondsAfterFinished": 1}))
    kube.wait_phase(ns, "ttl", "Running")
    kube.finish_pod(ns, "ttl-0-0", 0)
    wait_for(lambda: kube.job(ns, "ttl") is None, 30, "the job deleted by its TTL")
    wait_for(lambda: kube.pods(ns, "ttl") == [], 60, "garbage collection of the pods")


@pytest.mark.parametrize(("policy", "left"), [
    ("Running", ["cp-0-1"]),
    ("All", []),
    ("None", ["cp-0-0", "cp-0-1"]),
])
def test_clean_pod_policy(kube, ns, operator, policy, left):
    kube.create_job(ns, job_manifest("cp", workers=2, runPolicy={"cleanPodPolicy": policy},
                                     failurePolicy={"restartPolicy": "Never"}))
    kube.wait_phase(ns, "cp", "Running")
    kube.finish_pod(ns, "cp-0-1", 1)
    kube.wait_phase(ns, "cp", "Failed")
    wait_for(lambda: [p.metadata.name for p in kube.pods(ns, "cp") if p.metadata.deletion_timestamp is None] == left,
             30, f"pods left by cleanPodPolicy {policy}: {left}")


def test_deleting_the_job_garbage_collects_every_child(kube, ns, operator):
    body = job_manifest("gc", workers=2, checkpoint={"size": "1Gi"})
    kube.create_job(ns, body)
    wait_for(lambda: len(kube.pods(ns, "gc")) == 2, 30, "pods")
    kube.delete_job(ns, "gc")
    wait_for(lambda: kube.pods(ns, "gc") == [], 60, "pods collected")
    wait_for(lambda: kube.core.list_namespaced_service(ns).items == [], 60, "service collected")
    wait_for(lambda: kube.core.list_namespaced_persistent_volume_claim(ns).items == [], 60, "claim collected")


def test_retained_claim_survives_the_job(kube, ns, operator):
    kube.create_job(ns, job_manifest("keep", workers=1, checkpoint={"size": "1Gi", "retain": True}))
    wait_for(lambda: len(kube.pods(ns, "keep")) == 1, 30, "pod")
    kube.delete_job(ns, "keep")
    wait_for(lambda: kube.pods(ns, "keep") == [], 60, "pods collected")
    claim = kube.core.read_namespaced_persistent_volume_claim("keep-checkpoints", ns)
    assert claim.metadata.owner_references is None


def test_example_yaml_round_trips(installed):
    docs = list(yaml.safe_load_all((REPO / "examples" / "elastic-digits.yaml").read_text()))
    out = installed.kubectl_run("apply", "--dry-run=server", "-n", "default", "-f",
                                str(REPO / "examples" / "elastic-digits.yaml"), "-o", "yaml").stdout
    assert yaml.safe_load(out)["spec"]["elastic"] == docs[0]["spec"]["elastic"]
