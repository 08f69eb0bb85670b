"""The Kubernetes backend: reads a job, writes its status and applies a Plan to pods.

Synchronous (the official client is); the controller runs it in a thread, off the event loop.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import api
from .builders import checkpoint_claim, headless_service, worker_pod
from .engine import Event, Launch
from .metrics import API_REQUESTS

log = logging.getLogger("trainyard.kube")
FIELD_MANAGER = "trainyard-operator"


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    try:
        config.load_incluster_config()
        cfg = client.Configuration.get_default_copy()
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # Pod fan-out runs in parallel threads; the default pool (cpu*5) would serialise them.
    cfg.connection_pool_maxsize = 64
    return client.ApiClient(cfg)


def api_message(e: ApiException) -> str:
    try:
        return json.loads(e.body)["message"]
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


class Conflict(Exception):
    """The job changed since it was read: re-read it and decide again."""


class KubeBackend:
    def __init__(self, api_client: client.ApiClient, parallelism: int = 32):
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

    def _create(self, fn, namespace: str, manifest: dict[str, Any]) -> bool:
        """Creates; False if it already existed (idempotent re-runs after a restart)."""
        try:
            counted("create", manifest["kind"].lower() + "s", fn, namespace, manifest, field_manager=FIELD_MANAGER)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    def ensure_children(self, job: api.DistributedTrainingJob) -> None:
        ns = job.metadata.namespace
        self._create(self.core.create_namespaced_service, ns, headless_service(job))
        claim = checkpoint_claim(job)
        if claim is not None:
            self._create(self.core.create_namespaced_persistent_volume_claim, ns, claim)

    def create_workers(self, job: api.DistributedTrainingJob, launches: list[Launch]) -> dict[str, Exception]:
        """Creates the pods in parallel; returns the ones that failed."""
        ns = job.metadata.namespace
        futures = {launch.name: self.pool.submit(self._create, self.core.create_namespaced_pod, ns,
                                                 worker_pod(job, launch)) for launch in launches}
        return {name: f.exception() for name, f in futures.items() if f.exception() is not None}

    def delete_workers(self, namespace: str, names: list[str]) -> list[Exception]:
        def one(name: str) -> None:
            try:
                counted("delete", "pods", self.core.delete_namespaced_pod, name, namespace)
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

    def post_events(self, job: dict[str, Any], events: list[Event]) -> None:
        meta = job["metadata"]
        now = datetime.now(UTC)
        for ev in events:
            body = client.CoreV1Event(
                metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
                involved_object=client.V1ObjectReference(
                    api_version=api.API_VERSION, kind=api.KIND, name=meta["name"], namespace=meta["namespace"],
                    uid=meta.get("uid"), resource_version=meta.get("resourceVersion")),
                type=ev.type, reason=ev.reason, message=ev.message[:1024],
                first_timestamp=now, last_timestamp=now, count=1,
                source=client.V1EventSource(component="trainyard-operator"),
                reporting_component="trainyard.dev/operator", reporting_instance="trainyard-operator",
            )
            try:
                counted("create", "events", self.core.create_namespaced_event, meta["namespace"], body)
            except ApiException as e:  # events are best effort: never fail a reconcile over one
                log.warning("could not post event %s on %s: %s", ev.reason, meta["name"], api_message(e))
