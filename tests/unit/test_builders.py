"""Exact manifests from the pure builders."""

from __future__ import annotations

import json
import re

import pytest

from trainyard.engine import Launch
from trainyard.kube.manifests import (
    checkpoint_claim,
    headless_service,
    progress_lease,
    progress_role,
    progress_role_binding,
    worker_pod,
)

from .conftest import UID, make_job

OWNER = {"apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "name": "demo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}

SPEC = {
    "workers": 4,
    "procsPerWorker": 2,
    "checkpoint": {"size": "5Gi", "storageClassName": "fast"},
    "failurePolicy": {"inPlaceRestarts": 2},
    "runPolicy": {"schedulerName": "volcano", "priorityClassName": "high"},
    "template": {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
        "spec": {
            "containers": [
                {"name": "trainer", "image": "img:1", "command": ["trainyard-launch", "t.py"],
                 "env": [{"name": "LR", "value": "0.1"}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "sidecar", "image": "side:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always",
        },
    },
}


TORCHRUN_ONLY = ("set by torchrun for each process it starts: procsPerWorker=2 starts that many processes in each "
                 "worker; start the script with torchrun or trainyard-launch")


def test_worker_pod_is_exact():
    job = make_job(SPEC)
    pod = worker_pod(job, Launch("demo-3-2", 2, 3, 1))
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "demo-3-2",
            "namespace": "ml",
            "labels": {"team": "ml", "trainyard.dev/job-name": "demo", "app.kubernetes.io/managed-by": "trainyard",
                       "trainyard.dev/worker-index": "2", "trainyard.dev/attempt": "3"},
            "ownerReferences": [OWNER],
            "annotations": {"note": "x"},
        },
        "spec": {
            "containers": [
                {"name": "trainer", "image": "img:1", "command": ["trainyard-launch", "t.py"],
                 "env": [
                     {"name": "PET_NNODES", "value": "4:4"},
                     {"name": "PET_NPROC_PER_NODE", "value": "2"},
                     {"name": "PET_RDZV_BACKEND", "value": "c10d"},
                     {"name": "PET_RDZV_ENDPOINT", "value": "demo-1-0.demo.ml.svc.cluster.local.:29400"},
                     {"name": "PET_RDZV_ID", "value": f"{UID}-1"},
                     {"name": "PET_RDZV_CONF", "value": "join_timeout=600,is_host=false"},
                     {"name": "PET_MAX_RESTARTS", "value": "2"},
                     {"name": "MASTER_ADDR", "value": "demo-1-0.demo.ml.svc.cluster.local."},
                     {"name": "MASTER_PORT", "value": "29400"},
                     # procsPerWorker 2: only torchrun can give a process its rank (engine/env.py)
                     {"name": "WORLD_SIZE", "value": TORCHRUN_ONLY},
                     {"name": "RANK", "value": TORCHRUN_ONLY},
                     {"name": "TRAINYARD_JOB_NAME", "value": "demo"},
                     {"name": "TRAINYARD_JOB_UID", "value": UID},
                     {"name": "TRAINYARD_WORKER_INDEX", "value": "2"},
                     {"name": "TRAINYARD_ATTEMPT", "value": "3"},
                     {"name": "TRAINYARD_CHECKPOINT_DIR", "value": "/checkpoints"},
                     {"name": "TRAINYARD_PROGRESS_LEASE", "value": "ml/demo-progress"},
                     {"name": "TRAINYARD_PROGRESS_INTERVAL_SECONDS", "value": "10"},
                     {"name": "TRAINYARD_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                     {"name": "LR", "value": "0.1"},
                 ],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                  {"name": "trainyard-checkpoints", "mountPath": "/checkpoints"}]},
                {"name": "sidecar", "image": "side:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "trainyard-checkpoints", "persistentVolumeClaim": {"claimName": "demo-checkpoints"}}],
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"},
            "hostname": "demo-3-2",
            "subdomain": "demo",
            "schedulerName": "volcano",
            "priorityClassName": "high",
        },
    }


def test_worker_0_hosts_the_rendezvous_and_elastic_passes_min_max():
    job = make_job({"workers": 3, "elastic": {"minWorkers": 2, "maxWorkers": 5},
                    "rendezvous": {"port": 1234, "joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 5}})
    env = {e["name"]: e.get("value") for e in worker_pod(job, Launch("demo-0-0", 0, 0, 0))["spec"]["containers"][0]["env"]}
    assert env["PET_NNODES"] == "2:5"
    assert env["PET_RDZV_CONF"] == "join_timeout=60,last_call_timeout=5,is_host=true"
    assert env["PET_RDZV_ENDPOINT"] == "demo-0-0.demo.ml.svc.cluster.local.:1234"
    assert "TRAINYARD_CHECKPOINT_DIR" not in env


def test_builders_do_not_mutate_the_job_template():
    job = make_job(SPEC)
    before = job.spec.template.copy()
    worker_pod(job, Launch("demo-0-0", 0, 0, 0))
    assert job.spec.template == before


def test_headless_service_is_exact():
    assert headless_service(make_job(SPEC)) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "demo", "namespace": "ml",
                     "labels": {"trainyard.dev/job-name": "demo", "app.kubernetes.io/managed-by": "trainyard"},
                     "ownerReferences": [OWNER]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"trainyard.dev/job-name": "demo", "trainyard.dev/worker-index": "0"},
                 "ports": [{"name": "rendezvous", "port": 29400, "targetPort": 29400, "protocol": "TCP"}]},
    }


def test_a_tensorflow_jobs_service_names_every_worker():
    # TF_CONFIG lists every worker by its DNS name; a torchrun gang needs worker 0's alone.
    svc = headless_service(make_job({**SPEC, "runtime": "tensorflow"}))
    assert svc["spec"]["selector"] == {"trainyard.dev/job-name": "demo"}


def test_created_claim_is_owned_unless_retained():
    claim = checkpoint_claim(make_job(SPEC))
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "demo-checkpoints", "namespace": "ml",
                     "labels": {"trainyard.dev/job-name": "demo", "app.kubernetes.io/managed-by": "trainyard"},
                     "ownerReferences": [OWNER]},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "5Gi"}},
                 "storageClassName": "fast"},
    }
    retained = checkpoint_claim(make_job({**SPEC, "checkpoint": {"size": "1Gi", "retain": True,
                                                                  "accessModes": ["ReadWriteOnce"]}}))
    assert "ownerReferences" not in retained["metadata"]
    assert retained["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}


def test_existing_claim_is_mounted_not_created():
    job = make_job({**SPEC, "checkpoint": {"claimName": "shared", "mountPath": "/ckpt"}})
    assert checkpoint_claim(job) is None
    pod = worker_pod(job, Launch("demo-0-1", 1, 0, 0))
    assert pod["spec"]["volumes"][-1] == {"name": "trainyard-checkpoints", "persistentVolumeClaim": {"claimName": "shared"}}
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["TRAINYARD_CHECKPOINT_DIR"] == "/ckpt"


@pytest.mark.parametrize(("run_policy", "interval", "launcher", "probe"), [
    # the engine judges at the deadlines; the launcher's watchdog 30 s later, the probe 60 s later;
    # the first-step budget defaults to the deadline but at least 600 s
    ({"progressDeadlineSeconds": 120}, "10", ("150", "630"), (180, 660)),
    ({"progressDeadlineSeconds": 20, "firstProgressDeadlineSeconds": 300}, "4", ("50", "330"), (80, 360)),
    ({"progressDeadlineSeconds": 900, "firstProgressDeadlineSeconds": 60}, "10", ("930", "90"), (960, 120)),
])
def test_progress_deadline_adds_heartbeat_env_volume_and_liveness_probe(run_policy, interval, launcher, probe):
    job = make_job({"workers": 1, "runPolicy": run_policy})
    pod = worker_pod(job, Launch("demo-0-0", 0, 0, 0))
    trainer = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert env["TRAINYARD_HEARTBEAT_FILE"] == "/var/run/trainyard/heartbeat"
    assert (env["TRAINYARD_PROGRESS_DEADLINE_SECONDS"], env["TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS"]) == launcher
    assert env["TRAINYARD_PROGRESS_INTERVAL_SECONDS"] == interval
    assert trainer["volumeMounts"] == [{"name": "trainyard-run", "mountPath": "/var/run/trainyard"}]
    assert pod["spec"]["volumes"] == [{"name": "trainyard-run", "emptyDir": {}}]
    steady, first = probe
    hb = "/var/run/trainyard/heartbeat"
    assert trainer["livenessProbe"] == {
        "exec": {"command": ["sh", "-c", f"a=$(( $(date +%s) - $(stat -c %Y {hb}) )) && if grep -q starting {hb}; "
                                         f"then test $a -lt {first}; else test $a -lt {steady}; fi"]},
        "initialDelaySeconds": first, "periodSeconds": 10, "failureThreshold": 1,
    }


def test_the_progress_lease_and_the_one_object_its_service_account_may_patch():
    job = make_job({"template": {"spec": {"serviceAccountName": "trainer-sa",
                                          "containers": [{"name": "trainer", "image": "img:1"}]}}})
    meta = {"name": "demo-progress", "namespace": "ml",
            "labels": {"trainyard.dev/job-name": "demo", "app.kubernetes.io/managed-by": "trainyard"},
            "ownerReferences": [OWNER]}
    assert progress_lease(job) == {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                                   "spec": {}}
    assert progress_role(job) == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["demo-progress"],
                   "verbs": ["get", "patch"]}]}
    assert progress_role_binding(job) == {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "demo-progress"},
        "subjects": [{"kind": "ServiceAccount", "name": "trainer-sa", "namespace": "ml"}]}
    assert progress_role_binding(make_job())["subjects"][0]["name"] == "default"


def _pod_security(spec_overrides: dict, **template_spec) -> dict:
    tspec = {"containers": [{"name": "trainer", "image": "img:1"}], **template_spec}
    job = make_job({"workers": 1, **spec_overrides, "template": {"spec": tspec}})
    return worker_pod(job, Launch("demo-0-0", 0, 0, 0))["spec"].get("securityContext")


CKPT = {"checkpoint": {"size": "1Gi"}}


def test_checkpoint_volume_gets_the_trainer_image_group_as_fs_group():
    """The claim's volume is root-owned 0755 when first mounted; the trainer runs as uid/gid 1000."""
    assert _pod_security(CKPT) == {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}


def test_fs_group_follows_the_trainer_run_as_group_container_first():
    assert _pod_security(CKPT, securityContext={"runAsUser": 2000, "runAsGroup": 3000}) == {
        "runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 3000, "fsGroupChangePolicy": "OnRootMismatch"}
    containers = [{"name": "sidecar", "image": "s:1", "securityContext": {"runAsGroup": 7}},
                  {"name": "trainer", "image": "img:1", "securityContext": {"runAsGroup": 4000}}]
    assert _pod_security(CKPT, containers=containers, securityContext={"runAsGroup": 3000}) == {
        "runAsGroup": 3000, "fsGroup": 4000, "fsGroupChangePolicy": "OnRootMismatch"}


def test_users_fs_group_and_change_policy_are_never_overridden():
    assert _pod_security(CKPT, securityContext={"fsGroup": 0}) == {"fsGroup": 0}
    assert _pod_security(CKPT, securityContext={"fsGroup": 5, "fsGroupChangePolicy": "Always"}) == {
        "fsGroup": 5, "fsGroupChangePolicy": "Always"}
    assert _pod_security(CKPT, securityContext={"fsGroupChangePolicy": "Always"}) == {
        "fsGroup": 1000, "fsGroupChangePolicy": "Always"}


def test_no_checkpoint_no_fs_group():
    assert _pod_security({}) is None
    assert _pod_security({}, securityContext={"runAsUser": 5}) == {"runAsUser": 5}


def test_worker_fqdn_is_absolute_in_the_given_cluster_domain():
    from trainyard.api.names import worker_fqdn
    assert worker_fqdn("demo", "ml", 2, 0) == "demo-2-0.demo.ml.svc.cluster.local."
    assert worker_fqdn("demo", "ml", 2, 1, cluster_domain="corp.example.") == "demo-2-1.demo.ml.svc.corp.example."


def test_a_tensorflow_worker_gets_tf_config_naming_every_worker_of_its_gang():
    job = make_job({"runtime": "tensorflow", "workers": 3, "rendezvous": {"port": 2222, "joinTimeoutSeconds": 120}})
    pod = worker_pod(job, Launch("demo-4-1", 1, 4, 4))
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": [f"demo-4-{i}.demo.ml.svc.cluster.local.:2222" for i in range(3)]},
        "task": {"type": "worker", "index": 1}}
    assert (env["TRAINYARD_RUNTIME"], env["TRAINYARD_JOIN_TIMEOUT_SECONDS"]) == ("tensorflow", "120")
    assert not [k for k in env if k.startswith("PET_") or k in ("MASTER_ADDR", "WORLD_SIZE", "RANK")]
    assert (env["TRAINYARD_WORKER_INDEX"], env["TRAINYARD_ATTEMPT"]) == ("1", "4")


def test_every_dns_name_in_a_pod_ends_in_the_operators_cluster_domain():
    torch_pod = worker_pod(make_job({"workers": 2}), Launch("demo-3-1", 1, 3, 3), cluster_domain="corp.example")
    env = {e["name"]: e.get("value") for e in torch_pod["spec"]["containers"][0]["env"]}
    assert env["PET_RDZV_ENDPOINT"] == "demo-3-0.demo.ml.svc.corp.example.:29400"
    assert env["MASTER_ADDR"] == "demo-3-0.demo.ml.svc.corp.example."
    tf_pod = worker_pod(make_job({"runtime": "tensorflow", "workers": 2}), Launch("demo-0-1", 1, 0, 0),
                        cluster_domain="corp.example")
    tf = json.loads({e["name"]: e.get("value") for e in tf_pod["spec"]["containers"][0]["env"]}["TF_CONFIG"])
    assert tf["cluster"]["worker"] == ["demo-0-0.demo.ml.svc.corp.example.:29400",
                                       "demo-0-1.demo.ml.svc.corp.example.:29400"]


@pytest.mark.parametrize(("given", "parsed"), [
    ("cluster.local", "cluster.local"), ("corp.example.", "corp.example"), (" Corp.Example ", "corp.example"),
    ("k8s-1.internal", "k8s-1.internal"),
])
def test_a_cluster_domain_is_read_as_the_kubelet_takes_it(given, parsed):
    from trainyard.api.names import parse_cluster_domain
    assert parse_cluster_domain(given) == parsed


@pytest.mark.parametrize(("given", "words"), [
    ("", "empty"), (".", "empty"), ("https://cluster.local", "label 'https://cluster'"), ("a..b", "label ''"),
    ("-corp.example", "label '-corp'"), ("under_score.local", "label 'under_score'"), ("a" * 64 + ".local", "1-63"),
    ("a." * 127 + "b", "longer than 253"),
])
def test_a_bad_cluster_domain_is_refused_naming_what_is_wrong(given, words):
    from trainyard.api.names import parse_cluster_domain
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_cluster_domain(given)
