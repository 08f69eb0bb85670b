"""The operator runs with exactly the chart's RBAC, never as an admin: a missing permission fails."""

from __future__ import annotations

import json

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
    """A SelfSubjectAccessReview as the operator (what `kubectl auth can-i -A` sends, without its
    discovery step, which cannot resolve Kueue's resources in this tier's cluster: no Kueue here)."""
    resource, _, sub = resource.partition("/")
    name, _, group = resource.partition(".")
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": verb, "group": group if name != "*" else "*", "resource": name,
                                              "subresource": sub}}}
    out = installed.kubectl_run("create", "--validate=false", "-f", "-", "-o", "jsonpath={.status.allowed}",
                                kubeconfig=operator.kubeconfig, input=json.dumps(review), check=False)
    assert ("yes" if out.stdout.strip() == "true" else "no") == allowed, out.stderr
