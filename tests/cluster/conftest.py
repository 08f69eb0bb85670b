"""The cluster tier: a real control plane (kube-apiserver, etcd, kube-controller-manager,
kube-scheduler built from Go modules, kwok playing the kubelets) and the real operator process,
running as the Helm chart's ServiceAccount.

Set TRAINYARD_E2E_KUBECONFIG to run against an existing cluster (kind in the e2e workflow), and
TRAINYARD_E2E_OPERATOR=incluster to test the chart's Deployment there instead of a local process.
Otherwise one kwok cluster is started for the session. With CI=true a cluster that cannot start
fails the run; elsewhere a missing Go toolchain skips the tier with one loud line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests import prebuild
from tests.support import tier_unavailable

from ..support import free_port, wait_for
from .helpers import Kube

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = REPO / "e2e" / "cluster"
CACHE = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))
BIN = CACHE / "bin" / "current"
CLUSTER_NAME = os.environ.get("TRAINYARD_TEST_CLUSTER", "trainyard-test")
OPERATOR_NS = "trainyard-system"
OPERATOR_SA = "trainyard"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


def _unavailable(why: str) -> None:
    tier_unavailable("cluster", why)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


@dataclass
class Cluster:
    kubeconfig: str
    kubectl: str
    helm: str
    local: bool  # a kwok cluster of ours (fake nodes can be added and deleted)

    def kubectl_run(self, *args: str, kubeconfig: str | None = None, check: bool = True,
                    input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.kubectl, "--kubeconfig", kubeconfig or self.kubeconfig, *args],
                              text=True, capture_output=True, check=check, input=input)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("TRAINYARD_E2E_KUBECONFIG")
    if external:
        kubectl = shutil.which("kubectl") or str(BIN / "kubectl")
        helm = shutil.which("helm") or str(BIN / "helm")
        yield Cluster(external, kubectl, helm, local=False)
        return
    if shutil.which("go") is None and not (BIN / "kube-apiserver").exists():
        _unavailable("no Go toolchain to build the control plane (install Go 1.26, or set TRAINYARD_E2E_KUBECONFIG)")
    prebuild.wait("cluster/build.sh", 3600)  # a background build of it (tests/prebuild.py)
    try:
        build = subprocess.run([str(CLUSTER_SCRIPTS / "build.sh")], text=True, capture_output=True, timeout=3600)
        if build.returncode != 0:
            _unavailable(f"building the control plane failed:\n{build.stderr[-3000:]}")
        up = subprocess.run([str(CLUSTER_SCRIPTS / "up.sh"), CLUSTER_NAME], text=True, capture_output=True,
                            timeout=600)
        if up.returncode != 0:
            _unavailable(f"starting the cluster failed:\n{up.stderr[-3000:]}")
    except subprocess.TimeoutExpired as e:
        _unavailable(f"{e.cmd} timed out")
    kubeconfig = up.stdout.strip().splitlines()[-1]
    yield Cluster(kubeconfig, str(BIN / "kubectl"), str(BIN / "helm"), local=True)
    if os.environ.get("TRAINYARD_KEEP_CLUSTER") != "1":
        subprocess.run([str(CLUSTER_SCRIPTS / "down.sh"), CLUSTER_NAME], capture_output=True)


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> Kube:
    return Kube(config.new_client_from_config(config_file=cluster.kubeconfig))


@pytest.fixture(scope="session")
def installed(cluster: Cluster, kube: Kube) -> Cluster:
    """The chart installed with a real helm: the CRD, the ServiceAccount and its RBAC."""
    args = ["upgrade", "--install", "trainyard", str(REPO / "charts" / "trainyard"), "--namespace", OPERATOR_NS,
            "--create-namespace", "--kubeconfig", cluster.kubeconfig, "--wait", "--timeout", "120s"]
    _run([cluster.helm, *args])
    # helm installs a chart's CRD only once; make sure this run's CRD is the one being tested.
    cluster.kubectl_run("apply", "--server-side", "--force-conflicts", "-f",
                        str(REPO / "crds" / "trainyard.dev_distributedtrainingjobs.yaml"))
    cluster.kubectl_run("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/distributedtrainingjobs.trainyard.dev")
    return cluster


def _service_account_kubeconfig(cluster: Cluster) -> str:
    """A kubeconfig holding a real token of the chart's ServiceAccount (TokenRequest API), so the
    operator is authorised exactly as it would be in its pod."""
    token = cluster.kubectl_run("create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=24h").stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [server],
        "users": [{"name": "trainyard-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": server["name"], "user": "trainyard-operator"}}],
        "current-context": "operator",
    }
    path = Path(cluster.kubeconfig).with_name(f"kubeconfig-{OPERATOR_SA}-sa")
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


class Operator:
    """The real `trainyard operator` process, started and killed like a pod would be."""

    def __init__(self, kubeconfig: str, log_dir: Path):
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        port = free_port()
        self.metrics_port = free_port()
        exe = Path(sys.executable).with_name("trainyard")
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(exe), "operator", "--kubeconfig", self.kubeconfig, "--liveness", f"http://127.0.0.1:{port}/healthz",
             "--metrics-port", str(self.metrics_port), "--verbose"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

        def alive() -> bool:
            assert self.proc.poll() is None, f"operator exited:\n{self.logs()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                import urllib.request
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return r.status == 200
            return False

        wait_for(alive, 60, "the operator's liveness endpoint")

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under it."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text()[-6000:] if self.log_path.exists() else ""

    def _all_logs(self) -> str:
        return "".join(p.read_text() for p in sorted(self.log_dir.glob("operator-*.log")))

    def errors(self) -> list[str]:
        """Lines showing the operator was denied by RBAC, or hit an unexpected exception."""
        text = self._all_logs()
        return [line for line in text.splitlines()
                if f'User "system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}" cannot' in line or "Traceback" in line]


class InClusterOperator:
    """TRAINYARD_E2E_OPERATOR=incluster: the operator is the chart's Deployment, running in its pod
    on a cluster whose pods really run (kind in the e2e workflow). Nothing is started locally;
    kill() deletes the pod at once (grace period 0, as when its node dies), start() waits for the
    Deployment's replacement pod to be Ready, logs() and errors() read `kubectl logs`."""

    SELECTOR = "app.kubernetes.io/name=trainyard,app.kubernetes.io/instance=trainyard"

    def __init__(self, cluster: Cluster, kubeconfig: str):
        self.cluster = cluster
        self.kubeconfig = kubeconfig  # the chart's ServiceAccount, as for the local process (test_rbac)
        self.killed: set[str] = set()  # uids of the pods kill() deleted
        self.past_logs: dict[str, str] = {}  # pod name -> its logs, read just before it was deleted
        self.starts = 0

    def _pods(self) -> list[dict]:
        out = self.cluster.kubectl_run("get", "pods", "-n", OPERATOR_NS, "-l", self.SELECTOR, "-o", "json")
        return [p for p in json.loads(out.stdout)["items"] if p["metadata"].get("deletionTimestamp") is None]

    def _ready_pod(self) -> dict | None:
        for pod in self._pods():
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
            if ready and pod["metadata"]["uid"] not in self.killed:
                return pod
        return None

    def start(self) -> None:
        self.starts += 1
        wait_for(self._ready_pod, 180, "a Ready operator pod (deployment trainyard)")
        self.cluster.kubectl_run("wait", "--for=condition=Available", "--timeout=120s", "-n", OPERATOR_NS,
                                 "deployment/trainyard")

    def kill(self) -> None:
        for pod in self._pods():
            name = pod["metadata"]["name"]
            self.past_logs[name] = self._pod_logs(name)
            self.killed.add(pod["metadata"]["uid"])
            self.cluster.kubectl_run("delete", "pod", name, "-n", OPERATOR_NS, "--grace-period=0", "--force",
                                     "--wait=false", check=False)

    def stop(self) -> None:
        """The Deployment stays: it belongs to the chart."""

    def _pod_logs(self, name: str) -> str:
        text = ""
        for previous in (True, False):  # a container restarted by its liveness probe keeps one old log
            out = self.cluster.kubectl_run("logs", "-n", OPERATOR_NS, name, "-c", "operator",
                                           *(["--previous"] if previous else []), check=False)
            text += out.stdout if out.returncode == 0 else ""
        return text

    def _all_logs(self) -> str:
        current = {p["metadata"]["name"]: self._pod_logs(p["metadata"]["name"]) for p in self._pods()}
        return "".join({**self.past_logs, **current}.values())

    def logs(self) -> str:
        pod = self._ready_pod() or next(iter(self._pods()), None)
        return self._pod_logs(pod["metadata"]["name"])[-6000:] if pod else ""

    def errors(self) -> list[str]:
        return [line for line in self._all_logs().splitlines()
                if f'User "system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}" cannot' in line or "Traceback" in line]


@pytest.fixture(scope="session")
def operator(installed: Cluster, tmp_path_factory) -> Iterator[Operator | InClusterOperator]:
    mode = os.environ.get("TRAINYARD_E2E_OPERATOR", "local")
    kubeconfig = _service_account_kubeconfig(installed)
    if mode == "incluster":
        if installed.local:
            pytest.fail("TRAINYARD_E2E_OPERATOR=incluster needs a cluster whose pods really run (kwok only "
                        "pretends): set TRAINYARD_E2E_KUBECONFIG, e.g. to a kind cluster's", pytrace=False)
        op: Operator | InClusterOperator = InClusterOperator(installed, kubeconfig)
    elif mode == "local":
        op = Operator(kubeconfig, tmp_path_factory.mktemp("operator"))
    else:
        pytest.fail(f"TRAINYARD_E2E_OPERATOR={mode!r}: expected local (default) or incluster", pytrace=False)
    op.start()
    yield op
    op.stop()


def operator_lines_about(op: Operator | InClusterOperator, namespace: str, last: int = 150) -> str:
    """The operator's log lines that name `namespace` (its jobs' lines name it), the latest `last`."""
    lines = [line for line in op._all_logs().splitlines() if namespace in line]
    return "\n".join(lines[-last:]) or f"(no line of the operator's log names {namespace})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the operator shows what the operator logged about its namespace: a
    CI failure must be readable from CI's output alone."""
    outcome = yield
    report = outcome.get_result()
    op, ns = item.funcargs.get("operator"), item.funcargs.get("ns")
    if report.when == "call" and report.failed and op is not None and isinstance(ns, str):
        with contextlib.suppress(Exception):
            report.sections.append((f"operator log lines naming {ns}", operator_lines_about(op, ns)))


@pytest.fixture(autouse=True)
def _operator_stays_healthy(request):
    """Every cluster test also asserts the operator was never refused by RBAC and never crashed."""
    yield
    if "operator" in request.fixturenames:
        op: Operator = request.getfixturevalue("operator")
        assert op.errors() == [], "\n".join(op.errors()[:20]) + "\n" + op.logs()


@pytest.fixture
def ns(kube: Kube, installed: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: _default_sa(kube, name), 30, f"default ServiceAccount in {name}")
    yield name
    kube.core.delete_namespace(name)


def _default_sa(kube: Kube, ns: str) -> bool:
    try:
        kube.core.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException:
        return False


@pytest.fixture
def elapsed():
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0
