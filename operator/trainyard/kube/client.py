"""The Kubernetes API calls the operator makes, each counted by verb, resource and code.

Synchronous (the official client is); the reconcile loop runs them in threads, off the event loop.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .. import api
from ..engine.plan import Event
from .metrics import API_REQUESTS

log = logging.getLogger("trainyard.kube")
FIELD_MANAGER = "trainyard-operator"
# Creations and deletions in flight at once, across all jobs: a 64-worker gang goes out in one wave
# (as many requests at once as the bench's bare client sends), not two.
PARALLELISM = 64


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    try:
        config.load_incluster_config()
        cfg = client.Configuration.get_default_copy()
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # Pod fan-out runs in parallel threads (PARALLELISM), next to the reconcile threads' own reads and
    # writes (kube.controller.RECONCILE_THREADS): the default pool (cpu*5) would serialise them, and
    # a pool smaller than the threads discards connections (a new TLS handshake each, under a burst).
    cfg.connection_pool_maxsize = PARALLELISM + 32
    return client.ApiClient(cfg)


def api_message(e: ApiException) -> str:
    try:
        return json.loads(e.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def api_reason(e: ApiException) -> str:
    """The Status reason (Invalid, Forbidden, AlreadyExists, ...), else the HTTP reason phrase."""
    try:
        return json.loads(e.body)["reason"] or str(e.reason)
    except (TypeError, ValueError, KeyError):
        return str(e.reason)


def counted(verb: str, resource: str, fn, *args, **kwargs):
    """Calls the API and counts the request by verb, resource and status code."""
    try:
        out = fn(*args, **kwargs)
    except ApiException as e:
        API_REQUESTS.labels(verb, resource, str(e.status)).inc()
        raise
    API_REQUESTS.labels(verb, resource, "201" if verb == "create" else "200").inc()
    return out


# kind -> (API path prefix, plural) of every kind the operator creates
KINDS = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Workload": ("/apis/kueue.x-k8s.io/v1beta2", "workloads"),
}


class Conflict(Exception):
    """The job changed since it was read: re-read it and decide again."""


class KubeClient:
    def __init__(self, api_client: client.ApiClient, parallelism: int = PARALLELISM, request_timeout: float = 60.0):
        self.api = api_client
        self.request_timeout = request_timeout
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="trainyard-api")

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return counted("get", api.PLURAL, self.custom.get_namespaced_custom_object,
                           api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, resource_version: str, status: dict[str, Any]) -> dict:
        """Merge-patches the status, guarded by resourceVersion so a decision made on a stale read
        (another reconcile, another operator) is refused rather than applied twice."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return counted(
                "patch", f"{api.PLURAL}/status", self.custom.patch_namespaced_custom_object_status,
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, body,
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status == 409:
                raise Conflict(name) from e
            raise

    def send(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
             content_type: str = "application/json") -> int:
        """One request as written: the client's generated methods validate a body against their own
        models before sending it, and refuse valid pods (`cpu: 1`, an extended resource, a field
        newer than the client); only the apiserver judges here. Returns the status; raises
        ApiException for an error answer, as the generated methods do."""
        method_, url, headers, data, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"}, body=body,
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method_, url, headers, data, post, _request_timeout=self.request_timeout)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=resp.data.decode(errors="replace"), data=None)
        return resp.status

    def create(self, manifest: dict[str, Any]) -> bool:
        """Creates a pod, Service or claim; False if it already existed (idempotent re-runs after a
        restart: every name is a function of the job and the attempt). Strict field validation:
        a misspelt template field is refused, and the apiserver's answer names it."""
        kind, meta = manifest["kind"], manifest["metadata"]
        prefix, plural = KINDS[kind]
        try:
            counted("create", plural, self.send, "POST", f"{prefix}/namespaces/{meta['namespace']}/{plural}", manifest,
                    {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"})
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def create_all(self, manifests: list[dict[str, Any]]) -> dict[str, bool | BaseException]:
        """Creates in parallel; by name: True created, False it existed, or what went wrong."""
        futures = {m["metadata"]["name"]: self.pool.submit(self.create, m) for m in manifests}
        return {name: e if (e := f.exception()) is not None else f.result() for name, f in futures.items()}

    def create_each(self, manifests: list[dict[str, Any]]) -> list[bool | BaseException]:
        """Creates in parallel objects that may share a name; in order: True, False (it existed) or the error."""
        futures = [self.pool.submit(self.create, m) for m in manifests]
        return [e if (e := f.exception()) is not None else f.result() for f in futures]

    def owners(self, manifest: dict[str, Any]) -> list[str] | None:
        """The uids of an existing object's owners, or None if it is gone."""
        meta = manifest["metadata"]
        prefix, plural = KINDS[manifest["kind"]]
        try:
            obj = counted("get", plural, self.read, f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return [o.get("uid", "") for o in (obj.get("metadata") or {}).get("ownerReferences") or []]

    def read(self, path: str) -> dict[str, Any]:
        """GET of one object as the apiserver sent it."""
        method_, url, headers, data, post = self.api.param_serialize(
            method="GET", resource_path=path, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method_, url, headers, data, post, _request_timeout=self.request_timeout)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=resp.data.decode(errors="replace"), data=None)
        return json.loads(resp.data)

    def patch_lease_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """A JSON merge patch of the Lease's annotations (only the keys given change)."""
        prefix, plural = KINDS["Lease"]
        body = {"metadata": {"annotations": annotations}}
        method_, url, headers, data, post = self.api.param_serialize(
            method="PATCH", resource_path=f"{prefix}/namespaces/{namespace}/{plural}/{name}",
            query_params=[("fieldManager", FIELD_MANAGER)],
            header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"}, body=body,
            auth_settings=["BearerToken"])

        def call() -> None:
            resp = self.api.call_api(method_, url, headers, data, post, _request_timeout=self.request_timeout)
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException.from_response(http_resp=resp, body=resp.data.decode(errors="replace"), data=None)

        counted("patch", plural, call)

    def claim_state(self, namespace: str, name: str) -> tuple[str | None, str]:
        """A claim's phase (None: it does not exist) and, if it is not Bound, its newest warning."""
        try:
            claim = counted("get", "persistentvolumeclaims", self.core.read_namespaced_persistent_volume_claim,
                            name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None, f"claim {name} does not exist"
            raise
        phase = (claim.status.phase if claim.status else None) or "Pending"
        if phase == "Bound":
            return phase, ""
        events = counted("list", "events", self.core.list_namespaced_event, namespace,
                         field_selector=f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}").items
        warnings = sorted((e for e in events if e.type == "Warning"),
                          key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return phase, (f"{warnings[-1].reason}: {warnings[-1].message}" if warnings else "")

    # -- Kueue (kube.kueue)
    def served(self, group_version: str, plural: str) -> bool:
        """Whether the apiserver serves this resource (discovery; every identity may read it)."""
        try:
            method, url, headers, data, post = self.api.param_serialize(
                method="GET", resource_path=f"/apis/{group_version}", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, headers, data, post, _request_timeout=self.request_timeout)
            resp.read()
            if resp.status != 200:
                return False
            return any(r.get("name") == plural for r in json.loads(resp.data).get("resources") or [])
        except Exception:  # noqa: BLE001 - not served, or not reachable: treated as absent
            return False

    def resource_flavor(self, name: str) -> dict[str, Any] | None:
        """A ResourceFlavor's spec (cluster-scoped), or None if it does not exist."""
        try:
            obj = counted("get", "resourceflavors", self.custom.get_cluster_custom_object,
                          "kueue.x-k8s.io", "v1beta2", "resourceflavors", name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj.get("spec") or {}

    def patch_workload(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        path = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads/{name}"
        counted("patch", "workloads", self.send, "PATCH", path, patch, {"fieldManager": FIELD_MANAGER},
                "application/merge-patch+json")

    def apply_workload_status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Server-side apply on workloads/status, as FIELD_MANAGER (force: these fields are ours)."""
        path = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads/{name}/status"
        counted("apply", "workloads/status", self.send, "PATCH", path, body,
                {"fieldManager": FIELD_MANAGER, "force": "true"}, "application/apply-patch+yaml")

    def patch_workload_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch on workloads/status (guarded by the resourceVersion it carries: 409 is Conflict)."""
        path = f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads/{name}/status"
        try:
            counted("patch", "workloads/status", self.send, "PATCH", path, patch, {"fieldManager": FIELD_MANAGER},
                    "application/merge-patch+json")
        except ApiException as e:
            if e.status == 409:
                raise Conflict(name) from e
            raise

    def delete_workers(self, namespace: str, names: list[str], force: set[str] = frozenset()) -> list[Exception]:
        """Deletes pods in parallel; those in `force` at once (their node is gone or unready: no
        kubelet will run a graceful termination, and the pod must not linger Terminating)."""
        def one(name: str) -> None:
            try:
                kw = {"grace_period_seconds": 0} if name in force else {}
                counted("delete", "pods", self.core.delete_namespaced_pod, name, namespace, **kw)
            except ApiException as e:
                if e.status != 404:
                    raise

        futures = [self.pool.submit(one, n) for n in names]
        return [f.exception() for f in futures if f.exception() is not None]

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            counted("delete", api.PLURAL, self.custom.delete_namespaced_custom_object,
                    api.GROUP, api.VERSION, namespace, api.PLURAL, name, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def post_events(self, meta: api.ObjectMeta, events: list[Event]) -> None:
        now = datetime.now(UTC)
        for ev in events:
            body = client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name=f"{meta.name}.", namespace=meta.namespace),
                involved_object=client.V1ObjectReference(
                    api_version=api.API_VERSION, kind=api.KIND, name=meta.name, namespace=meta.namespace,
                    uid=meta.uid or None, resource_version=meta.resourceVersion),
                type=ev.type, reason=ev.reason, message=ev.message[:1024],
                first_timestamp=now, last_timestamp=now, count=1,
                source=client.V1EventSource(component="trainyard-operator"),
                reporting_component="trainyard.dev/operator", reporting_instance="trainyard-operator",
            )
            try:
                counted("create", "events", self.core.create_namespaced_event, meta.namespace, body)
            except ApiException as e:  # events are best effort: never fail a reconcile over one
                log.warning("could not post event %s on %s: %s", ev.reason, meta.name, api_message(e))
