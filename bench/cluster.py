"""The cluster side of the benchmarks: the local control plane, a pod watch that timestamps every
event as it arrives, the contenders as processes (the Trainyard operator, Kubeflow's
training-operator, the bare-client floor) and the kube-apiserver's own request counters.

All contenders talk to the same kube-apiserver (cluster `trainyard-bench`, made by
e2e/cluster/up.sh) with the admin kubeconfig. Each works in its own namespace and each operator
watches only that namespace, so no contender sees another's objects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.support import free_port, wait_for

from .common import BENCH, BIN, REPO, log

CLUSTER = os.environ.get("BENCH_CLUSTER", "trainyard-bench")
CLUSTER_SCRIPTS = REPO / "e2e" / "cluster"
# Enough room for P2's 4,000 pods plus leftovers: 4 fake nodes x 1,200 pods.
NODE_PODS = os.environ.get("BENCH_NODE_PODS", "1200")
IMAGE = "trainyard/trainer:bench"
KF_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # hard-coded in training-operator's pkg/cert


# ---- the control plane -------------------------------------------------------------------------


def build_tools(kubeflow: bool) -> tuple[str, str] | None:
    """The control plane (a no-op when cached) and, if asked, Kubeflow's training-operator."""
    r = subprocess.run([str(CLUSTER_SCRIPTS / "build.sh")], text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"e2e/cluster/build.sh failed:\n{r.stderr[-3000:]}")
    if not kubeflow:
        return None
    r = subprocess.run([str(BENCH / "kubeflow" / "build.sh")], text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"bench/kubeflow/build.sh failed:\n{r.stderr[-3000:]}")
    binary, moddir = r.stdout.strip().splitlines()[-1].split()
    return binary, moddir


def cluster_up() -> str:
    env = {**os.environ, "NODE_PODS": NODE_PODS}
    t0 = time.monotonic()
    r = subprocess.run([str(CLUSTER_SCRIPTS / "up.sh"), CLUSTER], text=True, capture_output=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"e2e/cluster/up.sh {CLUSTER} failed:\n{r.stderr[-3000:]}")
    log(f"cluster {CLUSTER} up in {time.monotonic() - t0:.1f}s")
    return r.stdout.strip().splitlines()[-1]


def cluster_down() -> None:
    subprocess.run([str(CLUSTER_SCRIPTS / "down.sh"), CLUSTER], text=True, capture_output=True)
    log(f"cluster {CLUSTER} deleted")


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    r = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", kubeconfig, *args], text=True,
                       capture_output=True, input=input)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def new_client(kubeconfig: str, pool: int = 16) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


class Kube:
    """The harness's own admin access (submitting jobs, patching pod status, cleaning up)."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.api = new_client(kubeconfig, pool=64)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def ensure_namespace(self, ns: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

        def sa() -> bool:
            try:
                self.core.read_namespaced_service_account("default", ns)
                return True
            except ApiException:
                return False

        wait_for(sa, 60, f"the default ServiceAccount of {ns}")

    def clean(self, ns: str, group: str | None = None, plural: str | None = None, timeout: float = 300) -> None:
        """Deletes every job of that kind, every pod (grace 0) and every Service in ns; waits until
        none is left (nor the Services' Endpoints and EndpointSlices), so that one trial's garbage
        collection never runs during the next."""
        if group and plural:
            with contextlib.suppress(ApiException):
                self.custom.delete_collection_namespaced_custom_object(group, "v1" if group == "kubeflow.org" else
                                                                       "v1alpha1", ns, plural)
        self._delete_pods(ns)
        # Services have no deletecollection; the jobs' own are garbage-collected anyway, this only
        # hurries that along (in parallel).
        names = [s.metadata.name for s in self.core.list_namespaced_service(ns).items]
        if names:
            from concurrent.futures import ThreadPoolExecutor

            def delete(name: str) -> None:
                with contextlib.suppress(ApiException):
                    self.core.delete_namespaced_service(name, ns)

            with ThreadPoolExecutor(max_workers=32) as pool:
                list(pool.map(delete, names))

        def empty() -> bool:
            if self.core.list_namespaced_pod(ns, limit=1).items:
                self._delete_pods(ns)
                return False
            if self.core.list_namespaced_service(ns, limit=1).items:
                return False
            # ... and the controller-manager has garbage-collected the Services' endpoints too
            if self.core.list_namespaced_endpoints(ns, limit=1).items:
                return False
            if client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(ns, limit=1).items:
                return False
            if group and plural:
                v = "v1" if group == "kubeflow.org" else "v1alpha1"
                return not self.custom.list_namespaced_custom_object(group, v, ns, plural, limit=1)["items"]
            return True

        wait_for(empty, timeout, f"namespace {ns} to be empty", interval=0.25)

    def _delete_pods(self, ns: str) -> None:
        # Thousands of pods (P2) take the apiserver longer than its 60 s request timeout: it answers
        # 504 but goes on deleting; the caller polls until the namespace is empty and asks again.
        try:
            self.core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
        except ApiException as e:
            if e.status not in (500, 503, 504):
                raise

    def fail_pod(self, ns: str, name: str, container: str, exit_code: int = 1) -> None:
        """Ends a pod as its kubelet would report it: phase Failed (a crash, exit code != 0) or
        Succeeded (exit code 0), the container terminated with that code."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ok = exit_code == 0
        status = {"status": {
            "phase": "Succeeded" if ok else "Failed",
            "containerStatuses": [{
                "name": container, "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if ok else "Error",
                                         "startedAt": now, "finishedAt": now}}}],
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted" if ok else "PodFailed",
                            "lastTransitionTime": now}],
        }}
        self.core.patch_namespaced_pod_status(name, ns, status)

    def apiserver_metrics(self) -> str:
        r = self.api.call_api("GET", self.api.configuration.host + "/metrics")
        r.read()
        return r.data.decode()


_REQ = re.compile(r'^apiserver_request_total\{(.*)\} ([0-9.e+]+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")


def request_counts(metrics_text: str) -> dict[tuple[str, str, str, str, str], float]:
    """apiserver_request_total by (verb, group, resource, subresource, code)."""
    out: dict[tuple[str, str, str, str, str], float] = {}
    for line in metrics_text.splitlines():
        m = _REQ.match(line)
        if not m:
            continue
        lab = dict(_LABEL.findall(m.group(1)))
        key = (lab.get("verb", ""), lab.get("group", ""), lab.get("resource", ""), lab.get("subresource", ""),
               lab.get("code", ""))
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def request_delta(before: dict, after: dict) -> dict[tuple, float]:
    keys = set(before) | set(after)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys if after.get(k, 0.0) != before.get(k, 0.0)}


# ---- the pod watch -------------------------------------------------------------------------------


@dataclass
class PodRecord:
    name: str
    uid: str
    labels: dict[str, str]
    seen: float  # monotonic time the first event of this pod (this uid) arrived
    running: float | None = None  # first event showing phase Running
    phase: str = ""
    deleted: float | None = None


@dataclass
class PodWatch:
    """Watches every pod of one namespace on its own connection and timestamps each event on
    arrival (time.monotonic), so the harness's own polling never adds latency to a figure."""

    kubeconfig: str
    ns: str
    pods: dict[str, PodRecord] = field(default_factory=dict)  # by uid
    cond: threading.Condition = field(default_factory=threading.Condition)
    n_running: int = 0  # records (since reset) seen Running: a cheap first check for all_times
    events: int = 0
    _stop: bool = False

    def start(self) -> PodWatch:
        self.api = new_client(self.kubeconfig, pool=2)
        self.core = client.CoreV1Api(self.api)
        rv = self._list()
        self.thread = threading.Thread(target=self._run, args=(rv,), daemon=True, name=f"watch-{self.ns}")
        self.thread.start()
        return self

    def _list(self) -> str:
        lst = self.core.list_namespaced_pod(self.ns)
        now = time.monotonic()
        with self.cond:
            for p in lst.items:
                if p.metadata.uid not in self.pods:
                    self.pods[p.metadata.uid] = PodRecord(p.metadata.name, p.metadata.uid, p.metadata.labels or {},
                                                          now, now if p.status.phase == "Running" else None,
                                                          p.status.phase or "")
                    self.n_running += p.status.phase == "Running"
        return lst.metadata.resource_version

    def _run(self, rv: str) -> None:
        while not self._stop:
            try:
                resp = self.core.list_namespaced_pod(self.ns, watch=True, resource_version=rv,
                                                     allow_watch_bookmarks=True, timeout_seconds=240,
                                                     _preload_content=False)
                for line in iter_resp_lines(resp):
                    now = time.monotonic()
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if ev.get("type") == "ERROR":
                        raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                    rv = meta.get("resourceVersion", rv)
                    if ev.get("type") == "BOOKMARK":
                        continue
                    self._event(ev["type"], meta, (obj.get("status") or {}).get("phase") or "", now)
                    if self._stop:
                        return
            except Exception as e:  # expired resourceVersion, dropped connection: list again
                if self._stop:
                    return
                log(f"pod watch {self.ns}: {type(e).__name__}: {str(e)[:200]}; relisting")
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    rv = self._list()

    def _event(self, typ: str, meta: dict[str, Any], phase: str, now: float) -> None:
        uid = meta.get("uid", "")
        with self.cond:
            rec = self.pods.get(uid)
            if rec is None:
                rec = self.pods[uid] = PodRecord(meta.get("name", ""), uid, meta.get("labels") or {}, now)
            rec.phase = phase
            self.events += 1
            if phase == "Running" and rec.running is None:
                rec.running = now
                self.n_running += 1
            if typ == "DELETED" and rec.deleted is None:
                rec.deleted = now
            self.cond.notify_all()

    def stop(self) -> None:
        self._stop = True

    def reset(self) -> None:
        with self.cond:
            self.pods = {u: r for u, r in self.pods.items() if r.deleted is None}
            self.n_running = sum(r.running is not None for r in self.pods.values())

    def select(self, pred: Callable[[PodRecord], bool]) -> list[PodRecord]:
        with self.cond:
            return [r for r in self.pods.values() if pred(r)]

    def wait(self, pred: Callable[[PodWatch], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def all_times(self, pred: Callable[[PodRecord], bool], n: int) -> tuple[float, float] | None:
        """(when the n-th matching pod appeared, when the n-th went Running), or None until then.
        Call with the condition held (inside wait)."""
        if self.n_running < n:
            return None
        recs = [r for r in self.pods.values() if pred(r)]
        running = [r.running for r in recs if r.running is not None]
        if len(recs) < n or len(running) < n:
            return None
        return sorted(r.seen for r in recs)[n - 1], sorted(running)[n - 1]


# ---- the contenders as processes -------------------------------------------------------------------


class Process:
    name = "process"

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.peak_rss = 0
        self._sampling = False

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
        return True

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the process and its children have used so far."""
        import psutil
        try:
            p = psutil.Process(self.proc.pid)
            return sum(sum(x.cpu_times()[:2]) for x in [p, *p.children(recursive=True)])
        except psutil.Error:
            return 0.0

    def rss(self) -> int:
        import psutil
        try:
            p = psutil.Process(self.proc.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return 0

    def sample_rss(self, interval: float = 0.2) -> Callable[[], int]:
        """Samples the RSS until the returned function is called; it returns the peak (bytes)."""
        peak = [self.rss()]
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                peak[0] = max(peak[0], self.rss())

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def done() -> int:
            stop.set()
            t.join()
            return max(peak[0], self.rss())

        return done

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()


class TrainyardOperator(Process):
    name = "trainyard-operator"

    def __init__(self, kubeconfig: str, namespace: str, log_dir: Path, source: str | None = None,
                 name: str = "trainyard-operator"):
        super().__init__(log_dir)
        self.kubeconfig, self.namespace, self.name = kubeconfig, namespace, name
        self.source = source  # another source tree of the operator (BENCH_BASELINE): its operator/ goes first

    def env(self) -> dict[str, str] | None:
        if not self.source:
            return None
        return {"PYTHONPATH": os.pathsep.join([str(Path(self.source) / "operator"),
                                               *filter(None, [os.environ.get("PYTHONPATH")])])}

    def start(self) -> TrainyardOperator:
        self.live_port, self.metrics_port = free_port(), free_port()
        exe = Path(sys.executable).with_name("trainyard")
        self._spawn([str(exe), "operator", "--kubeconfig", self.kubeconfig, "--namespace", self.namespace,
                     "--liveness", f"http://127.0.0.1:{self.live_port}/healthz",
                     "--metrics-port", str(self.metrics_port)], env=self.env())

        def healthy() -> bool:
            self.alive()
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{self.live_port}/healthz", timeout=1) as r:
                return r.status == 200
            return False

        wait_for(healthy, 90, "the Trainyard operator's liveness endpoint", interval=0.2)
        return self

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as r:
            return r.read().decode()


def prom_values(text: str, name: str) -> dict[str, float]:
    """{label-string: value} of one metric family's samples (e.g. name='trainyard_api_requests_total')."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            rest = line[len(name):]
            if rest.startswith("{"):
                labels, _, value = rest[1:].rpartition("} ")
            elif rest.startswith(" "):
                labels, value = "", rest.strip()
            else:
                continue
            with contextlib.suppress(ValueError):
                out[labels] = float(value)
    return out


class KubeflowOperator(Process):
    """Kubeflow's training-operator v1 (PyTorchJob), run as the Deployment in its manifests runs it,
    minus the pod: MY_POD_NAMESPACE set, its webhook certificate (which its cert rotator writes into
    a Secret, normally mounted into the pod) copied from that Secret to the directory it reads."""

    def __init__(self, kubeconfig: str, binary: str, namespace: str, log_dir: Path, extra: list[str] | None = None,
                 name: str = "kubeflow-training-operator"):
        super().__init__(log_dir)
        self.kubeconfig, self.binary, self.namespace, self.extra, self.name = (
            kubeconfig, binary, namespace, extra or [], name)

    def start(self, kube: Kube) -> KubeflowOperator:
        secret = "training-operator-webhook-cert"
        with contextlib.suppress(ApiException):
            kube.core.create_namespaced_secret(self.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=secret)))
        self.probe_port, metrics_port, webhook_port = free_port(), free_port(), free_port()
        self._spawn([self.binary, "--namespace", self.namespace, "--enable-scheme", "pytorchjob",
                     "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
                     "--health-probe-bind-address", f"127.0.0.1:{self.probe_port}",
                     "--webhook-server-port", str(webhook_port), *self.extra],
                    env={"KUBECONFIG": self.kubeconfig, "MY_POD_NAMESPACE": self.namespace})

        def certs() -> bool:
            self.alive()
            data = kube.core.read_namespaced_secret(secret, self.namespace).data or {}
            if "tls.crt" not in data or "tls.key" not in data:
                return False
            KF_CERT_DIR.mkdir(parents=True, exist_ok=True)
            for k in ("tls.crt", "tls.key"):
                tmp = KF_CERT_DIR / f".{k}.{os.getpid()}"
                tmp.write_bytes(base64.b64decode(data[k]))
                tmp.replace(KF_CERT_DIR / k)
            return True

        wait_for(certs, 60, "the training-operator's webhook certificate", interval=0.2)

        def ready() -> bool:
            self.alive()
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=1) as r:
                return r.status == 200
            return False

        wait_for(ready, 120, "the training-operator's readyz", interval=0.2)
        # Its controllers start after readiness (in a goroutine): wait for the PyTorchJob workers.
        wait_for(lambda: self.alive() and "Starting workers" in self.tail(200000), 60,
                 "the PyTorchJob controller to start", interval=0.2)
        return self


class Floor(Process):
    """The floor: a bare client (the official Python client, one thread per pod, the connection pool
    sized to match) creating the same pods, in a process of its own like the operators. It builds the
    manifests first ("prepare") and creates them on "go", so t0 is taken right before the creation."""

    name = "floor"

    def __init__(self, kubeconfig: str, log_dir: Path, threads: int = 64):
        super().__init__(log_dir)
        self.kubeconfig, self.threads = kubeconfig, threads

    def start(self) -> Floor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / "floor.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor", self.kubeconfig, str(self.threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     cwd=REPO, start_new_session=True)
        self._ask("ping")
        return self

    def _ask(self, line: str, timeout: float = 600) -> str:
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        if not out.startswith("ok"):
            raise RuntimeError(f"floor: {line!r} -> {out!r}\n{self.tail()}")
        return out

    def prepare(self, ns: str, prefix: str, jobs: int, workers: int, service: bool = False) -> None:
        self._ask(f"prepare {ns} {prefix} {jobs} {workers}{' svc' if service else ''}")

    def go(self) -> float:
        """Creates the prepared pods; returns the seconds the creation calls took (inside the process)."""
        return float(self._ask("go").split()[1])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        super().stop()


# ---- the two kinds of job ---------------------------------------------------------------------------


def dtj(name: str, workers: int, startup_deadline: int | None = None) -> dict[str, Any]:
    """A fixed-size Trainyard job: OnFailure, Gang scope (the defaults a user gets), no checkpoint claim;
    `startup_deadline` sets spec.runPolicy.startupDeadlineSeconds (default 600)."""
    body: dict[str, Any] = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "workers": workers,
            "failurePolicy": {"restartPolicy": "OnFailure", "restartScope": "Gang", "backoffLimit": 3},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": IMAGE,
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_digits"]}]}},
        },
    }
    if startup_deadline is not None:
        body["spec"]["runPolicy"] = {"startupDeadlineSeconds": startup_deadline}
    return body


def pytorchjob(name: str, workers: int, restart_policy: str = "OnFailure") -> dict[str, Any]:
    """The equivalent PyTorchJob v1: Master 1 + Worker N-1 (the canonical layout: the master hosts
    MASTER_ADDR, every replica gets WORLD_SIZE=N), the same image and command."""
    def spec(replicas: int) -> dict[str, Any]:
        return {"replicas": replicas, "restartPolicy": restart_policy, "template": {"spec": {"containers": [{
            "name": "pytorch", "image": IMAGE,
            "command": ["torchrun", "-m", "trainyard_trainer.examples.train_digits"]}]}}}

    return {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": name},
        "spec": {"pytorchReplicaSpecs": {"Master": spec(1), "Worker": spec(workers - 1)}},
    }


def job_of(rec: PodRecord) -> str:
    return rec.labels.get("trainyard.dev/job-name") or rec.labels.get("training.kubeflow.org/job-name") or ""
