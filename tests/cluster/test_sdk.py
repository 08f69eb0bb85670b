"""trainyard.sdk on a real apiserver with the real operator: submit, status, wait, suspend, errors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from trainyard import api, sdk
from trainyard.api import Phase
from trainyard.sdk import (
    ClusterUnreachable,
    CRDNotInstalled,
    InvalidSpec,
    Job,
    JobExists,
    JobNotFound,
    LogsUnavailable,
    NamespaceNotFound,
    Resource,
    TrainyardClient,
    WaitTimeout,
    parse_progress,
)

from .conftest import REPO
from .helpers import wait_for

IMAGE = "trainyard/trainer:test"


@pytest.fixture
def sdk_client(installed, ns) -> TrainyardClient:
    return TrainyardClient(installed.kubeconfig, namespace=ns)


def bogus_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "bogus-kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "u"}}],
    }))
    return path


def running(client: TrainyardClient, name: str) -> api.DistributedTrainingJobStatus:
    return wait_for(lambda: (s := client.status(name)).phase == Phase.RUNNING and s, 60, f"{name} Running")


def test_submit_status_wait_until_succeeded(kube, ns, operator, sdk_client):
    name = sdk_client.submit(Job.new("sdk-ok", IMAGE, "trainyard-launch train.py", workers=2))
    assert name == "sdk-ok"
    st = running(sdk_client, name)
    assert isinstance(st, api.DistributedTrainingJobStatus)
    assert (st.workers.desired, st.workers.ready, st.attempt) == (2, 2, 0)
    assert [j.name for j in sdk_client.list()] == ["sdk-ok"]
    assert sdk_client.get(name).spec.template["spec"]["containers"][0]["image"] == IMAGE

    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(st=sdk_client.wait(name, timeout=60, progress=False)))
    waiter.start()
    for pod in ("sdk-ok-0-0", "sdk-ok-0-1"):
        kube.finish_pod(ns, pod, 0)
    waiter.join(70)
    assert not waiter.is_alive()
    st = result["st"]
    assert st.phase == Phase.SUCCEEDED and st.workers.succeeded == 2 and st.completion_time is not None
    workers = sdk_client.workers(name)
    assert [(w.name, w.attempt, w.index, w.phase, w.exit_code, w.reason) for w in workers] == [
        ("sdk-ok-0-0", 0, 0, "Succeeded", 0, "Completed"), ("sdk-ok-0-1", 0, 1, "Succeeded", 0, "Completed")]
    assert all(w.node.startswith("kwok-node-") for w in workers)
    reasons = [e.reason for e in sdk_client.events(name)]
    assert reasons[0] == "AllWorkersRunning" and reasons[-1] == "AllWorkersSucceeded"


def test_wait_times_out_with_the_last_status(ns, operator, sdk_client):
    name = sdk_client.submit(Job.new("sdk-slow", IMAGE, ["trainyard-launch", "train.py"], workers=1))
    running(sdk_client, name)
    with pytest.raises(TimeoutError) as e:
        sdk_client.wait(name, timeout=1, progress=False, poll_interval=0.2)
    assert isinstance(e.value, WaitTimeout)
    assert e.value.status.phase == Phase.RUNNING
    assert str(e.value).startswith("job 'sdk-slow' is still Running after 1s")


def test_failed_job_is_returned_not_raised(kube, ns, operator, sdk_client):
    name = sdk_client.submit(Job.new("sdk-fail", IMAGE, ["t"], workers=1, failure_policy={"restartPolicy": "Never"}))
    running(sdk_client, name)
    kube.finish_pod(ns, "sdk-fail-0-0", 1)
    st = sdk_client.wait(name, timeout=60, progress=False)
    assert st.phase == Phase.FAILED and st.condition("Failed").status == "True"
    [w] = sdk_client.workers(name)
    assert (w.phase, w.exit_code, w.reason) == ("Failed", 1, "Error")


@pytest.mark.parametrize("kwargs, field, words", [
    ({"failure_policy": {"restartScope": "Worker", "inPlaceRestarts": 1}}, "spec.failurePolicy.restartScope",
     "spec.failurePolicy.restartScope Worker needs spec.elastic: a fixed-size torchrun group cannot take a "
     "replacement worker"),
    ({"env": {"PET_NNODES": "9"}}, "spec.template.spec.containers[0].env",
     "container 'trainer' sets env PET_NNODES: Trainyard sets PET_*"),
    ({"workers": 9, "elastic": (1, 4)}, "spec.workers",
     "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers"),
])
def test_invalid_spec_carries_the_apiservers_cel_message(ns, installed, sdk_client, kwargs, field, words):
    job = Job.new("sdk-bad", IMAGE, ["t"], **kwargs)
    with pytest.raises(InvalidSpec) as e:
        sdk_client.submit(job)
    assert words in str(e.value)
    assert str(e.value).startswith('DistributedTrainingJob.trainyard.dev "sdk-bad" is invalid: ')
    assert field in e.value.fields
    assert sdk_client.list() == []


def test_typed_errors(ns, installed, sdk_client, tmp_path):
    with pytest.raises(JobNotFound, match=f"job 'nope' not found in namespace {ns}"):
        sdk_client.status("nope")
    for call in (sdk_client.get, sdk_client.wait, sdk_client.delete, sdk_client.suspend, sdk_client.resume):
        with pytest.raises(JobNotFound):
            call("nope")
    assert sdk_client.workers("nope") == [] and sdk_client.events("nope") == []
    job = Job.new("sdk-dup", IMAGE, ["t"])
    sdk_client.submit(job)
    with pytest.raises(JobExists, match=f'"sdk-dup" already exists in namespace {ns}'):
        sdk_client.submit(job)
    with pytest.raises(NamespaceNotFound, match="namespace 'no-such-ns' not found"):
        sdk_client.submit(job, namespace="no-such-ns")
    generated = sdk_client.submit({**job.to_manifest(), "metadata": {"generateName": "gen-"}})
    assert generated.startswith("gen-") and len(generated) > 4
    with pytest.raises(sdk.InvalidInput, match="the job says namespace 'a' but"):
        sdk_client.submit(Job.new("x", IMAGE, ["t"], namespace="a"))

    # The apiserver's real 404 for a resource type it does not serve (as without the CRD).
    missing = TrainyardClient(installed.kubeconfig, namespace=ns, resource=Resource(plural="nonexistentjobs"))
    for call in (lambda: missing.status("sdk-dup"), missing.list, lambda: missing.submit(job)):
        with pytest.raises(CRDNotInstalled, match=r"does not serve nonexistentjobs.trainyard.dev/v1alpha1 "
                                                  r"\(404 on the resource type\): install the CRD"):
            call()

    nowhere = TrainyardClient(bogus_kubeconfig(tmp_path))
    with pytest.raises(ClusterUnreachable, match=r"cannot reach the Kubernetes API at https://127.0.0.1:1 "
                                                 r"\(kubeconfig .*, context nowhere\): connection refused"):
        nowhere.list()


def test_suspend_resume_delete(kube, ns, operator, sdk_client):
    name = sdk_client.submit(Job.new("sdk-sus", IMAGE, ["t"], workers=2))
    running(sdk_client, name)
    sdk_client.suspend(name)
    st = wait_for(lambda: (s := sdk_client.status(name)).phase == Phase.SUSPENDED and s, 60, "Suspended")
    assert st.restarts == 0
    wait_for(lambda: sdk_client.workers(name) == [], 30, "workers deleted")
    sdk_client.resume(name)
    st = running(sdk_client, name)
    assert (st.attempt, st.restarts) == (1, 0)
    assert [w.name for w in sdk_client.workers(name)] == ["sdk-sus-1-0", "sdk-sus-1-1"]
    sdk_client.delete(name, wait=True)
    with pytest.raises(JobNotFound):
        sdk_client.status(name)


def test_logs_on_kwok_raise_one_clear_error(ns, operator, sdk_client):
    """kwok serves the kubelet's log endpoint but has no container output: it answers 400
    'no logs found for container "trainer" in pod ...', which the SDK reports as LogsUnavailable."""
    name = sdk_client.submit(Job.new("sdk-logs", IMAGE, ["t"], workers=2))
    running(sdk_client, name)
    for follow in (False, True):
        with pytest.raises(LogsUnavailable) as e:
            list(sdk_client.logs(name, follow=follow))
        assert str(e.value) == (f"cannot read the logs of job 'sdk-logs': worker 0: no logs found for container "
                                f"\"trainer\" in pod \"{ns}/sdk-logs-0-0\" (and 1 more worker(s))")
    with pytest.raises(LogsUnavailable, match="has no pod of worker 7"):
        list(sdk_client.logs(name, worker=7))


def test_the_example_yaml_and_the_notebook_example(kube, ns, operator, installed, sdk_client, monkeypatch):
    """examples/notebook/submit_and_plot.py against the cluster: it submits examples/digits-ddp.yaml,
    waits while the test plays the kubelet, and then finds no logs (kwok) and says so."""
    import importlib.util

    from kubernetes import client as k8s

    pv = f"pv-{ns}"
    kube.core.create_persistent_volume(k8s.V1PersistentVolume(
        metadata=k8s.V1ObjectMeta(name=pv),
        spec=k8s.V1PersistentVolumeSpec(
            capacity={"storage": "1Gi"}, access_modes=["ReadWriteMany"], storage_class_name="",
            host_path=k8s.V1HostPathVolumeSource(path=f"/tmp/{pv}"),
            claim_ref=k8s.V1ObjectReference(namespace=ns, name="digits-ddp-checkpoints"),
            persistent_volume_reclaim_policy="Delete")))
    try:
        spec = importlib.util.spec_from_file_location("submit_and_plot", REPO / "examples/notebook/submit_and_plot.py")
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(out=example.submit_and_wait(
            sdk_client, workers=2, timeout=90, progress=False)))
        t.start()
        pods = wait_for(lambda: kube.running(ns, "digits-ddp", 0, 2), 60, "2 running workers")
        for p in pods:
            kube.finish_pod(ns, p.metadata.name, 0)
        t.join(100)
        name, status = result["out"]
        assert (name, status.phase) == ("digits-ddp", Phase.SUCCEEDED)
        job = sdk_client.get(name)
        assert job.spec.workers == 2 and job.metadata.labels == {}
        assert job.spec.template == Job.from_yaml(example.EXAMPLE).spec.template
        with pytest.raises(LogsUnavailable, match="no logs found"):
            example.cluster_progress(sdk_client, name)
    finally:
        sdk_client.delete("digits-ddp", wait=True)
        kube.delete_volume(pv)


# ---------------------------------------------------------------------- real log lines through kwok

KWOK_LOGS_CRD = "logs.kwok.x-k8s.io"


@pytest.fixture
def kwok_logs(kube, tmp_path):
    """Gives worker pods real container logs: kwok's `Logs` objects make its kubelet endpoint
    serve a CRI-format file, through the apiserver, as a kubelet would (follow included). Needs
    kwok-controller started with --enable-crds Logs (a cluster made by e2e/cluster/up.sh with that
    flag); other clusters skip these tests."""
    try:
        kube.ext.read_custom_resource_definition(KWOK_LOGS_CRD)
    except ApiException as e:
        if e.status != 404:
            raise
        pytest.skip("kwok's Logs CRD is not enabled in this cluster (kwokctl create cluster --enable-crds Logs): "
                    "no container logs to stream")
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def stamp(t: float | datetime) -> str:
        dt = t if isinstance(t, datetime) else base + timedelta(seconds=t)
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}000Z"

    def write(ns: str, pod: str, lines: list[tuple[float | datetime, str]], append: bool = False) -> None:
        path = tmp_path / f"{ns}-{pod}.log"
        with open(path, "a" if append else "w") as f:
            f.writelines(f"{stamp(t)} stdout F {text}\n" for t, text in lines)
        if append:
            return
        kube.custom.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", ns, "logs", {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs", "metadata": {"name": pod, "namespace": ns},
            "spec": {"logs": [{"containers": ["trainer"], "logsFile": str(path), "follow": True}]}})

        def served() -> bool:
            try:
                kube.core.read_namespaced_pod_log(pod, ns, container="trainer")
                return True
            except ApiException:
                return False

        wait_for(served, 30, f"kwok serving the log of {pod}")

    return write


STEP = "[trainyard] step={} epoch=0 loss={} samples_per_s=100.0"


def test_empty_logs_give_no_line_and_a_warning_saying_why(ns, operator, sdk_client, kwok_logs):
    name = sdk_client.submit(Job.new("sdk-quiet", IMAGE, ["t"], workers=1))
    running(sdk_client, name)
    kwok_logs(ns, "sdk-quiet-0-0", [])
    with pytest.warns(UserWarning, match=r"^no log lines yet: worker 0 is Running$"):
        assert list(sdk_client.logs(name)) == []


def test_logs_stream_real_lines_merged_and_followed(ns, operator, sdk_client, kwok_logs):
    name = sdk_client.submit(Job.new("sdk-stream", IMAGE, ["t"], workers=2))
    running(sdk_client, name)
    kwok_logs(ns, "sdk-stream-0-0", [(0, STEP.format(10, 2.0)), (2, STEP.format(20, 1.0))])
    kwok_logs(ns, "sdk-stream-0-1", [(1, "hello from w1, ünïcode")])

    assert list(sdk_client.logs(name)) == [(0, STEP.format(10, 2.0)), (1, "hello from w1, ünïcode"),
                                           (0, STEP.format(20, 1.0))]
    assert [(r["step"], r["loss"], r["worker"]) for r in parse_progress(sdk_client.logs(name))] == [
        (10, 2.0, 0), (20, 1.0, 0)]
    assert list(sdk_client.logs(name, worker=1)) == [(1, "hello from w1, ünïcode")]

    # follow: the history, then a line written afterwards; closing the iterator ends the streams
    stream = sdk_client.logs(name, follow=True)
    seen = [next(stream) for _ in range(3)]
    assert sorted(seen) == sorted([(0, STEP.format(10, 2.0)), (1, "hello from w1, ünïcode"),
                                   (0, STEP.format(20, 1.0))])
    kwok_logs(ns, "sdk-stream-0-1", [(datetime.now(UTC), "written while followed")], append=True)
    assert next(stream) == (1, "written while followed")
    stream.close()
