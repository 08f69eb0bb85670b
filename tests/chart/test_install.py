"""`helm install`, `upgrade` and `uninstall` of the chart on a real control plane (kwok cluster
"trainyard-chart": real apiserver, controller-manager and scheduler; kwok reports the operator's
pod Running and Ready without running it).

The tests up to the upgrade share one release (install, check, upgrade, in file order); the
uninstall test makes releases of its own, so it passes alone and in any order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import CHART, KwokCluster
from .test_template import APP_VERSION, LABELS, RULES, SELECTOR

pytestmark = pytest.mark.cluster

RELEASE = "trainyard"
NS = "trainyard-system"
CRD = "distributedtrainingjobs.trainyard.dev"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"

SERVICE_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def wait_until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)
    return value


def get(c: KwokCluster, *args: str) -> dict[str, Any] | None:
    out = c.kubectl_run("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        assert "NotFound" in out.stderr, out.stderr
        return None
    return json.loads(out.stdout)


def items(c: KwokCluster, kinds: str, *args: str) -> list[str]:
    out = c.kubectl_run("get", kinds, *args, "-o", "json")
    return sorted(f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
                  for i in json.loads(out.stdout)["items"])


@pytest.fixture(scope="module")
def release(kwok_cluster: KwokCluster) -> Iterator[KwokCluster]:
    c = kwok_cluster
    out = c.helm_run("install", RELEASE, str(CHART), "--namespace", NS, "--create-namespace",
                     "--wait", "--timeout", "120s")
    c.install_output = out.stdout  # type: ignore[attr-defined]
    yield c
    c.helm_run("uninstall", RELEASE, "--namespace", NS, "--wait", check=False)
    c.kubectl_run("delete", "crd", CRD, "servicemonitors.monitoring.coreos.com", "--ignore-not-found", check=False)


def test_install_creates_every_object_with_the_standard_labels(release):
    c = release
    objects = {
        ("serviceaccount", NS, "trainyard"),
        ("deployment", NS, "trainyard"),
        ("service", NS, "trainyard-metrics"),
        ("clusterrole", None, "trainyard"),
        ("clusterrolebinding", None, "trainyard"),
        ("clusterrole", None, "trainyard-nodes"),
        ("clusterrolebinding", None, "trainyard-nodes"),
        ("clusterrole", None, "trainyard-kueue"),
        ("clusterrolebinding", None, "trainyard-kueue"),
    }
    for kind, ns, name in objects:
        obj = get(c, kind, name, *(["-n", ns] if ns else []))
        assert obj is not None, f"{kind}/{name} missing"
        assert obj["metadata"]["labels"].items() >= LABELS.items(), (kind, obj["metadata"]["labels"])
        assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert items(c, "deployment,service,serviceaccount,role,rolebinding", "-n", NS, "-l", INSTANCE) == [
        "Deployment/trainyard-system/trainyard", "Service/trainyard-system/trainyard-metrics",
        "ServiceAccount/trainyard-system/trainyard"]
    assert items(c, "clusterrole,clusterrolebinding", "-l", INSTANCE) == [
        "ClusterRole//trainyard", "ClusterRole//trainyard-kueue", "ClusterRole//trainyard-nodes",
        "ClusterRoleBinding//trainyard", "ClusterRoleBinding//trainyard-kueue", "ClusterRoleBinding//trainyard-nodes"]
    assert get(c, "clusterrole", "trainyard")["rules"] == RULES
    assert "kubectl apply --server-side -f charts/trainyard/crds/" in c.install_output  # NOTES.txt


def test_crd_is_installed_and_established(release):
    crd = get(release, "crd", CRD)
    conditions = {x["type"]: x["status"] for x in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    release.kubectl_run("get", "dtj", "-A")  # the API is served


def test_deployment_becomes_available_with_the_hardened_pod(release):
    c = release
    c.kubectl_run("wait", "--for=condition=Available", "--timeout=60s", "-n", NS, "deployment/trainyard")
    dep = get(c, "deployment", "trainyard", "-n", NS)
    assert (dep["spec"]["replicas"], dep["spec"]["strategy"]["type"]) == (1, "Recreate")
    assert dep["status"]["availableReplicas"] == 1
    pods = json.loads(c.kubectl_run("get", "pods", "-n", NS, "-l",
                                    ",".join(f"{k}={v}" for k, v in SELECTOR.items()), "-o", "json").stdout)["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Running"
    assert pod["metadata"]["labels"].items() >= LABELS.items()
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "trainyard"
    [ctr] = spec["containers"]
    assert ctr["image"] == f"trainyard/operator:{APP_VERSION}"
    assert ctr["command"] == ["trainyard", "operator"]
    assert ctr["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                      "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the service selects exactly the operator's pod
    endpoints = wait_until(lambda: get(c, "endpointslices", "-n", NS, "-l",
                                       "kubernetes.io/service-name=trainyard-metrics")["items"], 30, "endpoints")
    assert endpoints[0]["ports"] == [{"name": "metrics", "port": 9090, "protocol": "TCP"}]


def test_bad_value_is_refused_and_creates_nothing(release):
    out = release.helm_run("install", "bad", str(CHART), "--namespace", "bad-values", "--create-namespace",
                           "--set", "replicas=2", check=False)
    assert out.returncode != 0
    assert "at '/replicas': value must be 1" in out.stderr
    assert "bad" not in release.helm_run("list", "-A", "-q").stdout.split()
    assert get(release, "namespace", "bad-values") is None


def test_upgrade_to_namespaced_rbac_json_logs_and_a_service_monitor(release):
    c = release
    c.kubectl_run("create", "namespace", "team-a")
    c.kubectl_run("apply", "-f", "-", input=SERVICE_MONITOR_CRD)  # the Prometheus operator's CRD, minimal
    c.kubectl_run("wait", "--for=condition=Established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com")
    before = get(c, "deployment", "trainyard", "-n", NS)["metadata"]["generation"]
    c.helm_run("upgrade", RELEASE, str(CHART), "--namespace", NS, "--wait", "--timeout", "120s",
               "--set", "watchNamespaces={team-a}", "--set", "logFormat=json",
               "--set", "metrics.serviceMonitor.enabled=true")
    dep = get(c, "deployment", "trainyard", "-n", NS)
    assert dep["metadata"]["generation"] == before + 1
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--liveness=http://0.0.0.0:8080/healthz", "--log-format", "json", "--cluster-domain", "cluster.local",
        "--metrics-port", "9090", "--namespace", "team-a"]
    c.kubectl_run("wait", "--for=condition=Available", "--timeout=60s", "-n", NS, "deployment/trainyard")
    # namespaced mode: a Role in the watched namespace, no cluster-wide grant any more
    # nodes and ResourceFlavors are cluster-scoped: their read-only ClusterRoles stay with namespaced RBAC
    assert items(c, "clusterrole,clusterrolebinding", "-l", INSTANCE) == [
        "ClusterRole//trainyard-kueue", "ClusterRole//trainyard-nodes", "ClusterRoleBinding//trainyard-kueue",
        "ClusterRoleBinding//trainyard-nodes"]
    assert items(c, "role,rolebinding", "-n", "team-a", "-l", INSTANCE) == [
        "Role/team-a/trainyard", "RoleBinding/team-a/trainyard"]
    assert get(c, "role", "trainyard", "-n", "team-a")["rules"] == RULES
    monitor = get(c, "servicemonitor", "trainyard", "-n", NS)
    assert monitor["metadata"]["labels"].items() >= LABELS.items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_uninstall_leaves_nothing_but_the_crd(kwok_cluster, mode):
    """Helm never deletes a chart's crds/ on uninstall (nor upgrades them): deleting the CRD
    would delete every DistributedTrainingJob in the cluster. Removing it is the user's call.

    A release of its own (with a ServiceMonitor, and in namespaced mode a watched namespace), so
    the test passes alone and in any order."""
    c = kwok_cluster
    release, ns, team = f"trainyard-uninstall-{mode}", f"uninstall-{mode}", f"uninstall-{mode}-team"
    instance = f"app.kubernetes.io/instance={release}"
    c.helm_run("uninstall", release, "--namespace", ns, "--wait", "--ignore-not-found", check=False)
    c.kubectl_run("apply", "-f", "-", input=SERVICE_MONITOR_CRD)
    c.kubectl_run("wait", "--for=condition=Established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com")
    c.kubectl_run("apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {team}}}\n")
    extra = ["--set", f"watchNamespaces={{{team}}}"] if mode == "namespaced" else []
    c.helm_run("install", release, str(CHART), "--namespace", ns, "--create-namespace", "--wait", "--timeout", "120s",
               "--set", "metrics.serviceMonitor.enabled=true", *extra)
    rbac = [("role", release, team), ("rolebinding", release, team)] if mode == "namespaced" else \
        [("clusterrole", release, None), ("clusterrolebinding", release, None)]
    objects = [("deployment", release, ns), ("serviceaccount", "trainyard", ns), ("service", f"{release}-metrics", ns),
               ("servicemonitor", release, ns), *rbac]
    try:
        for kind, name, where in objects:  # there is something to remove: the test cannot pass by accident
            assert get(c, kind, name, *(["-n", where] if where else [])) is not None, f"{kind}/{name} not installed"
        c.helm_run("uninstall", release, "--namespace", ns, "--wait", "--timeout", "120s")
        assert release not in c.helm_run("list", "-A", "-q").stdout.split()
        for kind, name, where in objects:
            assert get(c, kind, name, *(["-n", where] if where else [])) is None, f"{kind}/{name} left behind"
        for where in (ns, team):
            wait_until(lambda where=where: items(c, "all,serviceaccounts,roles,rolebindings,servicemonitors", "-n",
                                                 where, "-l", instance) == [], 60,
                       f"{where} emptied (pods are garbage-collected)")
        assert items(c, "clusterroles,clusterrolebindings", "-l", instance) == []
        crd = get(c, "crd", CRD)
        assert crd is not None, "Helm keeps a chart's CRDs on uninstall"
        assert {x["type"]: x["status"] for x in crd["status"]["conditions"]}["Established"] == "True"
    finally:
        c.helm_run("uninstall", release, "--namespace", ns, "--ignore-not-found", check=False)
        c.kubectl_run("delete", "namespace", ns, team, "--ignore-not-found", "--wait=false", check=False)
