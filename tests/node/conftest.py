"""The node tier: a real kubelet node (containerd, runc, CNI bridge, CoreDNS; e2e/node) joined to
the project's control plane (e2e/cluster, cluster "trainyard-node"), running the real images.

The session fixture builds what is missing (the control plane's and the node's binaries, the
images; all cached, so a warm start takes seconds), brings the node up, imports the images into
its containerd, and takes the node and its cluster down at the end (TRAINYARD_KEEP_NODE=1 keeps
them, e.g. for `make node-smoke` against a node already up). With CI=true a node that cannot
start fails the run; elsewhere a missing Docker, Go or root skips the tier with one loud line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import prebuild
from tests.support import tier_unavailable

from ..support import wait_for

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "e2e"
CACHE = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))
BIN = CACHE / "bin" / "current"
LOGS = CACHE / "logs"
NODE_NAME = "trainyard-node"
STORAGE_CLASS = "trainyard-local"
# Cold: the control plane (~8 min), kubelet, CoreDNS and crictl (~10 min), the images (~10 min).
BUILD_TIMEOUT = 3600

def pytest_configure(config):
    config.addinivalue_line("markers", "node: needs the real kubelet node (e2e/node), started by the session fixture")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/node/" in str(item.fspath):
            item.add_marker(pytest.mark.node)


def _unavailable(why: str) -> None:
    tier_unavailable("node", why)


def _step(what: str, cmd: list[str], timeout: float) -> str:
    """Runs one setup script; its stderr (the script's log lines) is shown on failure."""
    try:
        r = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        _unavailable(f"{what} timed out after {timeout}s ({' '.join(cmd)})")
    if r.returncode != 0:
        _unavailable(f"{what} failed ({' '.join(cmd)}, exit {r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def _image_refs() -> tuple[str, str]:
    chart = yaml.safe_load((REPO / "charts" / "trainyard" / "Chart.yaml").read_text())
    example = (REPO / "examples" / "digits-ddp.yaml").read_text()
    trainer = next(line.split("image:")[1].strip() for line in example.splitlines()
                   if line.strip().startswith("image: trainyard/trainer:"))
    return f"trainyard/operator:{chart['appVersion']}", trainer


@dataclass
class Node:
    kubeconfig: str
    kubectl_bin: str
    helm: str
    operator_image: str
    trainer_image: str
    timings: dict[str, float]

    @property
    def coredns_log(self) -> Path:
        """The node's CoreDNS query log (one line per question: client, type, name, rcode)."""
        return CACHE / "node" / "logs" / "coredns.log"

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], text=True,
                           capture_output=True, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        return r

    def apply(self, manifests: list[dict[str, Any]] | dict[str, Any], ns: str | None = None) -> None:
        docs = manifests if isinstance(manifests, list) else [manifests]
        self.kubectl(*(["-n", ns] if ns else []), "apply", "-f", "-",
                     input="\n---\n".join(yaml.safe_dump(d) for d in docs))

    def get(self, kind: str, name: str, ns: str | None = None, managed_fields: bool = False) -> dict[str, Any] | None:
        r = self.kubectl(*(["-n", ns] if ns else []), "get", kind, name, "-o", "json",
                         *(["--show-managed-fields"] if managed_fields else []), check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def pod_phase(self, ns: str, name: str) -> str | None:
        pod = self.get("pod", name, ns)
        return (pod or {}).get("status", {}).get("phase")

    def logs(self, ns: str, name: str, *extra: str) -> str:
        return self.kubectl("-n", ns, "logs", name, *extra, check=False).stdout

    def diagnostics(self, ns: str) -> str:
        out = [self.kubectl("-n", ns, "get", "pods,pvc,svc,events", "-o", "wide", check=False).stdout]
        for line in self.kubectl("-n", ns, "get", "pods", "-o", "name", check=False).stdout.split():
            out.append(f"--- {line}\n" + self.kubectl("-n", ns, "logs", line, "--all-containers", "--tail=60",
                                                       check=False).stdout)
        return "\n".join(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed node test shows its namespace as it was then (jobs' status, events, pods and their
    logs): the pods of a restarted gang are gone by the time anyone reads CI's output."""
    outcome = yield
    report = outcome.get_result()
    node, ns = item.funcargs.get("chart") or item.funcargs.get("node"), item.funcargs.get("ns")
    if report.when == "call" and report.failed and isinstance(node, Node) and isinstance(ns, str):
        with contextlib.suppress(Exception):
            jobs = node.kubectl("-n", ns, "get", "dtj", "-o", "yaml", check=False).stdout
            events = node.kubectl("-n", ns, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
            report.sections.append((f"namespace {ns} at the failure",
                                    f"{jobs[-6000:]}\n--- events\n{events[-6000:]}\n{node.diagnostics(ns)[-12000:]}"))


@pytest.fixture(scope="session")
def node() -> Iterator[Node]:
    if os.geteuid() != 0:
        _unavailable("the node needs root (network namespaces, mounts, cgroups)")
    if shutil.which("go") is None and not (BIN / "kubelet").exists():
        _unavailable("no Go toolchain to build the control plane and the kubelet (install Go 1.26)")
    if shutil.which("docker") is None and shutil.which("dockerd") is None and shutil.which("apt-get") is None:
        _unavailable("no Docker to build the images, and no apt-get to install Debian's docker.io")
    timings: dict[str, float] = {}

    def timed(name: str, what: str, cmd: list[str], timeout: float = BUILD_TIMEOUT) -> str:
        t0 = time.monotonic()
        prebuild.wait(str(Path(cmd[0]).relative_to(E2E)), timeout)  # a background run of it (tests/prebuild.py)
        out = _step(what, cmd, timeout)
        timings[name] = round(time.monotonic() - t0, 1)
        return out

    timed("deps", "installing the Debian packages (e2e/node/deps.sh)", [str(E2E / "node" / "deps.sh")], 1800)
    timed("cluster-tools", "building the control plane (e2e/cluster/build.sh)", [str(E2E / "cluster" / "build.sh")])
    timed("node-tools", "building kubelet, CoreDNS, crictl, the sandbox image (e2e/node/build.sh)",
          [str(E2E / "node" / "build.sh")])
    timed("images", "building the images (e2e/images/build.sh)", [str(E2E / "images" / "build.sh")])
    def down() -> None:
        if os.environ.get("TRAINYARD_KEEP_NODE") != "1":
            subprocess.run([str(E2E / "node" / "down.sh"), "--cluster"], capture_output=True, timeout=600)

    try:
        up = timed("node-up", "starting the node (e2e/node/up.sh)", [str(E2E / "node" / "up.sh")], 900)
        kubeconfig = up.strip().splitlines()[-1]
        operator_image, trainer_image = _image_refs()
        timed("load-images", "importing the images into the node's containerd (e2e/node/load-images.sh)",
              [str(E2E / "node" / "load-images.sh"), operator_image, trainer_image], 1800)
    except BaseException:  # a half-started node (pytest's skip and fail are exceptions too) goes down
        down()
        raise
    print(f"\n[node tier] setup times (s): {timings}", file=sys.stderr)
    yield Node(kubeconfig, str(BIN / "kubectl"), str(BIN / "helm"), operator_image, trainer_image, timings)
    down()


def recycle_volumes(node: Node) -> list[str]:
    """The node's local PVs are Retain (like most real storage): a claim's deletion leaves its PV
    Released, bound to nobody, for good. Released means no pod uses it any more (the claim's
    protection finalizer held the claim until then): empty its directory and make it Available
    again, as up.sh does at start, so a long session never runs out of volumes."""
    pvs = json.loads(node.kubectl("get", "pv", "-l", "trainyard.dev/local-pv=true", "-o", "json").stdout)["items"]
    done = []
    for pv in pvs:
        if pv.get("status", {}).get("phase") != "Released":
            continue
        root = Path(pv["spec"]["local"]["path"])
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        os.chown(root, 0, 0)
        root.chmod(0o755)
        node.kubectl("patch", "pv", pv["metadata"]["name"], "--type=json",
                     "-p", '[{"op": "remove", "path": "/spec/claimRef"}]')
        done.append(pv["metadata"]["name"])
    return done


@pytest.fixture
def ns(node: Node) -> Iterator[str]:
    recycle_volumes(node)
    name = f"n-{uuid.uuid4().hex[:8]}"
    node.kubectl("create", "namespace", name)
    wait_for(lambda: node.get("serviceaccount", "default", name), 60, f"default ServiceAccount in {name}")
    yield name
    node.kubectl("delete", "namespace", name, "--wait=false", check=False)


OPERATOR_NS = "trainyard-system"
SELECTOR = "app.kubernetes.io/name=trainyard,app.kubernetes.io/instance=trainyard"


@pytest.fixture(scope="session")
def chart(node: Node) -> Iterator[Node]:
    """helm upgrade --install with the chart's default values: the image is the chart's default
    (trainyard/operator:<appVersion>, IfNotPresent), imported into the node's containerd."""
    r = subprocess.run([node.helm, "upgrade", "--install", "trainyard", str(REPO / "charts" / "trainyard"),
                        "--namespace", OPERATOR_NS, "--create-namespace", "--kubeconfig", node.kubeconfig,
                        "--wait", "--timeout", "300s"], text=True, capture_output=True, timeout=400)
    if r.returncode != 0:
        raise AssertionError(f"helm install failed:\n{r.stderr}\n{node.diagnostics(OPERATOR_NS)}")
    # helm installs a chart's CRD only once; make sure this run's CRD is the one being tested.
    node.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                 str(REPO / "crds" / "trainyard.dev_distributedtrainingjobs.yaml"))
    node.kubectl("wait", "--for=condition=Available", "--timeout=180s", "-n", OPERATOR_NS, "deployment/trainyard")
    yield node
    subprocess.run([node.helm, "uninstall", "trainyard", "--namespace", OPERATOR_NS, "--kubeconfig", node.kubeconfig,
                    "--wait", "--timeout", "120s"], capture_output=True, timeout=180)


def operator_pod(node: Node) -> dict:
    pods = [p for p in yaml.safe_load(node.kubectl("get", "pods", "-n", OPERATOR_NS, "-l", SELECTOR, "-o", "json").stdout)
            ["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]
