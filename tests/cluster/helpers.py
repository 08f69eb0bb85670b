"""Small helpers for driving a real cluster from tests: waiting on conditions, never sleeping."""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trainyard import api

from ..support import wait_for

__all__ = ["Kube", "env_of", "held_node", "job_manifest", "wait_for"]

def job_manifest(name: str, workers: int = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": {
            "workers": workers,
            "template": {"spec": {"containers": [{"name": "trainer", "image": "trainyard/trainer:test",
                                                  "command": ["trainyard-launch", "train.py"]}]}},
        },
    }
    for k, v in spec.items():
        body["spec"][k] = copy.deepcopy(v)
    return body


class Kube:
    """Admin access for the test itself (the operator runs with its own, restricted identity)."""

    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)

    def delete_volume(self, name: str) -> None:
        """Deletes a test's PersistentVolume. Reclaim policy Delete: the PV controller may have
        deleted it already once its claim went (a race seen in CI), which is what the test wants."""
        try:
            self.core.delete_persistent_volume(name)
        except ApiException as e:
            if e.status != 404:
                raise

    # -- jobs
    def create_job(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, body)

    def job(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def status(self, ns: str, name: str) -> dict[str, Any]:
        return (self.job(ns, name) or {}).get("status") or {}

    def patch_job(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, name, patch,
                                                          _content_type="application/merge-patch+json")

    def delete_job(self, ns: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, ns, api.PLURAL, name)

    def wait_phase(self, ns: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (s := self.status(ns, name)).get("phase") == phase and s, timeout,
                        f"{ns}/{name} phase {phase} (status {self.status(ns, name)})")

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status(ns, name).get("conditions") or [] if c["type"] == type_), None)

    # -- pods
    def pods(self, ns: str, job: str, attempt: int | None = None, live_only: bool = False) -> list[client.V1Pod]:
        selector = f"trainyard.dev/job-name={job}"
        if attempt is not None:
            selector += f",trainyard.dev/attempt={attempt}"
        items = self.core.list_namespaced_pod(ns, label_selector=selector).items
        if live_only:
            items = [p for p in items if p.metadata.deletion_timestamp is None
                     and p.status.phase not in ("Succeeded", "Failed")]
        return sorted(items, key=lambda p: p.metadata.name)

    def running(self, ns: str, job: str, attempt: int, n: int) -> list[client.V1Pod]:
        pods = [p for p in self.pods(ns, job, attempt, live_only=True) if p.status.phase == "Running"]
        return pods if len(pods) == n else []

    def finish_pod(self, ns: str, name: str, exit_code: int, reason: str | None = None,
                   container: str = "trainer") -> None:
        """Ends a pod as its kubelet would report it: phase and the trainer's terminated state."""
        pod = self.core.read_namespaced_pod(name, ns)
        now = datetime.now(UTC).isoformat()
        statuses = [{
            "name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code if c.name == container else 0,
                                     "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                                     "startedAt": now, "finishedAt": now}},
        } for c in pod.spec.containers]
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self.core.patch_namespaced_pod_status(name, ns, {"status": {
            "phase": phase, "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}]}})

    def set_waiting(self, ns: str, name: str, reason: str, message: str = "") -> None:
        pod = self.core.read_namespaced_pod(name, ns)
        statuses = [{"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                     "state": {"waiting": {"reason": reason, "message": message}}} for c in pod.spec.containers]
        self.core.patch_namespaced_pod_status(name, ns, {"status": {"containerStatuses": statuses}})

    def evict(self, ns: str, name: str) -> None:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
        self.core.create_namespaced_pod_eviction(name, ns, body)

    def events(self, ns: str, name: str) -> list[tuple[str, str]]:
        evs = self.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
        # timestamps have second resolution; the etcd revision orders events posted within one second
        evs.sort(key=lambda e: int(e.metadata.resource_version))
        return [(e.reason, e.message) for e in evs]


def env_of(pod: client.V1Pod, container: str = "trainer") -> dict[str, str]:
    c = next(c for c in pod.spec.containers if c.name == container)
    return {e.name: e.value for e in c.env or []}


@contextlib.contextmanager
def held_node(kube: Kube, name: str):
    """A Ready node that kwok does not play: pods pinned to it (spec.nodeName) are bound but no fake
    kubelet writes their status, so only the test does. Deleted on exit."""
    kube.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"held": "true"})))
    now = datetime.now(UTC).isoformat()
    kube.core.patch_node_status(name, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now,
         "lastTransitionTime": now}]}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            kube.core.delete_node(name)
