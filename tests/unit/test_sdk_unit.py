"""The SDK and the job commands without a cluster: parsing, log merging, error mapping, output."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from typer.testing import CliRunner

from trainyard import api, sdk
from trainyard.cli import app
from trainyard.cli import jobs as jobs_cli
from trainyard.sdk import (
    AccessDenied,
    CRDNotInstalled,
    InvalidInput,
    InvalidSpec,
    Job,
    JobExists,
    JobNotFound,
    LogsUnavailable,
    NamespaceNotFound,
    NotADistributedTrainingJob,
    StatusView,
    TrainyardClient,
    WorkerInfo,
    human_age,
    interleave,
    iter_lines,
    merge_by_time,
    parse_progress,
)
from trainyard.sdk import logs as sdk_logs
from trainyard.sdk.logs import hold_errors

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-ddp.yaml"


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for a server nobody listens on: enough to build a client."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ml"}},
                     {"name": "other", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


# ------------------------------------------------------------------------------------ parse_progress

LINES = [
    "[trainyard-launch] started: torch.distributed.run ...",
    "[trainyard] starting from step=0",
    "[trainyard] step=10 epoch=0 loss=2.2828 samples_per_s=11536.5",
    "[trainyard] checkpoint step=10 stall_s=0.006 async=false",
    "w0| [trainyard] step=20 epoch=1 loss=1.5 samples_per_s=31403.5",
    "2026-01-01T00:00:00.5Z [default0]:[trainyard] step=30 epoch=1 loss=nan samples_per_s=0.0",
    "[trainyard] resumed from step=20",
    "[trainyard] done step=30 accuracy=0.9712",
]


def test_parse_progress_lines_keeps_step_lines_and_converts_numbers():
    recs = parse_progress(LINES)
    assert [r["step"] for r in recs] == [10, 20, 30]
    assert recs[0] == {"step": 10, "epoch": 0, "loss": 2.2828, "samples_per_s": 11536.5}
    assert recs[2]["loss"] != recs[2]["loss"]  # nan
    assert parse_progress("\n".join(LINES))[:2] == recs[:2]  # text works too (nan != nan)


def test_parse_progress_pairs_from_client_logs_carry_the_worker():
    recs = parse_progress([(1, LINES[2]), (0, "noise"), (0, LINES[4])])
    assert [(r["worker"], r["step"]) for r in recs] == [(1, 10), (0, 20)]


def test_parse_progress_custom_fields():
    assert parse_progress(["[trainyard] step=5 loss=0.5 lr=1e-3 phase=warmup"]) == [
        {"step": 5, "loss": 0.5, "lr": 0.001, "phase": "warmup"}]


def test_parse_progress_over_a_trainyard_run_workdir(tmp_path: Path):
    for attempt, worker, steps in [(0, 0, [10, 20]), (0, 1, []), (1, 1, [20, 30]), (10, 0, [40])]:
        d = tmp_path / f"attempt-{attempt}"
        d.mkdir(exist_ok=True)
        (d / f"worker-{worker}.log").write_text("".join(
            f"[trainyard] step={s} epoch=0 loss={1 / s:.4f} samples_per_s=1.0\n" for s in steps))
    (tmp_path / "checkpoints").mkdir()
    recs = parse_progress(tmp_path)
    assert [(r["attempt"], r["worker"], r["step"]) for r in recs] == [(0, 0, 10), (0, 0, 20), (1, 1, 20),
                                                                       (1, 1, 30), (10, 0, 40)]
    one = parse_progress(tmp_path / "attempt-1" / "worker-1.log")
    assert [(r["attempt"], r["worker"], r["step"]) for r in one] == [(1, 1, 20), (1, 1, 30)]


# ------------------------------------------------------------------------------------ log streams


def test_iter_lines_joins_lines_and_characters_split_across_chunks():
    data = "w: héllo\r\nsecond line\nlast, no newline".encode()
    cut = data.index("é".encode()) + 1  # in the middle of the two-byte é
    chunks = [data[:cut], data[cut:cut + 3], data[cut + 3:cut + 20], data[cut + 20:]]
    assert list(iter_lines(chunks)) == ["w: héllo", "second line", "last, no newline"]
    assert list(iter_lines([b"a\n", b"", b"\n"])) == ["a", ""]
    assert list(iter_lines([])) == []


def test_merge_by_time_orders_by_kubelet_timestamps():
    w0 = ["2026-01-01T00:00:01.5Z a1", "2026-01-01T00:00:03Z a2", "continuation without timestamp"]
    w1 = ["2026-01-01T00:00:00.999999999Z b0", "2026-01-01T00:00:01.25Z b1", "2026-01-01T00:00:04.000001Z b2"]
    merged = [(w, line.split()[-1]) for w, line in merge_by_time({0: iter(w0), 1: iter(w1)})]
    assert merged == [(1, "b0"), (1, "b1"), (0, "a1"), (0, "a2"), (0, "timestamp"), (1, "b2")]


def test_interleave_yields_lines_in_arrival_order():
    a1_seen, b1_seen = threading.Event(), threading.Event()

    def a():
        yield "a1"
        assert b1_seen.wait(5)
        yield "a2"

    def b():
        assert a1_seen.wait(5)
        yield "b1"

    got = []
    for key, line, err in interleave({0: a, 1: b}):
        assert err is None
        got.append((key, line))
        {"a1": a1_seen, "b1": b1_seen}.get(line, threading.Event()).set()
    assert got == [(0, "a1"), (1, "b1"), (0, "a2")]


def test_interleave_reports_a_failing_source_and_goes_on():
    def bad():
        yield "x"
        raise LogsUnavailable("no logs found")

    def good():
        time.sleep(0.05)
        yield "y"

    out = list(interleave({3: bad, 4: good}))
    assert (3, "x", None) in out and (4, "y", None) in out
    [(key, line, err)] = [o for o in out if o[2] is not None]
    assert (key, line, str(err)) == (3, None, "no logs found")


def test_interleave_closed_early_unblocks_the_sources():
    released = threading.Event()

    def forever():
        yield "first"
        released.wait(10)  # a blocked HTTP read, until on_close closes the response

    before = threading.active_count()
    gen = interleave({0: forever, 1: forever}, on_close=released.set)
    assert next(gen)[1] == "first"
    gen.close()
    assert released.is_set()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_closing_streams_wakes_a_reader_blocked_on_the_socket():
    """Closing a response another thread is reading waits for that read (the file's lock) unless
    the socket is shut down first: _Streams.close must not hang on a quiet followed log."""
    import socket

    ours, theirs = socket.socketpair()
    reader = ours.makefile("rb")
    streams = sdk_logs._Streams()
    streams.add(SimpleNamespace(connection=SimpleNamespace(sock=ours), close=reader.close))

    def source():
        while line := reader.readline():
            yield line.decode().strip()

    gen = interleave({0: source}, on_close=streams.close)
    theirs.sendall(b"first\n")
    assert next(gen) == (0, "first", None)
    closer = threading.Thread(target=gen.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive(), "closing the log streams hung"
    theirs.close()


# ------------------------------------------------------------------------------------ the model


def test_from_yaml_round_trips_the_example_exactly():
    job = Job.from_yaml(EXAMPLE)
    assert job.name == "digits-ddp" and job.spec.workers == 4
    assert job.to_manifest() == yaml.safe_load(EXAMPLE.read_text())  # what was written, nothing added
    assert Job.from_yaml(EXAMPLE.read_text()).to_manifest() == job.to_manifest()
    assert Job.from_yaml(str(EXAMPLE)).name == "digits-ddp"


def test_from_yaml_picks_the_job_among_other_documents():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n" + EXAMPLE.read_text()
    assert Job.from_yaml(text).name == "digits-ddp"


@pytest.mark.parametrize("text, error, words", [
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", NotADistributedTrainingJob,
     "kind Deployment (apps/v1) is not a DistributedTrainingJob (trainyard.dev/v1alpha1)"),
    ("apiVersion: trainyard.dev/v1\nkind: DistributedTrainingJob\nmetadata: {name: d}\nspec: {}\n",
     NotADistributedTrainingJob, "apiVersion trainyard.dev/v1 is not served"),
    ("a: [1, 2\nb: 3\n", InvalidInput, "not valid YAML"),
    ("- just\n- a list\n", NotADistributedTrainingJob, "not a Kubernetes object"),
    ("", NotADistributedTrainingJob, "no YAML document"),
    ("apiVersion: trainyard.dev/v1alpha1\nkind: DistributedTrainingJob\nmetadata: {name: d}\n"
     "spec: {workers: 0, template: {spec: {containers: []}}}\n", InvalidSpec,
     "spec.workers: Input should be greater than or equal to 1"),
    ("apiVersion: trainyard.dev/v1alpha1\nkind: DistributedTrainingJob\nmetadata: {name: d}\n"
     "spec: {workers: 1, wrokers: 2, template: {spec: {}}}\n", InvalidSpec, "spec.wrokers: Extra inputs"),
    ("apiVersion: trainyard.dev/v1alpha1\nkind: DistributedTrainingJob\nmetadata: {name: d}\n", InvalidSpec,
     "spec is required"),
    ("apiVersion: trainyard.dev/v1alpha1\nkind: DistributedTrainingJob\nspec: {workers: 1, template: {spec: {}}}\n",
     InvalidSpec, "metadata.name is required"),
])
def test_from_yaml_errors_are_one_clear_line(text, error, words):
    with pytest.raises(error) as e:
        Job.from_yaml(text + "\n")
    assert words in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_from_yaml_file_errors(tmp_path: Path):
    with pytest.raises(InvalidInput, match="no such file"):
        Job.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(InvalidInput, match="no such file"):
        Job.from_yaml("missing.yaml")
    with pytest.raises(InvalidInput, match="is a directory"):
        Job.from_yaml(tmp_path)
    two = tmp_path / "two.yaml"
    two.write_text(EXAMPLE.read_text() + "---\n" + EXAMPLE.read_text())
    with pytest.raises(InvalidInput, match="holds 2 DistributedTrainingJobs"):
        Job.from_yaml(two)


def test_new_builds_the_manifest():
    job = Job.new("demo", "img:1", "python train.py --epochs 3", workers=4, env={"LR": 0.1}, gpus=1,
                  resources={"requests": {"cpu": "2"}}, checkpoint="5Gi", labels={"team": "ml"},
                  failure_policy=api.FailurePolicy(backoff_limit=1), pod_spec={"nodeSelector": {"gpu": "a100"}})
    m = job.to_manifest()
    assert m["metadata"] == {"name": "demo", "labels": {"team": "ml"}}
    assert m["spec"]["workers"] == 4 and m["spec"]["checkpoint"] == {"size": "5Gi"}
    assert m["spec"]["failurePolicy"] == {"backoffLimit": 1}
    assert "runPolicy" not in m["spec"]  # unset: the CRD's defaults apply
    pod = m["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["containers"] == [{"name": "trainer", "image": "img:1", "command": ["python", "train.py", "--epochs", "3"],
                                  "env": [{"name": "LR", "value": "0.1"}],
                                  "resources": {"requests": {"cpu": "2"}, "limits": {"nvidia.com/gpu": 1}}}]
    assert job.problems() == []
    elastic = Job.new("e", "img", ["t"], elastic=(2, 8)).to_manifest()["spec"]
    assert elastic["elastic"] == {"minWorkers": 2, "maxWorkers": 8} and "workers" not in elastic
    bad = Job.new("w", "img", ["t"], failure_policy={"restartScope": "Worker"}, env={"PET_X": "1"})
    assert any("restartScope Worker needs spec.elastic" in p for p in bad.problems())
    with pytest.raises(InvalidSpec, match="spec.workers"):
        Job.new("z", "img", ["t"], workers=0)
    mutated = Job.new("m", "img", ["t"])
    mutated.spec.workers = 3
    assert mutated.to_manifest()["spec"]["workers"] == 3


# ------------------------------------------------------------------------------------ the client


def test_client_takes_the_namespace_from_the_context(kubeconfig: Path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    c = TrainyardClient(kubeconfig)
    assert (c.namespace, c.server, c.namespace_explicit) == ("ml", "https://127.0.0.1:1", False)
    assert TrainyardClient(kubeconfig, context="other").namespace == "default"
    assert TrainyardClient(kubeconfig, namespace="x").namespace == "x"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert TrainyardClient().namespace == "ml"


def test_client_without_a_kubeconfig(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(sdk.ClusterUnreachable, match=r"no kubeconfig: .*\.kube/config does not exist"):
        TrainyardClient()
    bad = tmp_path / "bad"
    bad.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(sdk.ClusterUnreachable, match="cannot use kubeconfig"):
        TrainyardClient(bad)


def api_exception(status: int, body: str | dict) -> ApiException:
    e = ApiException(status=status, reason={404: "Not Found", 422: "Unprocessable Entity"}.get(status, "x"))
    e.body = body if isinstance(body, str) else json.dumps(body)
    return e


def status_body(code: int, message: str, details: dict | None = None, reason: str = "") -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "details": details or {}, "code": code}


@pytest.mark.parametrize("exc, error, words", [
    (api_exception(404, "404 page not found\n"), CRDNotInstalled,
     "does not serve distributedtrainingjobs.trainyard.dev/v1alpha1 (404 on the resource type)"),
    (api_exception(404, status_body(404, "the server could not find the requested resource")), CRDNotInstalled,
     "install the CRD"),
    (api_exception(404, status_body(404, 'distributedtrainingjobs.trainyard.dev "j" not found',
                                    {"name": "j", "group": "trainyard.dev", "kind": "distributedtrainingjobs"})),
     JobNotFound, "job 'j' not found in namespace ml"),
    (api_exception(404, status_body(404, 'namespaces "nons" not found', {"name": "nons", "kind": "namespaces"})),
     NamespaceNotFound, "namespace 'nons' not found"),
    (api_exception(409, status_body(409, 'distributedtrainingjobs.trainyard.dev "j" already exists')), JobExists,
     '"j" already exists in namespace ml'),
    (api_exception(403, status_body(403, 'user "u" cannot create resource')), AccessDenied, 'user "u" cannot'),
    (api_exception(422, status_body(422, 'DistributedTrainingJob.trainyard.dev "j" is invalid: spec.workers: '
                                         'Invalid value: 0', {"causes": [{"field": "spec.workers"}]})),
     InvalidSpec, "spec.workers: Invalid value"),
    (api_exception(500, status_body(500, "etcd is\nsad")), sdk.ApiError, "answered 500 x: etcd is sad"),
])
def test_api_errors_map_to_typed_exceptions(kubeconfig: Path, exc, error, words):
    err = TrainyardClient(kubeconfig)._error(exc, "j")
    assert type(err) is error
    assert words in str(err) and "\n" not in str(err)
    if error is InvalidSpec:
        assert err.fields == ["spec.workers"]


def test_connection_refused_is_cluster_unreachable(kubeconfig: Path):
    c = TrainyardClient(kubeconfig, request_timeout=5)
    with pytest.raises(sdk.ClusterUnreachable, match=r"cannot reach the Kubernetes API at https://127.0.0.1:1 "
                                                     r".*: connection refused"):
        c.status("j")


# -------------------------------------------------------------------- logs with a fake apiserver


def fake_pod(name: str, attempt: int, index: int, phase: str = "Running", job: str = "j") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"trainyard.dev/job-name": job, "trainyard.dev/attempt":
                                                        str(attempt), "trainyard.dev/worker-index": str(index)},
                                     owner_references=[client.V1OwnerReference(api_version="v", kind="k", name="j",
                                                                               uid="uid-1")]),
        spec=client.V1PodSpec(containers=[], node_name="n1"),
        status=client.V1PodStatus(phase=phase))


class FakeResponse:
    def __init__(self, text: str):
        self.data = text.encode()

    def stream(self, amt):
        for i in range(0, len(self.data), 7):  # small chunks: lines split anywhere
            yield self.data[i:i + 7]

    def release_conn(self):
        pass

    def close(self):
        pass


def selects(selector: str, labels: dict[str, str]) -> bool:
    """A label selector's equality terms (k=v, k==v, k!=v, k, !k) against labels. Any other
    syntax fails the test: a fake that ignores what it cannot read would let a wrong selector pass."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", term):
            key, op, value = m.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            if (m.group(2) in labels) == bool(m.group(1)):
                return False
        else:
            raise AssertionError(f"the fake cannot read the label selector {selector!r}")
    return True


class FakeCore:
    def __init__(self, pods: list[client.V1Pod], logs: dict[str, str | ApiException]):
        self.pods, self.logs_by_pod, self.asked = pods, logs, []

    def list_namespaced_pod(self, ns, label_selector="", **kw):
        return SimpleNamespace(items=[p for p in self.pods if selects(label_selector, p.metadata.labels or {})])

    def read_namespaced_pod_log(self, name, ns, **kw):
        self.asked.append(name)
        out = self.logs_by_pod[name]
        if isinstance(out, ApiException):
            raise out
        return FakeResponse(out)


class FakeCustom:
    def __init__(self, status: dict):
        self.status = status

    def get_namespaced_custom_object(self, *args, **kw):
        return {"metadata": {"name": "j", "namespace": "ml", "uid": "uid-1"}, "spec": {"workers": 2},
                "status": self.status}


NO_LOGS = api_exception(400, status_body(400, 'no logs found for container "trainer" in pod "ml/j-1-1"'))


# A pod of another job with the same owner uid, the newest attempt and a log: only the label
# selector keeps it out, so every logs test below also tests the selector.
STRAY = fake_pod("k-9-0", 9, 0, job="k")


@pytest.fixture
def fake(kubeconfig: Path):
    def make(pods, logs, status):
        c = TrainyardClient(kubeconfig)
        c.core, c.custom = FakeCore([*pods, STRAY], {**logs, "k-9-0": "2026-01-01T00:00:00Z not mine\n"}), \
            FakeCustom(status)
        return c
    return make


def test_the_fake_reads_label_selectors_as_the_apiserver_does():
    labels = {"trainyard.dev/job-name": "j", "trainyard.dev/attempt": "1"}
    assert selects("trainyard.dev/job-name=j", labels) and selects("trainyard.dev/job-name==j,trainyard.dev/attempt", labels)
    assert not selects("trainyard.dev/job-name=k", labels) and not selects("trainyard.dev/attempt!=1", labels)
    assert not selects("!trainyard.dev/attempt", labels) and selects("", labels)
    with pytest.raises(AssertionError, match="cannot read"):
        selects("trainyard.dev/attempt in (1,2)", labels)


def test_workers_are_the_jobs_pods_only(fake):
    c = fake(PODS, POD_LOGS, {"attempt": 1})
    assert [w.name for w in c.workers("j")] == ["j-0-1", "j-1-0", "j-1-1"]
    assert [w.name for w in c.workers("k", uid="uid-1")] == ["k-9-0"]


def test_empty_logs_say_what_the_workers_are_doing(fake):
    pending = fake_pod("j-1-1", 1, 1, "Pending")
    pending.status.container_statuses = [client.V1ContainerStatus(
        name="trainer", image="x", image_id="", ready=False, restart_count=0,
        state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ContainerCreating")))]
    c = fake([PODS[1], pending], {"j-1-0": "", "j-1-1": ""}, {"attempt": 1, "rendezvousAttempt": 1})
    with pytest.warns(UserWarning, match=r"^no log lines yet: worker 0 is Running, worker 1 is Pending "
                                         r"\(ContainerCreating\)$"):
        assert list(c.logs("j")) == []
    [notice] = list(c.log_stream("j"))
    assert notice.empty and notice.worker == -1
    c = fake([fake_pod("j-1-0", 1, 0, "Succeeded")], {"j-1-0": ""}, {"attempt": 1, "rendezvousAttempt": 1})
    with pytest.warns(UserWarning, match=r"^no log lines: worker 0 is Succeeded$"):
        assert list(c.logs("j")) == []


POD_LOGS = {
    "j-0-0": "2026-01-01T00:00:01Z old w0\n",
    "j-0-1": "2026-01-01T00:00:02Z old w1 failed\n",
    "j-1-0": "2026-01-01T00:00:10Z [trainyard] step=10 loss=1.0\n2026-01-01T00:00:12Z [trainyard] step=20 loss=0.5\n",
    "j-1-1": "2026-01-01T00:00:11Z hello from w1\n",
}
PODS = [fake_pod("j-0-1", 0, 1, "Failed"), fake_pod("j-1-0", 1, 0), fake_pod("j-1-1", 1, 1)]


def test_logs_merge_the_current_gang_by_time(fake):
    c = fake(PODS, POD_LOGS, {"attempt": 1, "rendezvousAttempt": 1, "phase": "Running"})
    assert list(c.logs("j")) == [(0, "[trainyard] step=10 loss=1.0"), (1, "hello from w1"),
                                 (0, "[trainyard] step=20 loss=0.5")]
    assert [r["step"] for r in parse_progress(c.logs("j"))] == [10, 20]
    assert list(c.logs("j", worker=1)) == [(1, "hello from w1")]
    assert list(c.logs("j", previous_attempt=True)) == [(1, "old w1 failed")]
    assert list(c.logs("j", attempt=0)) == [(1, "old w1 failed")]
    with pytest.raises(LogsUnavailable, match="has no pod of worker 5"):
        list(c.logs("j", worker=5))
    with pytest.raises(LogsUnavailable, match="no pods of an attempt before 0"):
        list(fake(PODS[1:], POD_LOGS, {"attempt": 0}).logs("j", previous_attempt=True))


def test_logs_of_a_worker_scope_restart_take_the_newest_pod_per_index(fake):
    pods = [fake_pod("j-0-0", 0, 0), fake_pod("j-0-1", 0, 1, "Failed"), fake_pod("j-1-1", 1, 1)]
    c = fake(pods, POD_LOGS, {"attempt": 1, "rendezvousAttempt": 0, "phase": "Running"})
    assert list(c.logs("j")) == [(0, "old w0"), (1, "hello from w1")]


def test_logs_one_unreadable_worker_is_a_warning_all_unreadable_an_error(fake):
    c = fake(PODS, {**POD_LOGS, "j-1-1": NO_LOGS}, {"attempt": 1, "rendezvousAttempt": 1})
    with pytest.warns(UserWarning, match='worker 1: no logs found for container "trainer"'):
        assert [w for w, _ in c.logs("j")] == [0, 0]
    c = fake(PODS, {**POD_LOGS, "j-1-0": NO_LOGS, "j-1-1": NO_LOGS}, {"attempt": 1, "rendezvousAttempt": 1})
    with pytest.raises(LogsUnavailable) as e:
        list(c.logs("j"))
    assert str(e.value) == ("cannot read the logs of job 'j': worker 0: no logs found for container \"trainer\" in "
                            "pod \"ml/j-1-1\" (and 1 more worker(s))")
    # follow: the same, and it returns instead of waiting for an attempt that will never log
    with pytest.raises(LogsUnavailable):
        list(c.logs("j", follow=True))


def test_logs_follow_streams_and_moves_on_to_the_next_attempt(fake, monkeypatch):
    monkeypatch.setattr(sdk_logs.time, "sleep", lambda s: None)
    c = fake(PODS[1:], POD_LOGS, {"attempt": 1, "rendezvousAttempt": 1, "phase": "Running"})
    statuses = iter([{"attempt": 2, "rendezvousAttempt": 2, "phase": "Running"},
                     {"attempt": 2, "rendezvousAttempt": 2, "phase": "Succeeded"}])

    def next_attempt(*a, **kw):
        c.core.pods = PODS[1:] + [fake_pod("j-2-0", 2, 0)]
        c.core.logs_by_pod["j-2-0"] = "2026-01-01T00:01:00Z after restart\n"
        c.custom.status = next(statuses, c.custom.status)
        return FakeCustom.get_namespaced_custom_object(c.custom)

    items = []
    for item in c.log_events("j", follow=True):
        items.append(item)
        if len([i for i in items if i.line]) == 3:
            c.custom.get_namespaced_custom_object = next_attempt
    lines = sorted((i.worker, i.line) for i in items if i.line)
    assert lines == [(0, "[trainyard] step=10 loss=1.0"), (0, "[trainyard] step=20 loss=0.5"),
                     (0, "after restart"), (1, "hello from w1")]
    assert [i.notice for i in items if i.notice] == ["attempt 2: j-2-0"]


# ------------------------------------------------------------------------------------- the commands


def test_human_age_matches_kubectl():
    cases = {0: "0s", 59: "59s", 119: "119s", 120: "2m", 125: "2m5s", 600: "10m", 3 * 3600 - 1: "179m",
             3 * 3600: "3h", 3 * 3600 + 60: "3h1m", 8 * 3600: "8h", 47 * 3600: "47h", 48 * 3600: "2d",
             50 * 3600: "2d2h", 8 * 86400: "8d", 800 * 86400: "2y70d", -5: "<invalid>"}
    assert {s: human_age(s) for s in cases} == cases


def test_get_table_columns():
    now = datetime.now(UTC)
    progress = {"step": 340, "totalSteps": 460, "percent": 73.9, "eta": "1m", "loss": 0.3412, "lastCheckpointStep": 300,
                "resumedFromStep": 300, "updatedAt": now.isoformat()}
    objs = [{"metadata": {"name": "a", "namespace": "ml", "uid": "u1",
                          "creationTimestamp": (now - timedelta(seconds=30)).isoformat()},
             "status": {"phase": "Running", "workers": {"ready": 2, "desired": 2}, "restarts": 1, "attempt": 1,
                        "progress": progress}},
            {"metadata": {"name": "bb", "namespace": "ml", "uid": "u2", "creationTimestamp": now.isoformat()}}]
    last = {"u1": sdk.EventInfo("Normal", "AllWorkersRunning", "all 2 workers are running " + "x" * 80, now)}
    headers, rows = jobs_cli.job_rows(objs, last, all_namespaces=False, wide=False)
    lines = jobs_cli.table(headers, rows).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%", "ETA", "AGE",
                                             "ATTEMPT", "LAST EVENT"]
    row = re.split(r"\s{2,}", lines[1])
    assert row[:8] == ["a", "Running", "2", "2", "1", "340", "73.9", "1m"] and re.fullmatch(r"3\ds", row[8])
    assert row[9] == "1" and row[10].startswith("AllWorkersRunning: all 2 workers are running")
    assert row[10].endswith("...") and len(row[10]) == 70
    assert re.split(r"\s{2,}", lines[2]) == ["bb", "-", "0", "0", "0", "-", "-", "-", "0s", "0", "-"]
    headers, rows = jobs_cli.job_rows(objs, last, all_namespaces=True, wide=True)
    assert headers[0] == "NAMESPACE" and headers[-4:] == ["LOSS", "LAST-CKPT", "DISRUPTIONS", "MESSAGE"]
    assert rows[0][0] == "ml" and rows[0][-4:-2] == ["0.3412", "300"]


def test_describe_and_the_views_show_the_progress_with_the_restarts():
    now = datetime.now(UTC)
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"].update(namespace="ml", uid="u", creationTimestamp=now.isoformat())
    obj["status"] = {"phase": "Running", "attempt": 1, "restarts": 1, "progress": {
        "step": 340, "totalSteps": 460, "percent": 73.9, "eta": "1m", "loss": 0.3412, "lastCheckpointStep": 300,
        "resumedFromStep": 300, "attempt": 1, "updatedAt": (now - timedelta(seconds=5)).isoformat()}}
    text = jobs_cli.describe_text(obj, [], [])
    want = ("step 340/460 (73.9%), ETA 1m, loss 0.3412, last checkpoint step 300; resumed at step 300 after restart 1 "
            "(reported 5s ago)")
    assert f"Progress:           {want}" in text
    assert sdk.status_line(obj).startswith("digits-ddp: Running  ready 0/0  attempt 1  restarts 1  step 340/460  ETA 1m")
    console = Console(file=io.StringIO(), width=160)
    console.print(sdk.render_status(obj, []))
    assert "resumed at step 300 after restart 1" in console.file.getvalue() and "█" in console.file.getvalue()
    assert sdk.progress_line({"metadata": {"name": "x"}, "status": {}}) is None


def test_describe_text_sections():
    now = datetime.now(UTC)
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"].update(namespace="ml", uid="u", creationTimestamp=now.isoformat())
    obj["status"] = {"phase": "Failed", "message": "worker 1 failed", "attempt": 0, "restarts": 0,
                     "conditions": [{"type": "Failed", "status": "True", "reason": "NonRetryableExitCode",
                                     "message": "worker 1 exited with code 1", "lastTransitionTime": now.isoformat()}]}
    workers = [WorkerInfo("digits-ddp-0-1", 0, 1, "Failed", 1, "Error", "kwok-node-1", now)]
    events = [sdk.EventInfo("Warning", "WorkerFailed", "worker 1 exited", now, 2)]
    text = jobs_cli.describe_text(obj, workers, events)
    assert "Image:            trainyard/trainer:0.1.0" in text
    assert "Failure policy:   ExitCode, scope Gang, backoffLimit 3" in text
    assert "Checkpoint:       claim digits-ddp-checkpoints (1Gi, ReadWriteMany) at /checkpoints" in text
    lines = text.splitlines()
    cond = lines[lines.index("Conditions:") + 2]
    assert re.split(r"\s{2,}", cond.strip()) == ["Failed", "True", "NonRetryableExitCode", "0s",
                                                 "worker 1 exited with code 1"]
    worker = lines[lines.index("Workers:") + 2]
    assert re.split(r"\s{2,}", worker.strip()) == ["digits-ddp-0-1", "0", "1", "Failed", "1", "Error",
                                                   "kwok-node-1", "0s"]
    assert re.split(r"\s{2,}", lines[lines.index("Events:") + 2].strip()) == ["Warning", "WorkerFailed", "0s (x2)",
                                                                              "worker 1 exited"]


def test_status_view_lines_prints_only_changes(capsys):
    view = StatusView("lines")
    obj = {"metadata": {"name": "j"}, "status": {"phase": "Running", "workers": {"ready": 1, "desired": 2}}}
    view.update(obj, [])
    view.update(obj, [])
    obj["status"]["workers"]["ready"] = 2
    view.update(obj, [])
    assert capsys.readouterr().out.splitlines() == ["j: Running  ready 1/2  attempt 0  restarts 0",
                                                    "j: Running  ready 2/2  attempt 0  restarts 0"]
    assert not view.wants_workers and StatusView.auto().mode == "off"  # pytest's stderr is not a terminal


def test_status_view_in_jupyter_updates_one_display(monkeypatch):
    import sys
    import types

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    class ZMQInteractiveShell:
        pass

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: ZMQInteractiveShell()
    display = types.ModuleType("IPython.display")
    display.display = lambda obj, display_id: shown.append(("display", obj)) or Handle()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    view = StatusView.auto()
    assert view.mode == "jupyter" and view.wants_workers
    obj = {"metadata": {"name": "j"}, "status": {"phase": "Running"}}
    view.update(obj, [])
    view.update(obj, [])
    view.close()
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert hasattr(shown[0][1], "_repr_mimebundle_")  # a rich Panel: renders in the notebook without ipywidgets


def test_status_view_live_renders_to_its_stream():
    import io

    out = io.StringIO()
    view = StatusView("live", out)
    view.update({"metadata": {"name": "j"}, "status": {"phase": "Succeeded"}}, [WorkerInfo("j-0-0", 0, 0, "Succeeded", 0)])
    view.close()
    assert "j  Succeeded" in out.getvalue() and "j-0-0" in out.getvalue()


def test_render_status_has_the_workers_table():
    from rich.console import Console

    obj = {"metadata": {"name": "j"}, "status": {"phase": "Running", "workers": {"ready": 1, "desired": 1}}}
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(sdk.render_status(obj, [WorkerInfo("j-0-0", 0, 0, "Running", node="kwok-node-0")]))
    text = console.export_text()
    assert "j  Running  ready 1/1" in text and "j-0-0" in text and "kwok-node-0" in text


runner = CliRunner()


class FakeLogClient:
    namespace = "ml"

    def __init__(self, items):
        self.items = items

    def get_raw(self, name):
        return {"metadata": {"name": name}, "spec": {"workers": 12}, "status": {}}

    def log_stream(self, name, *a, **kw):
        return hold_errors(name, self.items)


def test_logs_command_prefixes_and_pads(monkeypatch):
    items = [sdk.LogItem(0, "a", None), sdk.LogItem(11, "b", None), sdk.LogItem(-1, None, None, "attempt 1: x"),
             sdk.LogItem(3, None, "no logs found"), sdk.LogItem(2, "c", None)]
    monkeypatch.setattr(jobs_cli, "_client", lambda *a: FakeLogClient(items))
    r = runner.invoke(app, ["logs", "j"])
    assert r.exit_code == 0
    assert r.stdout == "w0 | a\nw11| b\nw2 | c\n"
    assert r.stderr == "-- attempt 1: x\nwarning: worker 3: no logs found\n"


def test_logs_command_all_unreadable_is_one_line(monkeypatch):
    items = [sdk.LogItem(0, None, "no logs found for container"), sdk.LogItem(1, None, "no logs found")]
    monkeypatch.setattr(jobs_cli, "_client", lambda *a: FakeLogClient(items))
    r = runner.invoke(app, ["logs", "j"])
    assert (r.exit_code, r.stdout) == (1, "")
    assert r.stderr == ("error: cannot read the logs of job 'j': worker 0: no logs found for container "
                        "(and 1 more worker(s))\n")


def test_unexpected_errors_are_one_line_too(monkeypatch):
    def boom(*a):
        raise RuntimeError("bug\nwith two lines")

    monkeypatch.setattr(jobs_cli, "_client", boom)
    r = runner.invoke(app, ["get"])
    assert r.exit_code == 1
    assert r.stderr == "error: unexpected RuntimeError: bug with two lines (set TRAINYARD_DEBUG=1 for the traceback)\n"


def test_submit_needs_exactly_one_file(tmp_path):
    r = runner.invoke(app, ["submit"])
    assert (r.exit_code, r.stderr) == (2, "error: give the job's YAML file once: trainyard submit FILE (or -f FILE)\n")


# ------------------------------------------------------------------------------------- the example


def test_example_plots_a_local_run(tmp_path: Path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("submit_and_plot", REPO / "examples/notebook/submit_and_plot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for attempt, steps in [(0, range(10, 60, 10)), (1, range(30, 100, 10))]:
        d = tmp_path / "run" / f"attempt-{attempt}"
        d.mkdir(parents=True)
        (d / "worker-0.log").write_text("[trainyard] starting from step=0\n" + "".join(
            f"[trainyard] step={s} epoch=0 loss={2 / s:.4f} samples_per_s=100.0\n" for s in steps))
    out = tmp_path / "loss.png"
    assert mod.main(["--from-run", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = mod.plot_loss(parse_progress(tmp_path / "run"))
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["attempt 0", "attempt 1"]


def test_notebook_is_valid_json_with_the_same_steps():
    nb = json.loads((REPO / "examples/notebook/submit_and_plot.ipynb").read_text())
    assert nb["nbformat"] == 4
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # executed for real with a kernel: tests/runtime/test_notebook.py
    for name in ("LocalClient", "TrainyardClient", "client.submit", "client.wait", "client.progress", "plot_loss"):
        assert name in code


@pytest.mark.parametrize(("args", "env"), [(["--cluster-domain", "Corp_Example"], {}),
                                           ([], {"TRAINYARD_CLUSTER_DOMAIN": "https://corp.example"})])
def test_the_operator_refuses_a_bad_cluster_domain_before_it_starts(args, env):
    out = runner.invoke(app, ["operator", *args], env=env)
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", out.output)  # rich's error box wraps the message
    assert out.exit_code == 2, out.output
    assert "--cluster-domain" in text and "is not a DNS name" in text, text
