"""`TrainyardClient`: DistributedTrainingJobs of one cluster, through a kubeconfig."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .. import api
from ..api.errors import validation_message
from ..api.names import LABEL_JOB_NAME
from .errors import (
    AccessDenied,
    ApiError,
    ClusterUnreachable,
    CRDNotInstalled,
    InvalidInput,
    InvalidSpec,
    JobExists,
    JobNotFound,
    NamespaceNotFound,
    TrainyardError,
    WaitTimeout,
)
from .info import DTJ, EventInfo, Resource, WorkerInfo
from .job import Job
from .logs import LogItem, LogReader, iter_lines, read_chunks
from .transport import connection_problem, status_body
from .view import StatusView


class TrainyardClient:
    """DistributedTrainingJobs of one cluster, through a kubeconfig (or in-cluster credentials).

    kubeconfig: a path (default $KUBECONFIG, else ~/.kube/config; in a pod with neither, the pod's
    ServiceAccount). context: a context name in it (default its current-context). namespace:
    default for every call (default the context's namespace, else "default").
    """

    def __init__(self, kubeconfig: str | os.PathLike | None = None, context: str | None = None,
                 namespace: str | None = None, *, request_timeout: float = 30.0, resource: Resource | None = None):
        self.resource = resource or DTJ
        self.request_timeout = request_timeout
        self.namespace_explicit = namespace is not None
        self.api_client, context_namespace, self.where = self._load(kubeconfig, context)
        self.namespace = namespace or context_namespace or "default"
        self.server = self.api_client.configuration.host
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    # -- configuration
    @staticmethod
    def _load(kubeconfig: str | os.PathLike | None, context: str | None) -> tuple[client.ApiClient, str | None, str]:
        cfg = client.Configuration()
        env = os.environ.get("KUBECONFIG")
        path = os.fspath(kubeconfig) if kubeconfig is not None else env or os.path.expanduser("~/.kube/config")
        files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
        existing = [p for p in files if os.path.exists(p)]
        namespace: str | None = None
        if not existing:
            sa = "/var/run/secrets/kubernetes.io/serviceaccount"
            if kubeconfig is None and not env and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                try:
                    config.load_incluster_config(client_configuration=cfg)
                except config.ConfigException as e:
                    raise ClusterUnreachable(f"in-cluster configuration: {e}") from None
                with contextlib.suppress(OSError):
                    namespace = Path(sa, "namespace").read_text().strip() or None
                where = "in-cluster ServiceAccount"
            elif kubeconfig is None and not env:
                raise ClusterUnreachable(
                    f"no kubeconfig: {path} does not exist (pass --kubeconfig, set KUBECONFIG, or create it)")
            else:
                raise ClusterUnreachable(f"no kubeconfig: {path} does not exist")
        else:
            joined = os.pathsep.join(existing)
            where = f"kubeconfig {joined}"
            try:
                config.load_kube_config(config_file=joined, context=context, client_configuration=cfg,
                                        persist_config=False)
                contexts, active = config.list_kube_config_contexts(config_file=joined)
            except Exception as e:  # ConfigException, a YAML error, a malformed file: one line either way
                raise ClusterUnreachable(f"cannot use {where}: {e}") from None
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            namespace = ((chosen or {}).get("context") or {}).get("namespace")
            where += f", context {(chosen or {}).get('name')}"
        cfg.retries = 1  # connection refused fails in milliseconds either way; a black hole not 4 times
        return client.ApiClient(cfg), namespace, where

    # -- error mapping
    def _error(self, e: ApiException, name: str | None = None, namespace: str | None = None,
               what: str = "job") -> TrainyardError:
        status = status_body(e)
        message = (status or {}).get("message") or (e.body.strip() if isinstance(e.body, str) else "") or e.reason
        message = " ".join(str(message).split())
        details = (status or {}).get("details") or {}
        ns = namespace or self.namespace
        if e.status == 404:
            if not details.get("name") and not details.get("kind"):
                return CRDNotInstalled(
                    f"the cluster at {self.server} does not serve {self.resource} (404 on the resource type): "
                    f"install the CRD first (trainyard crd | kubectl apply -f -, or the Helm chart)")
            if details.get("kind") == "namespaces":
                return NamespaceNotFound(f"namespace {details.get('name')!r} not found")
            return JobNotFound(f"{what} {name or details.get('name')!r} not found in namespace {ns}")
        if e.status == 401:
            return AccessDenied(f"the apiserver at {self.server} refused the credentials of {self.where}: {message}")
        if e.status == 403:
            return AccessDenied(message)
        if e.status == 409:
            return JobExists(f"{message} in namespace {ns}" if "already exists" in message else message)
        if e.status in (400, 422):
            causes = details.get("causes") or []
            return InvalidSpec(message, [c["field"] for c in causes if c.get("field")])
        return ApiError(f"the apiserver answered {e.status} {e.reason}: {message}")

    def _call(self, fn: Callable[..., Any], *args: Any, name: str | None = None, namespace: str | None = None,
              what: str = "job", **kw: Any) -> Any:
        kw.setdefault("_request_timeout", self.request_timeout)
        try:
            return fn(*args, **kw)
        except ApiException as e:
            if e.status == 0 or e.status is None:  # the client's own wrapper of a transport failure
                raise ClusterUnreachable(f"cannot reach the Kubernetes API at {self.server}: {e.reason}") from e
            raise self._error(e, name, namespace, what) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ClusterUnreachable(
                f"cannot reach the Kubernetes API at {self.server} ({self.where}): {connection_problem(e)}") from e

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # -- jobs
    def submit(self, job: Job | Mapping[str, Any] | str | os.PathLike, *, namespace: str | None = None) -> str:
        """Creates the job and returns its name. `job` is a Job, a manifest dict, a path or YAML text.
        The namespace is `namespace`, else the job's own, else the client's."""
        if not isinstance(job, Job):
            job = Job.from_dict(job) if isinstance(job, Mapping) else Job.from_yaml(job)
        requested = namespace or (self.namespace if self.namespace_explicit else None)
        if requested and job.metadata.namespace and requested != job.metadata.namespace:
            raise InvalidInput(f"the job says namespace {job.metadata.namespace!r} but {requested!r} was requested")
        ns = requested or job.metadata.namespace or self.namespace
        manifest = job.to_manifest()
        manifest["metadata"]["namespace"] = ns
        r = self.resource
        created = self._call(self.custom.create_namespaced_custom_object, r.group, r.version, ns, r.plural, manifest,
                             field_validation="Strict", name=job.name, namespace=ns)
        return created["metadata"]["name"]

    def get_raw(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        r, ns = self.resource, self._ns(namespace)
        return self._call(self.custom.get_namespaced_custom_object, r.group, r.version, ns, r.plural, name,
                          name=name, namespace=ns)

    def get(self, name: str, namespace: str | None = None) -> Job:
        return _parse_job(self.get_raw(name, namespace))

    def status(self, name: str, namespace: str | None = None) -> api.DistributedTrainingJobStatus:
        return api.DistributedTrainingJobStatus.model_validate(self.get_raw(name, namespace).get("status") or {})

    def progress(self, name: str, namespace: str | None = None) -> api.Progress | None:
        """The job's training progress (status.progress: step, totalSteps, percent, loss, samples/s, the last
        checkpoint, the ETA, and after a restart the step the gang resumed from), as rank 0 last reported
        it; None before its first report. `trainyard.sdk.progress_line(job)` says it in one line."""
        return self.status(name, namespace).progress

    def list_raw(self, namespace: str | None = None, all_namespaces: bool = False) -> list[dict[str, Any]]:
        r = self.resource
        if all_namespaces:
            out = self._call(self.custom.list_cluster_custom_object, r.group, r.version, r.plural)
        else:
            ns = self._ns(namespace)
            out = self._call(self.custom.list_namespaced_custom_object, r.group, r.version, ns, r.plural,
                             namespace=ns)
        items = out.get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def list(self, namespace: str | None = None, all_namespaces: bool = False) -> list[Job]:
        return [_parse_job(o) for o in self.list_raw(namespace, all_namespaces)]

    def delete(self, name: str, namespace: str | None = None, wait: bool = False, timeout: float = 60.0) -> None:
        """Deletes the job; its pods, Service and created claim go with it (garbage collection)."""
        r, ns = self.resource, self._ns(namespace)
        self._call(self.custom.delete_namespaced_custom_object, r.group, r.version, ns, r.plural, name,
                   propagation_policy="Background", name=name, namespace=ns)
        deadline = time.monotonic() + timeout
        while wait:
            try:
                self.get_raw(name, ns)
            except JobNotFound:
                return
            if time.monotonic() > deadline:
                raise TrainyardError(f"job {name!r} still exists {timeout:.0f}s after its deletion (finalizers?)")
            time.sleep(0.2)

    def _patch(self, name: str, namespace: str | None, patch: dict[str, Any]) -> dict[str, Any]:
        r, ns = self.resource, self._ns(namespace)
        return self._call(self.custom.patch_namespaced_custom_object, r.group, r.version, ns, r.plural, name, patch,
                          _content_type="application/merge-patch+json", name=name, namespace=ns)

    def suspend(self, name: str, namespace: str | None = None) -> None:
        """spec.runPolicy.suspend=true: the operator deletes the workers; the phase becomes Suspended."""
        self._patch(name, namespace, {"spec": {"runPolicy": {"suspend": True}}})

    def resume(self, name: str, namespace: str | None = None) -> None:
        """spec.runPolicy.suspend=false: a new attempt starts, not counted as a restart."""
        self._patch(name, namespace, {"spec": {"runPolicy": {"suspend": False}}})

    def scale(self, name: str, workers: int, namespace: str | None = None) -> None:
        self._patch(name, namespace, {"spec": {"workers": workers}})

    # -- pods and events
    def workers(self, name: str, namespace: str | None = None, uid: str | None = None) -> list[WorkerInfo]:
        """Worker pods of every attempt still present, ordered by attempt and index. With `uid`,
        only pods owned by that job (not leftovers of a deleted job of the same name)."""
        ns = self._ns(namespace)
        items = self._call(self.core.list_namespaced_pod, ns, label_selector=f"{LABEL_JOB_NAME}={name}",
                           namespace=ns).items
        if uid:
            items = [p for p in items if any(o.uid == uid for o in p.metadata.owner_references or [])]
        infos = [info for p in items if (info := WorkerInfo.from_pod(p)) is not None]
        return sorted(infos, key=lambda w: (w.attempt, w.index))

    def events(self, name: str, namespace: str | None = None, uid: str | None = None) -> list[EventInfo]:
        """The job's events, oldest first."""
        ns = self._ns(namespace)
        selector = f"involvedObject.kind={self.resource.kind},involvedObject.name={name}"
        items = self._call(self.core.list_namespaced_event, ns, field_selector=selector, namespace=ns).items
        return _events(items, uid)

    def last_events(self, namespace: str | None = None, all_namespaces: bool = False) -> dict[str, EventInfo]:
        """The newest event of every job, by job uid (for `trainyard get`)."""
        selector = f"involvedObject.kind={self.resource.kind}"
        if all_namespaces:
            items = self._call(self.core.list_event_for_all_namespaces, field_selector=selector).items
        else:
            ns = self._ns(namespace)
            items = self._call(self.core.list_namespaced_event, ns, field_selector=selector, namespace=ns).items
        out: dict[str, tuple[Any, EventInfo]] = {}
        for e in items:
            info = _event(e)
            uid = e.involved_object.uid or ""
            k = _event_key(info)
            if uid not in out or k >= out[uid][0]:
                out[uid] = (k, info)
        return {uid: v[1] for uid, v in out.items()}

    # -- waiting
    def wait(self, name: str, timeout: float | None = None, progress: bool = True, namespace: str | None = None,
             poll_interval: float = 1.0, view: StatusView | None = None) -> api.DistributedTrainingJobStatus:
        """Returns the status once the job is Succeeded or Failed; raises WaitTimeout (a
        TimeoutError, with `.status`) after `timeout` seconds. With progress=True a live status
        table is shown in a terminal or a notebook, and nothing otherwise."""
        ns = self._ns(namespace)
        if view is None:
            view = StatusView.auto() if progress else StatusView("off")
        deadline = None if timeout is None else time.monotonic() + timeout
        st = api.DistributedTrainingJobStatus()
        try:
            for obj in self._job_updates(name, ns, deadline, poll_interval):
                st = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
                pods = self.workers(name, ns, obj["metadata"].get("uid")) if view.wants_workers else []
                view.update(obj, pods)
                if st.phase is not None and st.phase.terminal:
                    return st
            raise WaitTimeout(f"job {name!r} is still {st.phase.value if st.phase else 'Pending'} after {timeout:g}s"
                              + (f": {st.message}" if st.message else ""), st)
        finally:
            view.close()

    def _job_updates(self, name: str, ns: str, deadline: float | None, tick: float) -> Iterator[dict[str, Any]]:
        """The job now, then every change of it (a watch from its resourceVersion, so even a phase
        that lasts milliseconds is seen), and the latest again every `tick` seconds without a
        change (the pods may have changed). Ends at the deadline; JobNotFound if it is deleted."""
        r = self.resource
        obj = self.get_raw(name, ns)
        yield obj
        rv = obj["metadata"]["resourceVersion"]
        while deadline is None or time.monotonic() < deadline:
            read = tick if deadline is None else max(0.05, min(tick, deadline - time.monotonic()))
            try:
                resp = self._call(self.custom.list_namespaced_custom_object, r.group, r.version, ns, r.plural,
                                  watch=True, field_selector=f"metadata.name={name}", resource_version=rv,
                                  timeout_seconds=300, _preload_content=False, _request_timeout=(10, read),
                                  name=name, namespace=ns)
            except ClusterUnreachable as e:
                cause = e.__cause__
                if isinstance(cause, urllib3.exceptions.MaxRetryError):
                    cause = cause.reason
                if not isinstance(cause, urllib3.exceptions.ReadTimeoutError):
                    raise
                yield obj  # no answer within a tick: nothing changed
                continue
            try:
                for line in iter_lines(read_chunks(resp)):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, o = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone: the resourceVersion is too old; read afresh
                        obj = self.get_raw(name, ns)
                        rv = obj["metadata"]["resourceVersion"]
                        yield obj
                        break
                    if kind == "DELETED":
                        raise JobNotFound(f"job {name!r} was deleted from namespace {ns} while waiting for it")
                    if kind in ("ADDED", "MODIFIED"):
                        obj, rv = o, o["metadata"]["resourceVersion"]
                        yield obj
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError, TimeoutError):
                yield obj  # a quiet tick
            finally:
                resp.close()
                with contextlib.suppress(Exception):
                    resp.release_conn()

    # -- logs

    # -- logs (sdk.logs holds the policy)
    def logs(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
             previous_attempt: bool = False, namespace: str | None = None) -> Iterator[tuple[int, str]]:
        """(worker index, line) of the trainer container of the job's workers, interleaved.

        Default: the current gang (the newest pod of every index since the last gang restart).
        attempt=N: the pods of attempt N; previous_attempt: the newest earlier attempt that still
        has pods (a failed gang keeps its failed pod). Without follow, the lines are merged by their
        timestamps; with follow they come as they are written, until the workers end (and, for the
        current gang, on into the next attempt until the job finishes). A worker whose log cannot be
        read is skipped with a warning; LogsUnavailable if none can be read. Logs that are all empty
        give no line and a warning saying what the workers are doing ("no log lines yet: worker 0
        is Pending (ContainerCreating)")."""
        import warnings

        for item in self.log_stream(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt,
                                    namespace=namespace):
            if item.line is not None:
                yield item.worker, item.line
            elif item.error is not None:
                warnings.warn(f"worker {item.worker}: {item.error}", stacklevel=2)
            elif item.empty:
                warnings.warn(item.notice or "", stacklevel=2)

    def log_stream(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
                   previous_attempt: bool = False, namespace: str | None = None) -> Iterator[LogItem]:
        """`logs` as items: lines, notices of a new attempt, and per-worker errors, which are held
        back until a line has come; LogsUnavailable if no worker's log could be read."""
        return LogReader(self).stream(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt,
                                      namespace=namespace)

    def log_events(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
                   previous_attempt: bool = False, namespace: str | None = None) -> Iterator[LogItem]:
        """Every item as it comes, errors included, without the policy of `log_stream`."""
        return LogReader(self).items(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt,
                                     namespace=namespace)


def _parse_job(obj: dict[str, Any]) -> Job:
    data = dict(obj)
    data["status"] = data.get("status") or {}
    try:
        return Job.model_validate(data)
    except ValidationError as e:
        name = (obj.get("metadata") or {}).get("name")
        raise InvalidSpec(validation_message(e, f"job {name!r} in the cluster")) from e


def _event(e: client.CoreV1Event) -> EventInfo:
    ts = e.last_timestamp or e.event_time or e.first_timestamp or e.metadata.creation_timestamp
    try:
        order = int(e.metadata.resource_version or 0)
    except ValueError:
        order = 0
    return EventInfo(e.type or "", e.reason or "", e.message or "", ts, e.count or 1, order)


def _event_key(ev: EventInfo) -> tuple[float, int]:
    return (ev.time.timestamp() if ev.time else 0.0, ev.order)


def _events(items: Iterable[client.CoreV1Event], uid: str | None) -> list[EventInfo]:
    evs = [_event(e) for e in items if not uid or not e.involved_object.uid or e.involved_object.uid == uid]
    return sorted(evs, key=_event_key)


