"""The operator runs with exactly the chart's RBAC, never as an admin: a missing permission fails."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("create", "pods", "yes"),
    ("delete", "pods", "yes"),
    ("watch", "distributedtrainingjobs.trainyard.dev", "yes"),
    ("patch", "distributedtrainingjobs.trainyard.dev/status", "yes"),
    ("create", "services", "yes"),
    ("create", "persistentvolumeclaims", "yes"),
    ("create", "events", "yes"),
    ("list", "events", "yes"),
    ("watch", "nodes", "yes"),
    ("get", "persistentvolumeclaims", "yes"),
    ("patch", "nodes", "no"),
    # Kueue (route A)
    ("create", "workloads.kueue.x-k8s.io", "yes"),
    ("watch", "workloads.kueue.x-k8s.io", "yes"),
    ("patch", "workloads.kueue.x-k8s.io/status", "yes"),
    ("get", "resourceflavors.kueue.x-k8s.io", "yes"),
    ("delete", "workloads.kueue.x-k8s.io", "no"),
    ("update", "workloads.kueue.x-k8s.io/status", "no"),
    ("patch", "clusterqueues.kueue.x-k8s.io", "no"),
    # least privilege: nothing it does not use
    ("update", "distributedtrainingjobs.trainyard.dev", "no"),
    ("delete", "services", "no"),
    ("list", "secrets", "no"),
    ("create", "deployments.apps", "no"),
    ("*", "*", "no"),
])
def test_operator_identity_has_exactly_the_chart_rules(operator, installed, verb, resource, allowed):
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "-A"] + ([f"--subresource={sub}"] if sub else [])
    out = installed.kubectl_run(*args, kubeconfig=operator.kubeconfig, check=False)
    assert out.stdout.strip() == allowed, out.stderr
