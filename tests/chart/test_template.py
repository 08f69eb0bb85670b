"""`helm template` snapshots: every object the chart renders, compared whole to what we expect."""

from __future__ import annotations

import copy
from typing import Any

import click
import pytest
import typer.main
import yaml

from trainyard.cli import app

from .conftest import CHART, REPO

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
VERSION = CHART_META["version"]
APP_VERSION = CHART_META["appVersion"]

SELECTOR = {"app.kubernetes.io/name": "trainyard", "app.kubernetes.io/instance": "trainyard"}
LABELS = {
    **SELECTOR,
    "app.kubernetes.io/version": APP_VERSION,
    "app.kubernetes.io/component": "operator",
    "app.kubernetes.io/part-of": "trainyard",
    "app.kubernetes.io/managed-by": "Helm",
    "helm.sh/chart": f"trainyard-{VERSION}",
}
NS = "trainyard-system"

# Exactly what the operator needs (see _helpers.tpl), in every mode.
RULES = [
    {"apiGroups": ["trainyard.dev"], "resources": ["distributedtrainingjobs"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": ["trainyard.dev"], "resources": ["distributedtrainingjobs/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["services", "persistentvolumeclaims"], "verbs": ["get", "create"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "list"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["get", "create"]},
    # Kueue (route A): the Workload of a queued job
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads/status"], "verbs": ["patch"]},
]
NODE_RULES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
KUEUE_RULES = [{"apiGroups": ["kueue.x-k8s.io"], "resources": ["resourceflavors"], "verbs": ["get"]}]
SUBJECTS = [{"kind": "ServiceAccount", "name": "trainyard", "namespace": NS}]

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "trainyard", "namespace": NS, "labels": LABELS},
    "spec": {
        "replicas": 1,
        "revisionHistoryLimit": 3,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": SELECTOR},
        "template": {
            "metadata": {"labels": LABELS},
            "spec": {
                "serviceAccountName": "trainyard",
                "automountServiceAccountToken": True,
                "enableServiceLinks": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "operator",
                    "image": f"trainyard/operator:{APP_VERSION}",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["trainyard", "operator"],
                    "args": ["--liveness=http://0.0.0.0:8080/healthz", "--log-format", "plain",
                             "--cluster-domain", "cluster.local", "--metrics-port", "9090"],
                    "ports": [{"name": "healthz", "containerPort": 8080, "protocol": "TCP"},
                              {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "initialDelaySeconds": 10,
                                      "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "periodSeconds": 5,
                                       "timeoutSeconds": 5},
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                    "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    },
}

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "trainyard-metrics", "namespace": NS, "labels": LABELS},
    "spec": {"type": "ClusterIP", "selector": SELECTOR,
             "ports": [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]},
}

SERVICE_ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "trainyard", "namespace": NS, "labels": LABELS}}

CLUSTER_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "trainyard", "labels": LABELS}, "rules": RULES}
CLUSTER_ROLE_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "trainyard", "labels": LABELS},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "trainyard"},
    "subjects": SUBJECTS,
}


NODE_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "trainyard-nodes", "labels": LABELS}, "rules": NODE_RULES}
NODE_ROLE_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "trainyard-nodes", "labels": LABELS},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "trainyard-nodes"},
    "subjects": SUBJECTS,
}


KUEUE_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": "trainyard-kueue", "labels": LABELS}, "rules": KUEUE_RULES}
KUEUE_ROLE_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "trainyard-kueue", "labels": LABELS},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "trainyard-kueue"},
    "subjects": SUBJECTS,
}


def role(ns: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "trainyard", "namespace": ns, "labels": LABELS}, "rules": RULES}


def role_binding(ns: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "trainyard", "namespace": ns, "labels": LABELS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainyard"},
            "subjects": SUBJECTS}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_defaults_render_exactly_these_objects(template):
    out = template()
    assert out.kinds() == [("ClusterRole", "trainyard"), ("ClusterRole", "trainyard-kueue"),
                           ("ClusterRole", "trainyard-nodes"), ("ClusterRoleBinding", "trainyard"),
                           ("ClusterRoleBinding", "trainyard-kueue"), ("ClusterRoleBinding", "trainyard-nodes"),
                           ("Deployment", "trainyard"), ("Service", "trainyard-metrics"),
                           ("ServiceAccount", "trainyard")]
    assert out.get("ClusterRole", "trainyard-nodes") == NODE_ROLE
    assert out.get("ClusterRoleBinding", "trainyard-nodes") == NODE_ROLE_BINDING
    assert out.get("ClusterRole", "trainyard-kueue") == KUEUE_ROLE
    assert out.get("ClusterRoleBinding", "trainyard-kueue") == KUEUE_ROLE_BINDING
    assert out.get("Deployment", "trainyard") == DEPLOYMENT
    assert out.get("Service", "trainyard-metrics") == SERVICE
    assert out.get("ServiceAccount", "trainyard") == SERVICE_ACCOUNT
    assert out.get("ClusterRole", "trainyard") == CLUSTER_ROLE
    assert out.get("ClusterRoleBinding", "trainyard") == CLUSTER_ROLE_BINDING


def test_watch_namespaces_give_roles_and_namespace_flags(template):
    out = template({"watchNamespaces": ["team-a", "team-b"]})
    assert out.kinds() == [("ClusterRole", "trainyard-kueue"), ("ClusterRole", "trainyard-nodes"),
                           ("ClusterRoleBinding", "trainyard-kueue"), ("ClusterRoleBinding", "trainyard-nodes"),
                           ("Deployment", "trainyard"), ("Role", "trainyard"), ("Role", "trainyard"),
                           ("RoleBinding", "trainyard"), ("RoleBinding", "trainyard"),
                           ("Service", "trainyard-metrics"), ("ServiceAccount", "trainyard")]
    for ns in ("team-a", "team-b"):
        assert out.get("Role", "trainyard", ns) == role(ns)
        assert out.get("RoleBinding", "trainyard", ns) == role_binding(ns)
    expected = copy.deepcopy(DEPLOYMENT)
    container(expected)["args"] += ["--namespace", "team-a", "--namespace", "team-b"]
    assert out.get("Deployment", "trainyard") == expected


def test_service_monitor_off_by_default_and_exact_when_on(template):
    assert "ServiceMonitor" not in [k for k, _ in template().kinds()]
    out = template({"metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "interval": "15s",
                                                                  "labels": {"release": "prometheus"}}}})
    assert out.get("ServiceMonitor", "trainyard") == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "trainyard", "namespace": NS, "labels": {**LABELS, "release": "prometheus"}},
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "namespaceSelector": {"matchNames": [NS]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}],
        },
    }
    svc = out.get("Service", "trainyard-metrics")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    c = container(out.get("Deployment", "trainyard"))
    assert c["args"][-2:] == ["--metrics-port", "9100"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]


def test_every_value_lands_where_it_should(template):
    values = {
        "image": {"repository": "ghcr.io/acme/trainyard-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "logFormat": "json",
        "clusterDomain": "corp.example",
        "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "serviceAccount": {"create": True, "name": "ops", "annotations": {"iam": "role"}},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "ml"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
        "podSecurityContext": {"runAsUser": 20000, "fsGroup": 20000},
        "securityContext": {"readOnlyRootFilesystem": False},
        "extraArgs": ["--verbose"],
    }
    out = template(values)
    expected = copy.deepcopy(DEPLOYMENT)
    pod = expected["spec"]["template"]
    pod["metadata"]["labels"] = {**LABELS, "team": "ml"}
    pod["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}
    spec = pod["spec"]
    spec.update(serviceAccountName="ops", priorityClassName="system-cluster-critical",
                imagePullSecrets=[{"name": "regcred"}], nodeSelector={"kubernetes.io/os": "linux"},
                tolerations=values["tolerations"], affinity={"podAntiAffinity": {}})
    spec["securityContext"].update(runAsUser=20000, fsGroup=20000)  # merged over the defaults, key by key
    c = spec["containers"][0]
    c.update(image="ghcr.io/acme/trainyard-operator:1.2.3", imagePullPolicy="Always", resources=values["resources"])
    c["args"] = ["--liveness=http://0.0.0.0:8080/healthz", "--log-format", "json", "--cluster-domain", "corp.example",
                 "--metrics-port", "9090", "--verbose"]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    assert out.get("Deployment", "trainyard") == expected
    assert out.get("ServiceAccount", "ops")["metadata"]["annotations"] == {"iam": "role"}
    assert out.get("ClusterRoleBinding", "trainyard")["subjects"] == [{"kind": "ServiceAccount", "name": "ops",
                                                                       "namespace": NS}]


def test_existing_service_account_is_bound_not_created(template):
    out = template({"serviceAccount": {"create": False, "name": "platform-ops"}})
    assert "ServiceAccount" not in [k for k, _ in out.kinds()]
    assert out.get("Deployment", "trainyard")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-ops"
    assert out.get("ClusterRoleBinding", "trainyard")["subjects"][0]["name"] == "platform-ops"


@pytest.mark.parametrize(("release", "name"), [("trainyard", "trainyard"), ("ml", "ml-trainyard"),
                                               ("trainyard-prod", "trainyard-prod")])
def test_names_follow_the_release(template, release, name):
    out = template(release=release)
    assert {n for k, n in out.kinds() if k != "ServiceAccount"} == {name, f"{name}-metrics", f"{name}-nodes",
                                                                                f"{name}-kueue"}
    labels = out.get("Deployment", name)["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == release


def test_every_object_carries_the_standard_labels(template):
    out = template({"watchNamespaces": ["a"], "metrics": {"serviceMonitor": {"enabled": True}}})
    for doc in out.docs:
        assert doc["metadata"]["labels"].items() >= LABELS.items(), doc["kind"]


def test_crd_is_the_generated_one():
    """charts/trainyard/crds is a copy of crds/ (make crds); Helm installs it before the templates."""
    assert (CHART / "crds" / "trainyard.dev_distributedtrainingjobs.yaml").read_text() == \
        (REPO / "crds" / "trainyard.dev_distributedtrainingjobs.yaml").read_text()


def _operator_command() -> click.Command:
    return typer.main.get_command(app).commands["operator"]  # type: ignore[attr-defined]


def test_rendered_command_line_is_accepted_by_trainyard_operator(template):
    """The Deployment's command line parses with the real CLI (no typo'd or missing flags)."""
    out = template({"watchNamespaces": ["team-a"], "logFormat": "json", "extraArgs": ["--verbose"]})
    c = container(out.get("Deployment", "trainyard"))
    assert c["command"] == ["trainyard", "operator"]
    ctx = _operator_command().make_context("operator", list(c["args"]))
    assert ctx.params["liveness"] == "http://0.0.0.0:8080/healthz"
    assert ctx.params["log_format"] == "json"
    assert list(ctx.params["namespace"]) == ["team-a"]
    assert ctx.params["metrics_port"] == 9090
    assert ctx.params["verbose"] is True

