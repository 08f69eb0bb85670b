"""`helm lint`, and values.schema.json: good values render, each bad value fails with the field named."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .conftest import CHART, render


def test_helm_lint_strict(helm):
    out = subprocess.run([helm, "lint", "--strict", str(CHART)], text=True, capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", [
    {"watchNamespaces": ["team-a", "b2"]},
    {"logFormat": "json", "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "interval": "15s",
                                                                        "labels": {"release": "prom"}}}},
    {"image": {"repository": "registry.example.com:5000/ml/trainyard-operator", "tag": "0.2.0-rc.1",
               "pullPolicy": "Always"}},
    {"image": {"tag": "0.1.0@sha256:" + "a" * 64}},
    {"serviceAccount": {"create": False, "name": "ops.trainyard"}},
    {"resources": {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}}},
    {"nodeSelector": {"kubernetes.io/os": "linux"},
     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}},
    {"podSecurityContext": {"runAsUser": 20000, "fsGroup": 20000},
     "securityContext": {"readOnlyRootFilesystem": False}},
    {"securityContext": {"capabilities": None}, "podSecurityContext": {"runAsGroup": None}},
    {"extraArgs": ["--verbose"], "clusterDomain": "corp.example.", "imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "system-cluster-critical",
     "podAnnotations": {"a": "b"}, "podLabels": {"team": "ml"}},
], ids=["namespaces", "json-metrics-monitor", "image", "digest", "existing-sa", "resources", "scheduling",
        "security-overrides", "null-removes-a-default", "extras"])
def test_good_values_render(helm, tmp_path, values):
    out = render(helm, values, tmp=tmp_path)
    assert out.returncode == 0, out.stderr


# (values, what the error must say: the field's path as helm prints it, and a hint of the rule)
BAD: list[tuple[str, dict[str, Any], list[str]]] = [
    ("replicas-2", {"replicas": 2}, ["at '/replicas'", "must be 1"]),
    ("replicas-0", {"replicas": 0}, ["at '/replicas'"]),
    ("pull-policy", {"image": {"pullPolicy": "Sometimes"}}, ["at '/image/pullPolicy'", "Always"]),
    ("empty-repository", {"image": {"repository": ""}}, ["at '/image/repository'"]),
    ("repository-uppercase", {"image": {"repository": "Trainyard/Operator"}}, ["at '/image/repository'"]),
    ("tag-number", {"image": {"tag": 1.5}}, ["at '/image/tag'", "want string"]),
    ("tag-spaces", {"image": {"tag": "latest please"}}, ["at '/image/tag'"]),
    ("image-typo", {"image": {"pullpolicy": "Always"}}, ["at '/image'", "'pullpolicy' not allowed"]),
    ("log-format", {"logFormat": "xml"}, ["at '/logFormat'", "'plain', 'json'"]),
    ("cluster-domain-uppercase", {"clusterDomain": "Cluster.Local"}, ["at '/clusterDomain'"]),
    ("cluster-domain-url", {"clusterDomain": "https://cluster.local"}, ["at '/clusterDomain'"]),
    ("cluster-domain-empty", {"clusterDomain": ""}, ["at '/clusterDomain'"]),
    ("namespaces-string", {"watchNamespaces": "team-a"}, ["at '/watchNamespaces'", "want array"]),
    ("namespace-not-dns", {"watchNamespaces": ["ok", "Team_A"]}, ["at '/watchNamespaces/1'"]),
    ("namespace-too-long", {"watchNamespaces": ["a" * 64]}, ["at '/watchNamespaces/0'"]),
    ("namespace-twice", {"watchNamespaces": ["a", "a"]}, ["at '/watchNamespaces'", "equal"]),
    ("metrics-port-high", {"metrics": {"port": 70000}}, ["at '/metrics/port'", "maximum"]),
    ("metrics-port-privileged", {"metrics": {"port": 80}}, ["at '/metrics/port'", "minimum"]),
    ("metrics-port-string", {"metrics": {"port": "9090"}}, ["at '/metrics/port'", "want integer"]),
    ("metrics-port-liveness", {"metrics": {"port": 8080}}, ["metrics.port: 8080 is the liveness endpoint's port"]),
    ("monitor-enabled-string", {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
     ["at '/metrics/serviceMonitor/enabled'", "want boolean"]),
    ("monitor-interval", {"metrics": {"serviceMonitor": {"interval": "often"}}},
     ["at '/metrics/serviceMonitor/interval'"]),
    ("resources-quantity", {"resources": {"requests": {"cpu": "lots"}}}, ["at '/resources/requests/cpu'"]),
    ("resources-typo", {"resources": {"limit": {"memory": "1Gi"}}}, ["at '/resources'", "'limit' not allowed"]),
    ("node-selector-number", {"nodeSelector": {"disk": 1}}, ["at '/nodeSelector/disk'", "want string"]),
    ("tolerations-object", {"tolerations": {"key": "x"}}, ["at '/tolerations'", "want array"]),
    ("toleration-effect", {"tolerations": [{"key": "x", "effect": "Sometimes"}]}, ["at '/tolerations/0/effect'"]),
    ("affinity-typo", {"affinity": {"nodeAfinity": {}}}, ["at '/affinity'", "'nodeAfinity' not allowed"]),
    ("pod-security-user", {"podSecurityContext": {"runAsUser": -1}}, ["at '/podSecurityContext/runAsUser'"]),
    ("security-string", {"securityContext": {"readOnlyRootFilesystem": "no"}},
     ["at '/securityContext/readOnlyRootFilesystem'", "want boolean"]),
    ("sa-create-string", {"serviceAccount": {"create": "true"}}, ["at '/serviceAccount/create'", "want boolean"]),
    ("sa-name", {"serviceAccount": {"name": "Trainyard"}}, ["at '/serviceAccount/name'"]),
    ("extra-args-string", {"extraArgs": "--verbose"}, ["at '/extraArgs'", "want array"]),
    ("extra-args-number", {"extraArgs": [1]}, ["at '/extraArgs/0'", "want string"]),
    ("top-level-typo", {"replica": 1}, ["'replica' not allowed"]),
]


@pytest.mark.parametrize(("values", "expected"), [(v, e) for _, v, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_values_fail_naming_the_field(helm, tmp_path, values, expected):
    out = render(helm, values, tmp=tmp_path)
    assert out.returncode != 0, f"accepted: {values}"
    for fragment in expected:
        assert fragment in out.stderr, out.stderr
    assert "panic" not in out.stderr

