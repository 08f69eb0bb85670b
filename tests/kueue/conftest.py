"""The Kueue tier: real Kueue (v0.17.1, built from Go modules by e2e/kueue/build.sh, cached) run
as a local process against a control plane of its own (e2e/cluster/up.sh trainyard-kueue), with
the certificates its webhooks and CRD conversion need made by e2e/kueue/up.sh, and the real
operator process as the chart's ServiceAccount, started once Kueue's API is served.

Kueue runs with waitForPodsReady (timeout 60 s, recoveryTimeout 30 s), so that a gang restart that
Kueue saw as a loss of readiness would be evicted: kueue#14811's loop would show here.

Same rule as the cluster tier: with CI=true a Kueue that cannot be built or started fails the run;
elsewhere a missing Go toolchain skips the tier with one loud line. Its own cluster, so Kueue's
webhooks never sit in front of the cluster tier's pods.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from .. import prebuild
from ..cluster.conftest import (  # noqa: F401 - _operator_stays_healthy: the cluster tier's autouse check, here too
    BIN,
    OPERATOR_NS,
    REPO,
    Cluster,
    Operator,
    _operator_stays_healthy,
    _service_account_kubeconfig,
)
from ..cluster.helpers import Kube
from ..support import tier_unavailable, wait_for

CLUSTER_NAME = os.environ.get("TRAINYARD_KUEUE_CLUSTER", "trainyard-kueue")
KUEUE_SCRIPTS = REPO / "e2e" / "kueue"
CLUSTER_SCRIPTS = REPO / "e2e" / "cluster"
CACHE = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))
POOL_LABEL = {"pool": "trainyard-kueue"}
TAINT = {"key": "trainyard.dev/pool", "value": "kueue", "effect": "NoSchedule"}
TOLERATION = {"key": "trainyard.dev/pool", "operator": "Equal", "value": "kueue", "effect": "NoSchedule"}
KUEUE_ENV = {"KUEUE_WAIT_FOR_PODS_READY": "60s", "KUEUE_WAIT_FOR_PODS_READY_RECOVERY": "30s"}


def pytest_configure(config):
    config.addinivalue_line("markers", "kueue: needs a control plane and a real Kueue (started by the session fixture)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kueue/" in str(item.fspath):
            item.add_marker(pytest.mark.kueue)


def _unavailable(why: str) -> None:
    tier_unavailable("Kueue", why)


def _script(path: Path, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        r = subprocess.run([str(path), *args], text=True, capture_output=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        _unavailable(f"{path.relative_to(REPO)} timed out after {timeout:.0f}s")
    if r.returncode != 0:
        _unavailable(f"{path.relative_to(REPO)} {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


@pytest.fixture(scope="session")
def kueue_cluster() -> Iterator[Cluster]:
    kueue_bin = CACHE / "bin" / "current" / "kueue"
    if shutil.which("go") is None and not (kueue_bin.exists() and (BIN / "kube-apiserver").exists()):
        _unavailable("no Go toolchain to build the control plane and Kueue (install Go 1.26)")
    prebuild.wait("cluster/build.sh", 3600)  # background builds of them (tests/prebuild.py)
    _script(CLUSTER_SCRIPTS / "build.sh", timeout=3600)
    prebuild.wait("kueue/build.sh", 3600)
    _script(KUEUE_SCRIPTS / "build.sh", timeout=3600)  # cached: 0.1 s warm; ~20 min cold here
    _script(CLUSTER_SCRIPTS / "up.sh", CLUSTER_NAME, timeout=600)
    kubeconfig = _script(KUEUE_SCRIPTS / "up.sh", CLUSTER_NAME, timeout=600, env=KUEUE_ENV).strip().splitlines()[-1]
    cluster = Cluster(kubeconfig, str(BIN / "kubectl"), str(BIN / "helm"), local=True)
    yield cluster
    subprocess.run([str(KUEUE_SCRIPTS / "down.sh"), CLUSTER_NAME], capture_output=True)
    if os.environ.get("TRAINYARD_KEEP_CLUSTER") != "1":
        subprocess.run([str(CLUSTER_SCRIPTS / "down.sh"), CLUSTER_NAME], capture_output=True)


@pytest.fixture(scope="session")
def kube(kueue_cluster: Cluster) -> Kube:
    return Kube(config.new_client_from_config(config_file=kueue_cluster.kubeconfig))


def _apply(cluster: Cluster, manifest: str) -> None:
    cluster.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)


@pytest.fixture(scope="session")
def pool(kueue_cluster: Cluster, kube: Kube) -> str:
    """Two tainted kwok nodes (8 cpu each) and the ResourceFlavor that places pods on them."""
    import yaml

    nodes = [{"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": f"kueue-pool-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                           "labels": {**POOL_LABEL, "type": "kwok", "kubernetes.io/hostname": f"kueue-pool-{i}"}},
              "spec": {"taints": [TAINT]},
              "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                         "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}}} for i in range(2)]
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "pool"},
              "spec": {"nodeLabels": POOL_LABEL, "nodeTaints": [TAINT], "tolerations": [TOLERATION]}}
    _apply(kueue_cluster, yaml.safe_dump_all([*nodes, flavor]))
    wait_for(lambda: all(any(c.type == "Ready" and c.status == "True" for c in kube.core.read_node(n).status.conditions
                             or []) for n in ("kueue-pool-0", "kueue-pool-1")), 60, "the pool's kwok nodes Ready")
    return "pool"


@pytest.fixture(scope="session")
def operator(kueue_cluster: Cluster, pool: str, tmp_path_factory) -> Iterator[Operator]:
    """The chart installed (its RBAC, the CRD) and the operator as its ServiceAccount, started
    after Kueue: it reads whether Kueue's API is served when it starts."""
    cluster = kueue_cluster
    subprocess.run([cluster.helm, "upgrade", "--install", "trainyard", str(REPO / "charts" / "trainyard"),
                    "--namespace", OPERATOR_NS, "--create-namespace", "--kubeconfig", cluster.kubeconfig,
                    "--wait", "--timeout", "120s"], check=True, capture_output=True, text=True)
    cluster.kubectl_run("apply", "--server-side", "--force-conflicts", "-f",
                        str(REPO / "crds" / "trainyard.dev_distributedtrainingjobs.yaml"))
    cluster.kubectl_run("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/distributedtrainingjobs.trainyard.dev")
    op = Operator(_service_account_kubeconfig(cluster), tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


@pytest.fixture
def ns(kube: Kube, kueue_cluster: Cluster, operator: Operator) -> Iterator[str]:
    """A namespace with LocalQueue `lq` in a ClusterQueue of its own: 4 cpu / 8Gi of flavour pool."""
    name = f"k-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    custom = kube.custom
    custom.create_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": f"cq-{name}"},
        "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}},
                 "queueingStrategy": "BestEffortFIFO",
                 "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                     "name": "pool", "resources": [{"name": "cpu", "nominalQuota": "4"},
                                                   {"name": "memory", "nominalQuota": "8Gi"}]}]}]}})
    custom.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", name, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "lq", "namespace": name},
        "spec": {"clusterQueue": f"cq-{name}"}})

    def active() -> bool:
        cq = custom.get_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues", f"cq-{name}")
        return any(c["type"] == "Active" and c["status"] == "True" for c in (cq.get("status") or {}).get("conditions")
                   or [])

    wait_for(active, 60, f"ClusterQueue cq-{name} Active")
    yield name
    kube.core.delete_namespace(name)
    custom.delete_cluster_custom_object("kueue.x-k8s.io", "v1beta2", "clusterqueues", f"cq-{name}")
