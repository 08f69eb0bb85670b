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
    # each job's progress Lease, and the Role and RoleBinding that let its workers patch that one Lease:
    # granting it needs no escalate or bind (the operator holds get and patch on leases itself)
    ("create", "leases.coordination.k8s.io", "yes"),
    ("watch", "leases.coordination.k8s.io", "yes"),
    ("patch", "leases.coordination.k8s.io", "yes"),
    ("create", "roles.rbac.authorization.k8s.io", "yes"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "yes"),
    ("update", "leases.coordination.k8s.io", "no"),
    ("delete", "leases.coordination.k8s.io", "no"),
    ("escalate", "roles.rbac.authorization.k8s.io", "no"),
    ("bind", "roles.rbac.authorization.k8s.io", "no"),
    ("delete", "roles.rbac.authorization.k8s.io", "no"),
    ("create", "clusterroles.rbac.authorization.k8s.io", "no"),
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
