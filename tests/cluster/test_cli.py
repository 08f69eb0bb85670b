"""The `trainyard` job commands (typer's CliRunner) on a real apiserver with the real operator."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trainyard import sdk
from trainyard.cli import app
from trainyard.cli import jobs as jobs_cli

from .helpers import job_manifest, wait_for
from .test_sdk import kwok_logs  # noqa: F401,F811  (a fixture)

runner = CliRunner()


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def cli(installed):
    """Runs `trainyard ARGS --kubeconfig <the test cluster's>`."""

    def run(*args: str, kubeconfig: str | None = None, env: dict | None = None):
        extra = ["--kubeconfig", kubeconfig or installed.kubeconfig] if kubeconfig != "" else []
        return runner.invoke(app, [*map(str, args), *extra], env=env)

    return run


def write(tmp_path: Path, body: dict | str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return path


def one_error_line(result, code: int) -> str:
    """The error contract: exit code, nothing on stdout, exactly one line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_submit_get_describe_delete(kube, ns, operator, cli, tmp_path):
    f = write(tmp_path, job_manifest("cli-job", workers=2, failurePolicy={"restartPolicy": "Never"}))
    r = cli("submit", f, "-n", ns)
    assert (r.exit_code, r.stdout, r.stderr) == (0, f"cli-job created in namespace {ns}\n", "")
    kube.wait_phase(ns, "cli-job", "Running")
    wait_for(lambda: "AllWorkersRunning" in [e for e, _ in kube.events(ns, "cli-job")], 30, "the event")

    r = cli("get", "-n", ns)
    assert r.exit_code == 0, r.output
    header, row, *rest = r.stdout.splitlines()
    assert cells(header) == ["NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%", "ETA", "AGE", "ATTEMPT",
                             "LAST EVENT"]
    row = cells(row)
    # no trainer has reported (kwok's pods run nothing): no step, no ETA yet
    assert row[:8] == ["cli-job", "Running", "2", "2", "0", "-", "-", "-"] and re.fullmatch(r"\d+s", row[8])
    assert row[9:] == ["0", "AllWorkersRunning: all 2 workers are running"]
    assert rest == []

    r = cli("get", "-A")
    header, *rows = r.stdout.splitlines()
    assert cells(header) == ["NAMESPACE", "NAME", "PHASE", "READY", "DESIRED", "RESTARTS", "STEP", "%", "ETA", "AGE",
                             "ATTEMPT", "LAST EVENT"]
    assert [ns, "cli-job", "Running", "2", "2", "0"] in [cells(x)[:6] for x in rows]

    obj = json.loads(cli("get", "cli-job", "-n", ns, "-o", "json").stdout)
    assert (obj["metadata"]["name"], obj["status"]["phase"]) == ("cli-job", "Running")
    listed = yaml.safe_load(cli("get", "-n", ns, "-o", "yaml").stdout)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["cli-job"]
    assert cli("get", "-n", ns, "-o", "name").stdout == "distributedtrainingjobs.trainyard.dev/cli-job\n"
    wide = cli("get", "cli-job", "-n", ns, "-o", "wide").stdout.splitlines()
    assert cells(wide[0])[-2:] == ["DISRUPTIONS", "MESSAGE"] and cells(wide[1])[-2:] == ["0", kube.status(ns, "cli-job")["message"]]

    # worker 0 succeeds, worker 1 fails with exit code 1: restartPolicy Never fails the job
    kube.finish_pod(ns, "cli-job-0-0", 0)
    kube.finish_pod(ns, "cli-job-0-1", 1)
    kube.wait_phase(ns, "cli-job", "Failed")
    failed = kube.condition(ns, "cli-job", "Failed")
    wait_for(lambda: "WorkerFailed" in [e for e, _ in kube.events(ns, "cli-job")], 30, "the WorkerFailed event")

    r = cli("describe", "cli-job", "-n", ns)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert f"Namespace:          {ns}" in lines and "Phase:              Failed" in lines
    assert "  Command:          trainyard-launch train.py" in lines
    assert "  Failure policy:   Never, scope Gang, backoffLimit 3, backoff 10s (max 300s), in-place restarts 0" in lines
    section = lines[lines.index("Conditions:") + 1: lines.index("Workers:")]
    assert cells(section[0]) == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    conds = {cells(x)[0]: cells(x) for x in section[1:]}
    assert conds["Failed"][:3] == ["Failed", "True", failed["reason"]] and conds["Failed"][4] == failed["message"]
    section = lines[lines.index("Workers:") + 1: lines.index("Events:")]
    assert cells(section[0]) == ["NAME", "ATTEMPT", "INDEX", "PHASE", "EXIT CODE", "REASON", "NODE", "AGE"]
    workers = [cells(x) for x in section[1:]]
    assert [w[:6] for w in workers] == [["cli-job-0-0", "0", "0", "Succeeded", "0", "Completed"],
                                        ["cli-job-0-1", "0", "1", "Failed", "1", "Error"]]
    assert all(w[6].startswith("kwok-node-") for w in workers)
    events = [cells(x) for x in lines[lines.index("Events:") + 2:]]
    assert [e[1] for e in events][0] == "AllWorkersRunning"
    assert ["Warning", "WorkerFailed"] in [e[:2] for e in events]

    r = cli("delete", "cli-job", "-n", ns, "--wait")
    assert (r.exit_code, r.stdout) == (0, f"cli-job deleted from namespace {ns}\n")
    assert one_error_line(cli("get", "cli-job", "-n", ns), 4) == f"error: job 'cli-job' not found in namespace {ns}"
    r = cli("get", "-n", ns)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", f"No jobs found in namespace {ns}.\n")


@pytest.mark.parametrize("code, phase, exit_code", [(0, "Succeeded", 0), (1, "Failed", 1)])
def test_submit_wait_follows_the_job_to_its_end(kube, ns, operator, cli, tmp_path, code, phase, exit_code):
    f = write(tmp_path, job_manifest("cli-wait", workers=2, failurePolicy={"restartPolicy": "Never"}))
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=cli("submit", "-f", f, "-n", ns, "--wait", "--timeout", 90)))
    t.start()
    pods = wait_for(lambda: kube.running(ns, "cli-wait", 0, 2), 60, "2 running workers")
    # the status the waiter shows must have reached Running before the pods end
    wait_for(lambda: kube.status(ns, "cli-wait").get("workers", {}).get("ready") == 2, 30, "ready 2")
    for p in pods if code == 0 else pods[:1]:  # one failure fails the job (and deletes the other pod)
        kube.finish_pod(ns, p.metadata.name, code)
    t.join(100)
    r = result["r"]
    assert r.exit_code == exit_code, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"cli-wait created in namespace {ns}"
    assert any(x.startswith("cli-wait: Running  ready 2/2  attempt 0  restarts 0") for x in lines), r.stdout
    assert lines[-2].startswith(f"cli-wait: {phase}  ")
    assert lines[-1].startswith(f"cli-wait: {phase} after 0 restart(s), 0 disruption(s), attempt 0")


def test_submit_wait_timeout(kube, ns, operator, cli, tmp_path):
    f = write(tmp_path, job_manifest("cli-slow", workers=1))
    r = cli("submit", f, "-n", ns, "--wait", "--timeout", 3)
    assert r.exit_code == 124, r.output
    assert r.stderr.splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: job 'cli-slow' is still ")


def test_suspend_and_resume(kube, ns, operator, cli, tmp_path):
    cli("submit", write(tmp_path, job_manifest("cli-sus", workers=2)), "-n", ns)
    kube.wait_phase(ns, "cli-sus", "Running")
    r = cli("suspend", "cli-sus", "-n", ns)
    assert (r.exit_code, r.stdout) == (0, "cli-sus suspended\n")
    kube.wait_phase(ns, "cli-sus", "Suspended")
    wait_for(lambda: kube.pods(ns, "cli-sus") == [], 30, "every pod gone")
    assert cells(cli("get", "-n", ns).stdout.splitlines()[1])[:5] == ["cli-sus", "Suspended", "0", "2", "0"]
    r = cli("resume", "cli-sus", "-n", ns)
    assert (r.exit_code, r.stdout) == (0, "cli-sus resumed\n")
    status = kube.wait_phase(ns, "cli-sus", "Running")
    assert (status["attempt"], status["restarts"]) == (1, 0)
    wait_for(lambda: "JobResumed" in [e for e, _ in kube.events(ns, "cli-sus")], 30, "the JobResumed event")
    row = cells(cli("get", "-n", ns).stdout.splitlines()[1])
    assert row[:5] == ["cli-sus", "Running", "2", "2", "0"] and row[9] == "1"
    assert cli("describe", "cli-sus", "-n", ns).stdout.count("Suspended") >= 1


def test_logs_select_pods_and_fail_in_one_line_on_kwok(kube, ns, operator, cli, tmp_path):
    """kwok answers the log request (through the apiserver) with 400 'no logs found for container
    "trainer" in pod ...': the command says so in one line, naming the pod it chose."""
    cli("submit", write(tmp_path, job_manifest("cli-logs", workers=2)), "-n", ns)
    kube.wait_phase(ns, "cli-logs", "Running")
    kube.finish_pod(ns, "cli-logs-0-1", 1)  # OnFailure: a gang restart, attempt 1; the failed pod is kept
    wait_for(lambda: kube.running(ns, "cli-logs", 1, 2), 60, "attempt 1 running")

    no_logs = 'no logs found for container "trainer" in pod "{}/{}"'
    line = one_error_line(cli("logs", "cli-logs", "-n", ns), 1)
    assert line == (f"error: cannot read the logs of job 'cli-logs': worker 0: "
                    f"{no_logs.format(ns, 'cli-logs-1-0')} (and 1 more worker(s))")
    line = one_error_line(cli("logs", "cli-logs", "-n", ns, "--worker", "1", "-f"), 1)
    assert line == f"error: cannot read the logs of job 'cli-logs': worker 1: {no_logs.format(ns, 'cli-logs-1-1')}"
    line = one_error_line(cli("logs", "cli-logs", "-n", ns, "--previous-attempt"), 1)
    assert line.endswith(f"worker 1: {no_logs.format(ns, 'cli-logs-0-1')}")
    line = one_error_line(cli("logs", "cli-logs", "-n", ns, "--attempt", "0", "--worker", "0"), 1)
    assert line == "error: job 'cli-logs' has no pod of worker 0 in attempt 0"
    line = one_error_line(cli("logs", "cli-logs", "-n", ns, "--attempt", "0", "--previous-attempt"), 2)


# ------------------------------------------------------------------------------------- error paths


def bogus_kubeconfig(tmp_path: Path) -> str:
    return str(write(tmp_path, {
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "u"}}],
    }, "bogus-kubeconfig"))


COMMANDS = [("get",), ("get", "x"), ("describe", "x"), ("logs", "x"), ("delete", "x"), ("suspend", "x"),
            ("resume", "x"), ("submit", "JOB")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_no_cluster_reachable(cli, tmp_path, command):
    job = write(tmp_path, job_manifest("x"))
    args = [job if a == "JOB" else a for a in command]
    line = one_error_line(cli(*args, kubeconfig=bogus_kubeconfig(tmp_path)), 3)
    assert re.fullmatch(r"error: cannot reach the Kubernetes API at https://127.0.0.1:1 \(kubeconfig .*bogus-kubeconfig"
                        r", context nowhere\): connection refused", line)


def test_no_kubeconfig(cli, tmp_path):
    env = {"KUBECONFIG": None, "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": None}
    line = one_error_line(cli("get", kubeconfig="", env=env), 3)
    assert line == (f"error: no kubeconfig: {tmp_path}/.kube/config does not exist (pass --kubeconfig, set "
                    "KUBECONFIG, or create it)")
    line = one_error_line(cli("get", kubeconfig=str(tmp_path / "missing")), 3)
    assert line == f"error: no kubeconfig: {tmp_path}/missing does not exist"
    line = one_error_line(cli("get", "--context", "nope"), 3)
    assert "cannot use kubeconfig" in line and "nope" in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
def test_crd_not_installed(cli, ns, tmp_path, monkeypatch, command):
    """The apiserver's real 404 for a resource type it does not serve: the job commands are
    pointed at trainyard.dev/v1alpha1 nonexistentjobs, as they would be at a cluster without the CRD."""
    missing = sdk.Resource(plural="nonexistentjobs")
    monkeypatch.setattr(jobs_cli, "_client", lambda kubeconfig, context, namespace: sdk.TrainyardClient(
        kubeconfig, context, namespace, resource=missing))
    job = write(tmp_path, job_manifest("x"))
    args = [job if a == "JOB" else a for a in command]
    line = one_error_line(cli(*args, "-n", ns), 3)
    assert re.fullmatch(r"error: the cluster at https://127.0.0.1:\d+ does not serve "
                        r"nonexistentjobs.trainyard.dev/v1alpha1 \(404 on the resource type\): install the CRD first "
                        r"\(trainyard crd \| kubectl apply -f -, or the Helm chart\)", line)


@pytest.mark.parametrize("command", [c for c in COMMANDS if len(c) == 2 and c[0] != "submit"],
                         ids=lambda c: "-".join(c))
def test_job_not_found(cli, ns, command):
    assert one_error_line(cli(*command, "-n", ns), 4) == f"error: job 'x' not found in namespace {ns}"


def test_namespace_not_found_and_already_exists(cli, ns, tmp_path):
    f = write(tmp_path, job_manifest("x"))
    assert one_error_line(cli("submit", f, "-n", "no-such-namespace"), 4) == (
        "error: namespace 'no-such-namespace' not found")
    assert cli("submit", f, "-n", ns).exit_code == 0
    assert one_error_line(cli("submit", f, "-n", ns), 1) == (
        f'error: distributedtrainingjobs.trainyard.dev "x" already exists in namespace {ns}')


@pytest.mark.parametrize("spec, message", [
    ({"failurePolicy": {"restartScope": "Worker", "inPlaceRestarts": 1}},
     'error: DistributedTrainingJob.trainyard.dev "bad" is invalid: spec.failurePolicy.restartScope: Invalid value: '
     "spec.failurePolicy.restartScope Worker needs spec.elastic: a fixed-size torchrun group cannot take a "
     "replacement worker"),
    ({"workers": 9, "elastic": {"minWorkers": 1, "maxWorkers": 4}},
     'error: DistributedTrainingJob.trainyard.dev "bad" is invalid: spec.workers: Invalid value: '
     "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers"),
    ({"template": {"spec": {"containers": [{"name": "main", "image": "i"}]}}},
     'error: DistributedTrainingJob.trainyard.dev "bad" is invalid: spec.template.spec.containers: Invalid value: '
     "spec.template.spec.containers must include a container named 'trainer'"),
])
def test_invalid_spec_shows_the_apiservers_message(cli, ns, tmp_path, spec, message):
    """Rules only the apiserver checks (CEL): its message, which names the field, verbatim."""
    body = job_manifest("bad")
    body["spec"].update(spec)
    line = one_error_line(cli("submit", write(tmp_path, body), "-n", ns), 2)
    assert line.startswith(message), line


@pytest.mark.parametrize("text, message", [
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n",
     "error: {f}: kind Deployment (apps/v1) is not a DistributedTrainingJob (trainyard.dev/v1alpha1)"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n",
     "error: {f}: no DistributedTrainingJob among its documents (ConfigMap, Secret)"),
    ("metadata: {name: x\nspec: [\n",
     "error: {f}: not valid YAML: expected ',' or '}', but got ':' at line 2, column 5"),
    ("apiVersion: trainyard.dev/v1alpha1\nkind: DistributedTrainingJob\nmetadata: {name: x}\n"
     "spec: {workers: 0, template: {spec: {containers: []}}}\n",
     "error: {f}: spec.workers: Input should be greater than or equal to 1"),
])
def test_yaml_that_is_not_a_job(cli, ns, tmp_path, text, message):
    f = write(tmp_path, text)
    assert one_error_line(cli("submit", f, "-n", ns), 2) == message.replace("{f}", str(f))
    missing = tmp_path / "missing.yaml"
    assert one_error_line(cli("submit", missing, "-n", ns), 2) == f"error: {missing}: no such file"


def test_logs_prefix_and_interleave_real_lines(kube, ns, operator, cli, tmp_path, kwok_logs):  # noqa: F811
    """With kwok serving container logs (see test_sdk.kwok_logs): the lines of every worker,
    merged by time, each prefixed w<index>|; the previous attempt's failed pod stays readable."""
    cli("submit", write(tmp_path, job_manifest("cli-real", workers=2)), "-n", ns)
    kube.wait_phase(ns, "cli-real", "Running")
    kwok_logs(ns, "cli-real-0-0", [(0, "w0 starts"), (2, "w0 step")])
    kwok_logs(ns, "cli-real-0-1", [(1, "w1 starts"), (3, "w1 dies")])
    r = cli("logs", "cli-real", "-n", ns)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "w0| w0 starts\nw1| w1 starts\nw0| w0 step\nw1| w1 dies\n", "")
    assert cli("logs", "cli-real", "-n", ns, "-w", "1").stdout == "w1| w1 starts\nw1| w1 dies\n"

    kube.finish_pod(ns, "cli-real-0-1", 1)  # a gang restart: attempt 1; the failed pod is kept
    wait_for(lambda: kube.running(ns, "cli-real", 1, 2), 60, "attempt 1 running")
    kwok_logs(ns, "cli-real-1-0", [(10, "resumed from step=20")])
    r = cli("logs", "cli-real", "-n", ns)
    assert (r.exit_code, r.stdout) == (0, "w0| resumed from step=20\n"), r.stderr
    assert r.stderr == (f'warning: worker 1: no logs found for container "trainer" in pod "{ns}/cli-real-1-1"\n')
    assert cli("logs", "cli-real", "-n", ns, "--previous-attempt").stdout == "w1| w1 starts\nw1| w1 dies\n"
    assert cli("logs", "cli-real", "-n", ns, "--attempt", "1", "-w", "0").stdout == "w0| resumed from step=20\n"


def test_logs_of_workers_that_printed_nothing_say_what_they_are_doing(kube, ns, operator, cli, tmp_path,
                                                                       kwok_logs):  # noqa: F811
    """Empty logs (kwok serving empty files, as a kubelet does for a trainer still starting):
    not silence and exit 0 with nothing, but one line on stderr saying why there is nothing."""
    cli("submit", write(tmp_path, job_manifest("cli-quiet", workers=2)), "-n", ns)
    kube.wait_phase(ns, "cli-quiet", "Running")
    kwok_logs(ns, "cli-quiet-0-0", [])
    kwok_logs(ns, "cli-quiet-0-1", [])
    r = cli("logs", "cli-quiet", "-n", ns)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "no log lines yet: worker 0 is Running, worker 1 is Running\n")
