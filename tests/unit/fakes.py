"""An in-memory stand-in for `trainyard.kube.client.KubeClient`, for unit tests of the Kubernetes
backend and the reconcile loop (the cluster tier proves the real thing against a real apiserver)."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainyard.kube.client import Conflict


class FakeClient:
    def __init__(self, job: dict[str, Any] | None = None):
        self.job = copy.deepcopy(job)
        if self.job is not None:
            self.job.setdefault("metadata", {}).setdefault("resourceVersion", "1")
        self.calls: list[tuple] = []
        self.fail_creates: dict[str, Exception] = {}
        self.created: dict[str, dict[str, Any]] = {}  # by name: what create was given
        self.made: list[dict[str, Any]] = []  # every manifest create was given, in order
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # by (kind, name): what was created
        self.conflicts = 0  # the next N status writes answer 409
        self.events: list[Any] = []  # what post_events was given
        self.pool = ThreadPoolExecutor(max_workers=8)
        self._lock = threading.Lock()

    def _log(self, *call: Any) -> None:
        with self._lock:
            self.calls.append(call)

    @property
    def exists(self) -> set[tuple[str, str]]:
        """(kind, name) of what was created."""
        return set(self.objects)

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._log("get", name)
        return copy.deepcopy(self.job)

    def patch_status(self, namespace: str, name: str, resource_version: str, status: dict[str, Any]) -> dict:
        self._log("patch_status", name, resource_version)
        with self._lock:
            if self.conflicts or resource_version != self.job["metadata"]["resourceVersion"]:
                self.conflicts = max(0, self.conflicts - 1)
                raise Conflict(name)
            self.job["status"] = copy.deepcopy(status)
            self.job["metadata"]["resourceVersion"] = str(int(resource_version) + 1)
        return self.job

    def create(self, manifest: dict[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        self._log("create", manifest["kind"], name)
        self.created[name] = manifest
        self.made.append(manifest)
        refusal = self.fail_creates.get(f"{manifest['kind']}/{name}") or self.fail_creates.get(name)
        if refusal is not None:  # keyed by name, or by kind/name (a job's progress children share its name)
            raise refusal
        self._refuse_escalation(manifest, self.exists)
        if (manifest["kind"], name) in self.objects:
            return False  # 409, as the apiserver answers
        self.objects[(manifest["kind"], name)] = manifest
        return True

    @staticmethod
    def _refuse_escalation(manifest: dict[str, Any], exists: set[tuple[str, str]]) -> None:
        """As the apiserver's RBAC storage does for a creator without the `bind` verb (the operator): a
        RoleBinding is checked against the rules of the Role it names, so that Role must already be there."""
        if manifest["kind"] == "RoleBinding" and ("Role", manifest["roleRef"]["name"]) not in exists:
            raise ApiException(status=404, reason=f'roles.rbac.authorization.k8s.io "{manifest["roleRef"]["name"]}" not found')

    def create_all(self, manifests: list[dict[str, Any]]) -> dict[str, bool | BaseException]:
        out: dict[str, bool | BaseException] = {}
        for m in manifests:
            try:
                out[m["metadata"]["name"]] = self.create(m)
            except Exception as e:  # noqa: BLE001 - reported as the real client does
                out[m["metadata"]["name"]] = e
        return out

    def create_each(self, manifests: list[dict[str, Any]]) -> list[bool | BaseException]:
        """Parallel in the real client: no manifest of the batch sees another one of it as created."""
        before = set(self.exists)
        out: list[bool | BaseException] = []
        for m in manifests:
            try:
                self._refuse_escalation(m, before)
                out.append(self.create(m))
            except Exception as e:  # noqa: BLE001 - reported as the real client does
                out.append(e)
        return out

    def owners(self, manifest: dict[str, Any]) -> list[str] | None:
        self._log("read", manifest["kind"], manifest["metadata"]["name"])
        existing = self.objects.get((manifest["kind"], manifest["metadata"]["name"]))
        if existing is None:
            return None
        return [o["uid"] for o in existing["metadata"].get("ownerReferences") or []]

    def patch_lease_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self._log("patch_lease", name, dict(annotations))

    def claim_state(self, namespace: str, name: str) -> tuple[str | None, str]:
        return "Pending", "ProvisioningFailed: no storage class"

    def delete_workers(self, namespace: str, names: list[str], force: set[str] = frozenset()) -> list[Exception]:
        for n in names:
            self._log("delete", n, n in force)
        return []

    def delete_job(self, namespace: str, name: str) -> None:
        self._log("delete_job", name)

    # -- Kueue
    flavors: dict[str, dict[str, Any]] = {}

    def resource_flavor(self, name: str) -> dict[str, Any] | None:
        self._log("get_flavor", name)
        return self.flavors.get(name)

    def patch_workload(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._log("patch_workload", name, patch)

    def apply_workload_status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._log("apply_workload_status", name, body)

    def patch_workload_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._log("patch_workload_status", name, patch)

    def post_events(self, meta: Any, events: list[Any]) -> None:
        for e in events:
            self._log("event", e.reason)
            self.events.append(e)
