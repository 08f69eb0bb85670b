"""Trainyard's Python SDK: submit, watch and read DistributedTrainingJobs from scripts and Jupyter.

    from trainyard.sdk import Job, TrainyardClient, parse_progress

    job = Job.from_yaml("examples/digits-ddp.yaml")          # or Job.new("demo", "img:1", "python train.py", workers=4)
    client = TrainyardClient()                                # the current kubeconfig context and its namespace
    name = client.submit(job)
    status = client.wait(name, timeout=3600)                  # a live status table in a terminal or a notebook
    steps = parse_progress(client.logs(name))                 # [{"step": 10, "loss": 2.28, ...}, ...]

It is built on the pydantic models of `trainyard.api` (the same ones the CRD is generated from),
and every failure is a `TrainyardError` subclass with a one-line message: `ClusterUnreachable`,
`CRDNotInstalled`, `JobNotFound`, `InvalidSpec` (the apiserver's message, which names the field),
`JobExists`, `LogsUnavailable`, `WaitTimeout` (a `TimeoutError` carrying the last status).
The `trainyard` command (`trainyard.jobs_cli`) is a thin layer over this module.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import heapq
import json
import os
import queue
import re
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import Field, ValidationError

from . import api
from .naming import LABEL_ATTEMPT, LABEL_JOB_NAME, LABEL_WORKER_INDEX

__all__ = [
    "DTJ", "AccessDenied", "ApiError", "CRDNotInstalled", "ClusterUnreachable", "EventInfo", "InvalidInput",
    "InvalidSpec", "Job", "JobExists", "JobMeta", "JobNotFound", "LogsUnavailable", "NamespaceNotFound",
    "NotADistributedTrainingJob", "Resource", "StatusView", "TrainyardClient", "TrainyardError", "WaitTimeout",
    "WorkerInfo", "human_age", "interleave", "iter_lines", "merge_by_time", "parse_progress",
]

# --------------------------------------------------------------------------------------------- errors


class TrainyardError(Exception):
    """Base class. `str(e)` is one line meant for a human; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class ClusterUnreachable(TrainyardError):
    """No cluster: no kubeconfig, a kubeconfig that cannot be loaded, or the apiserver cannot be reached."""

    exit_code = 3


class AccessDenied(TrainyardError):
    """The apiserver refused the credentials (401) or the request (403)."""

    exit_code = 3


class CRDNotInstalled(TrainyardError):
    """The apiserver does not serve the DistributedTrainingJob resource type (404 on the type)."""

    exit_code = 3


class JobNotFound(TrainyardError, LookupError):
    exit_code = 4


class NamespaceNotFound(TrainyardError, LookupError):
    exit_code = 4


class JobExists(TrainyardError):
    exit_code = 1


class InvalidInput(TrainyardError, ValueError):
    """A file that is missing, is not YAML, or holds the wrong thing."""

    exit_code = 2


class NotADistributedTrainingJob(InvalidInput):
    """YAML that is not a trainyard.dev/v1alpha1 DistributedTrainingJob."""


class InvalidSpec(InvalidInput):
    """The job was refused: by the apiserver (its message, which names the field and quotes the CEL
    rule's message) or, for structural errors, by the pydantic models before it was sent.
    `fields` lists the field paths named, when known."""

    def __init__(self, message: str, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = list(fields)


class LogsUnavailable(TrainyardError):
    """No worker log could be read (the pods are gone, not started, or the node serves no logs)."""


class WaitTimeout(TrainyardError, TimeoutError):
    """`wait` ran out of time; `status` is the last status read."""

    exit_code = 124

    def __init__(self, message: str, status: api.DistributedTrainingJobStatus):
        super().__init__(message)
        self.status = status


class ApiError(TrainyardError):
    """Any other error answer from the apiserver."""


# ------------------------------------------------------------------------------------------- the model


class JobMeta(api.ObjectMeta):
    """Metadata of a job as a user writes it: the namespace is optional (the client's is used)."""

    name: str = ""
    generateName: str | None = None
    namespace: str | None = None  # type: ignore[assignment]
    annotations: dict[str, str] = Field(default_factory=dict)


def _validation_message(e: ValidationError, where: str = "") -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return (f"{where}: " if where else "") + "; ".join(parts)


class Job(api.DistributedTrainingJob):
    """A DistributedTrainingJob: `api.DistributedTrainingJob` with optional namespace, labels and
    annotations, plus constructors (`from_yaml`, `from_dict`, `new`) and `to_manifest()`."""

    metadata: JobMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    # -- constructors
    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], source: str = "") -> Job:  # type: ignore[override]
        """Validates a manifest (a dict as `yaml.safe_load` returns it)."""
        where = source or "the manifest"
        if not isinstance(obj, Mapping):
            raise NotADistributedTrainingJob(f"{where}: not a Kubernetes object")
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind != api.KIND:
            raise NotADistributedTrainingJob(
                f"{where}: kind {kind or '(none)'} ({api_version or 'no apiVersion'}) is not a {api.KIND} "
                f"({api.API_VERSION})")
        if api_version != api.API_VERSION:
            raise NotADistributedTrainingJob(
                f"{where}: apiVersion {api_version or '(none)'} is not served; a {api.KIND} is {api.API_VERSION}")
        data = dict(obj)
        data["metadata"] = data.get("metadata") or {}
        data["status"] = data.get("status") or {}
        if "spec" not in data:
            raise InvalidSpec(f"{where}: spec is required", ["spec"])
        try:
            job = cls.model_validate(data)
        except ValidationError as e:
            raise InvalidSpec(_validation_message(e, where),
                              [".".join(str(p) for p in err["loc"]) for err in e.errors()]) from e
        if not job.metadata.name and not job.metadata.generateName:
            raise InvalidSpec(f"{where}: metadata.name is required", ["metadata.name"])
        return job

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> Job:
        """From a file (a path, or a str naming an existing file) or from YAML text. The YAML may
        hold other documents; exactly one must be a DistributedTrainingJob."""
        text, where = _read_source(source)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            raise InvalidInput(f"{where}: not valid YAML: {problem}{at}") from None
        jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == api.KIND]
        if len(jobs) > 1:
            raise InvalidInput(f"{where}: holds {len(jobs)} {api.KIND}s; submit one per file")
        if not jobs:
            if not docs:
                raise NotADistributedTrainingJob(f"{where}: no YAML document in it")
            if len(docs) == 1:
                return cls.from_dict(docs[0], where)  # its own error, naming the kind it found
            kinds = ", ".join(str(d.get("kind")) if isinstance(d, dict) else type(d).__name__ for d in docs)
            raise NotADistributedTrainingJob(f"{where}: no {api.KIND} among its documents ({kinds})")
        return cls.from_dict(jobs[0], where)

    @classmethod
    def new(
        cls,
        name: str,
        image: str,
        command: str | Sequence[str],
        *,
        args: Sequence[str] | None = None,
        workers: int | None = None,
        namespace: str | None = None,
        env: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
        gpus: int = 0,
        procs_per_worker: int = 1,
        elastic: tuple[int, int] | api.ElasticPolicy | None = None,
        checkpoint: str | api.Checkpoint | None = None,
        failure_policy: api.FailurePolicy | Mapping[str, Any] | None = None,
        run_policy: api.RunPolicy | Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        pod_spec: Mapping[str, Any] | None = None,
    ) -> Job:
        """A typed builder. `command` is a list or a shell-like string; `checkpoint` is a size
        ("10Gi": a claim Trainyard creates) or an `api.Checkpoint`; `elastic` is (min, max);
        `gpus` adds an nvidia.com/gpu limit; `pod_spec` adds PodSpec fields (nodeSelector,
        tolerations, volumes ...). Structural errors raise InvalidSpec here; the apiserver checks
        the rest (its CEL rules) on submit. `job.problems()` runs those checks locally."""
        container: dict[str, Any] = {
            "name": api.TRAINER_CONTAINER,
            "image": image,
            "command": shlex.split(command) if isinstance(command, str) else list(command),
        }
        if args:
            container["args"] = [str(a) for a in args]
        if env:
            container["env"] = [{"name": k, "value": str(v)} for k, v in env.items()]
        res = {k: dict(v) for k, v in (resources or {}).items()}
        if gpus:
            res.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        if res:
            container["resources"] = res
        if working_dir:
            container["workingDir"] = working_dir
        spec_body: dict[str, Any] = {**dict(pod_spec or {}), "containers": [container]}
        spec: dict[str, Any] = {"template": {"spec": spec_body}, "procsPerWorker": procs_per_worker}
        if elastic is not None:
            spec["elastic"] = (elastic.dump() if isinstance(elastic, api.ElasticPolicy)
                               else {"minWorkers": elastic[0], "maxWorkers": elastic[1]})
        if workers is not None or elastic is None:
            spec["workers"] = 1 if workers is None else workers
        if checkpoint is not None:
            spec["checkpoint"] = {"size": checkpoint} if isinstance(checkpoint, str) else _dump_set(checkpoint)
        if failure_policy is not None:
            spec["failurePolicy"] = _dump_set(failure_policy)
        if run_policy is not None:
            spec["runPolicy"] = _dump_set(run_policy)
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        return cls.from_dict({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": meta, "spec": spec},
                             f"job {name!r}")

    # -- output
    def to_manifest(self) -> dict[str, Any]:
        """The object to send: what was set (by the YAML or the builder), no status, camelCase."""
        meta: dict[str, Any] = {}
        for key in ("name", "generateName", "namespace", "labels", "annotations"):
            value = getattr(self.metadata, key)
            if value:
                meta[key] = value
        spec = self.spec.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")
        return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": meta, "spec": spec}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_manifest(), sort_keys=False)

    def problems(self) -> list[str]:
        """The CRD's CEL rules, checked locally (the apiserver checks them anyway on submit)."""
        return api.semantic_errors(self)  # type: ignore[arg-type]


def _dump_set(model: Any) -> dict[str, Any]:
    if isinstance(model, Mapping):
        return dict(model)
    return model.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json")


def _read_source(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, os.PathLike) or ("\n" not in source and (
            os.path.exists(source) or source.endswith((".yaml", ".yml", ".json")))):
        path = Path(source)
        try:
            return path.read_text(), str(path)
        except FileNotFoundError:
            raise InvalidInput(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InvalidInput(f"{path}: is a directory, not a YAML file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{path}: cannot read it: {e}") from None
    return str(source), "the YAML"


# ------------------------------------------------------------------------------------- what we read


@dataclass(frozen=True)
class WorkerInfo:
    """A worker pod (of any attempt) as `describe` shows it."""

    name: str
    attempt: int
    index: int
    phase: str
    exit_code: int | None = None
    reason: str = ""
    node: str = ""
    created: datetime | None = None
    deleting: bool = False

    @classmethod
    def from_pod(cls, pod: client.V1Pod) -> WorkerInfo | None:
        labels = pod.metadata.labels or {}
        try:
            attempt, index = int(labels[LABEL_ATTEMPT]), int(labels[LABEL_WORKER_INDEX])
        except (KeyError, ValueError):
            return None
        st = pod.status
        trainer = next((c for c in (st.container_statuses if st else None) or [] if c.name == api.TRAINER_CONTAINER),
                       None)
        code, reason = None, ""
        if trainer is not None and trainer.state is not None:
            if trainer.state.terminated is not None:
                code, reason = trainer.state.terminated.exit_code, trainer.state.terminated.reason or ""
            elif trainer.state.waiting is not None:
                reason = trainer.state.waiting.reason or ""
        if not reason and st is not None:
            reason = st.reason or ""
            if not reason:
                scheduled = next((c for c in st.conditions or [] if c.type == "PodScheduled"), None)
                if scheduled is not None and scheduled.status == "False":
                    reason = scheduled.reason or ""
        return cls(pod.metadata.name, attempt, index, (st.phase if st else None) or "Pending", code, reason,
                   (pod.spec.node_name if pod.spec else None) or "", pod.metadata.creation_timestamp,
                   pod.metadata.deletion_timestamp is not None)


@dataclass(frozen=True)
class EventInfo:
    type: str
    reason: str
    message: str
    time: datetime | None
    count: int = 1
    order: int = 0  # resourceVersion: orders events posted within the same second


@dataclass(frozen=True)
class Resource:
    """The API resource the client talks to. Only tests and forks change it."""

    group: str = api.GROUP
    version: str = api.VERSION
    plural: str = api.PLURAL
    kind: str = api.KIND

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}"


DTJ = Resource()
# A followed log may stay silent for a long time (data loading, a long epoch); the client wants a number.
FOLLOW_READ_TIMEOUT = 30 * 86400


def human_age(seconds: float) -> str:
    """kubectl's duration format (k8s.io/apimachinery/pkg/util/duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(ts: datetime | str | None, now: datetime | None = None) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return human_age(((now or datetime.now(UTC)) - ts).total_seconds())


# ------------------------------------------------------------------------------------------- the client


def _connection_problem(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    text = str(reason)
    for cause in (reason, getattr(reason, "__cause__", None), getattr(reason, "__context__", None)):
        code = getattr(cause, "errno", None)
        if code == errno.ECONNREFUSED or "Connection refused" in text:
            return "connection refused"
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
    if isinstance(reason, urllib3.exceptions.NameResolutionError) or "Name or service not known" in text:
        return "cannot resolve the host name"
    if isinstance(reason, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError,
                           TimeoutError)) or "timed out" in text:
        return "timed out"
    if isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in text or "certificate" in text:
        return f"TLS error: {text}"
    return text


def _status_body(e: ApiException) -> dict[str, Any] | None:
    try:
        body = json.loads(e.body)
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None


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
        status = _status_body(e)
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
                f"cannot reach the Kubernetes API at {self.server} ({self.where}): {_connection_problem(e)}") from e

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
        return [WorkerInfo.from_pod(p) for p in self._pods(name, namespace, uid)]  # type: ignore[misc]

    def _pods(self, name: str, namespace: str | None = None, uid: str | None = None) -> list[client.V1Pod]:
        ns = self._ns(namespace)
        items = self._call(self.core.list_namespaced_pod, ns, label_selector=f"{LABEL_JOB_NAME}={name}",
                           namespace=ns).items
        if uid:
            items = [p for p in items if any(o.uid == uid for o in p.metadata.owner_references or [])]
        items = [p for p in items if WorkerInfo.from_pod(p) is not None]

        def key(p: client.V1Pod) -> tuple[int, int]:
            labels = p.metadata.labels
            return int(labels[LABEL_ATTEMPT]), int(labels[LABEL_WORKER_INDEX])

        return sorted(items, key=key)

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
                for line in iter_lines(_chunks(resp)):
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
    def logs(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
             previous_attempt: bool = False, namespace: str | None = None) -> Iterator[tuple[int, str]]:
        """(worker index, line) of the trainer container of the job's workers, interleaved.

        Default: the current gang (the newest pod of every index since the last gang restart).
        attempt=N: the pods of attempt N; previous_attempt: the newest earlier attempt that still
        has pods (a failed gang keeps its failed pod). Without follow, the lines are merged by their
        timestamps; with follow they come as they are written, until the workers end (and, for the
        current gang, on into the next attempt until the job finishes). A worker whose log cannot be
        read is skipped with a warning; LogsUnavailable if none can be read."""
        import warnings

        failures: list[tuple[int, str]] = []
        produced = False
        for item in self.log_events(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt,
                                    namespace=namespace):
            if item.error is not None:
                failures.append((item.worker, item.error))
                continue
            if item.line is not None:
                produced = True
                yield item.worker, item.line
        if failures and not produced:
            raise LogsUnavailable(_logs_failure(name, failures))
        for w, err in failures:
            warnings.warn(f"worker {w}: {err}", stacklevel=2)

    def log_events(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
                   previous_attempt: bool = False, namespace: str | None = None) -> Iterator[LogItem]:
        """`logs` with its per-worker errors and attempt changes as items instead of warnings."""
        ns = self._ns(namespace)
        obj = self.get_raw(name, ns)
        uid = obj["metadata"].get("uid")
        st = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
        chosen = self._select(name, ns, uid, st, worker, attempt, previous_attempt, wait=follow)
        shown: set[str] = set()
        while True:
            failed: set[int] = set()
            for item in self._stream_pods(chosen, ns, follow):
                if item.error is not None:
                    failed.add(item.worker)
                yield item
            shown.update(p.metadata.name for p in chosen)
            if not follow or attempt is not None or previous_attempt or len(failed) == len(chosen):
                return  # (when no stream could be opened, following on would only wait for nothing)
            # Following the current gang: go on with the next attempt's pods until the job ends.
            while True:
                obj = self.get_raw(name, ns)
                st = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
                pods = [p for p in self._current(name, ns, uid, st, worker) if p.metadata.name not in shown]
                if pods:
                    first = min(int(p.metadata.labels[LABEL_ATTEMPT]) for p in pods)
                    yield LogItem(-1, None, None, notice=f"attempt {first}: {', '.join(p.metadata.name for p in pods)}")
                    chosen = pods
                    break
                if st.phase is not None and st.phase.terminal:
                    return
                time.sleep(1.0)

    def _current(self, name: str, ns: str, uid: str | None, st: api.DistributedTrainingJobStatus,
                 worker: int | None) -> list[client.V1Pod]:
        newest: dict[int, client.V1Pod] = {}
        for p in self._pods(name, ns, uid):
            a, i = int(p.metadata.labels[LABEL_ATTEMPT]), int(p.metadata.labels[LABEL_WORKER_INDEX])
            if st.rendezvous_attempt <= a <= st.attempt and (worker is None or i == worker):
                newest[i] = p  # sorted by attempt: the last one wins
        return [newest[i] for i in sorted(newest)]

    def _select(self, name: str, ns: str, uid: str | None, st: api.DistributedTrainingJobStatus,
                worker: int | None, attempt: int | None, previous_attempt: bool, wait: bool) -> list[client.V1Pod]:
        which = f" pod of worker {worker}" if worker is not None else " worker pods"
        if attempt is not None or previous_attempt:
            pods = self._pods(name, ns, uid)
            if previous_attempt:
                earlier = sorted({a for p in pods if (a := int(p.metadata.labels[LABEL_ATTEMPT])) < st.attempt})
                if not earlier:
                    raise LogsUnavailable(f"job {name!r} has no pods of an attempt before {st.attempt} "
                                          "(a gang restart keeps only the failed pod)")
                attempt = earlier[-1]
            chosen = [p for p in pods if int(p.metadata.labels[LABEL_ATTEMPT]) == attempt
                      and (worker is None or int(p.metadata.labels[LABEL_WORKER_INDEX]) == worker)]
            if not chosen:
                raise LogsUnavailable(f"job {name!r} has no{which} in attempt {attempt}")
            return chosen
        while True:
            chosen = self._current(name, ns, uid, st, worker)
            if chosen or not wait or (st.phase is not None and st.phase.terminal):
                break
            time.sleep(1.0)  # following a job whose workers are not created yet
            st = self.status(name, ns)
        if not chosen:
            raise LogsUnavailable(f"job {name!r} has no{which} (phase "
                                  f"{st.phase.value if st.phase else 'Pending'}, attempt {st.attempt})")
        return chosen

    def _stream_pods(self, pods: list[client.V1Pod], ns: str, follow: bool) -> Iterator[LogItem]:
        streams = _Streams()
        sources = {int(p.metadata.labels[LABEL_WORKER_INDEX]): self._pod_source(p.metadata.name, ns, follow, streams)
                   for p in pods}
        try:
            if follow:
                for w, line, err in interleave(sources, on_close=streams.close):
                    yield LogItem(w, _strip_timestamp(line) if line is not None else None, _one_line(err))
            else:
                failures: list[LogItem] = []

                def guarded(w: int, src: Callable[[], Iterable[str]]) -> Iterator[str]:
                    try:
                        yield from src()
                    except Exception as e:
                        failures.append(LogItem(w, None, _one_line(e)))

                for w, line in merge_by_time({w: guarded(w, s) for w, s in sources.items()}):
                    yield LogItem(w, _strip_timestamp(line), None)
                yield from failures
        finally:
            streams.close()

    def _pod_source(self, pod: str, ns: str, follow: bool, streams: _Streams) -> Callable[[], Iterator[str]]:
        def lines() -> Iterator[str]:
            while True:
                try:
                    resp = self.core.read_namespaced_pod_log(
                        pod, ns, container=api.TRAINER_CONTAINER, follow=follow, timestamps=True,
                        _preload_content=False, _request_timeout=(10, FOLLOW_READ_TIMEOUT if follow else 300))
                except ApiException as e:
                    if follow and e.status == 400 and self._pending(pod, ns) and not streams.closed:
                        time.sleep(1.0)  # not started yet: follow waits for it
                        continue
                    err = self._error(e, pod, ns, what="pod")
                    raise LogsUnavailable(err.message if isinstance(err, JobNotFound) else
                                          " ".join(str((_status_body(e) or {}).get("message") or
                                                       e.body or e.reason).split())) from e
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise ClusterUnreachable(f"cannot reach the Kubernetes API at {self.server}: "
                                             f"{_connection_problem(e)}") from e
                streams.add(resp)
                try:
                    yield from iter_lines(_chunks(resp))
                except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
                    if not streams.closed:
                        raise
                finally:
                    if streams.closed:
                        with contextlib.suppress(Exception):
                            resp.close()  # a shut-down connection must not go back to the pool
                    else:
                        resp.release_conn()
                return

        return lines

    def _pending(self, pod: str, ns: str) -> bool:
        try:
            p = self.core.read_namespaced_pod(pod, ns, _request_timeout=self.request_timeout)
        except ApiException:
            return False
        return p.status is not None and p.status.phase == "Pending" and p.metadata.deletion_timestamp is None


@dataclass(frozen=True)
class LogItem:
    worker: int
    line: str | None
    error: str | None
    notice: str | None = None


def _logs_failure(name: str, failures: list[tuple[int, str]]) -> str:
    failures = sorted(failures)  # (streams fail in any order when followed)
    first = failures[0][1]
    others = f" (and {len(failures) - 1} more worker(s))" if len(failures) > 1 else ""
    return f"cannot read the logs of job {name!r}: worker {failures[0][0]}: {first}{others}"


def _one_line(e: BaseException | None) -> str | None:
    if e is None:
        return None
    return " ".join(str(e).split()) or type(e).__name__


def _parse_job(obj: dict[str, Any]) -> Job:
    data = dict(obj)
    data["status"] = data.get("status") or {}
    try:
        return Job.model_validate(data)
    except ValidationError as e:
        name = (obj.get("metadata") or {}).get("name")
        raise InvalidSpec(_validation_message(e, f"job {name!r} in the cluster")) from e


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


# -------------------------------------------------------------------------------------- log streams


class _Streams:
    """Open log responses, closed all at once when the reader stops (Ctrl-C, a closed generator)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self.closed = False

    def add(self, resp: Any) -> None:
        with self._lock:
            if self.closed:
                resp.close()
                return
            self._open.append(resp)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            opened, self._open = self._open, []
        for resp in opened:
            # Another thread may be blocked reading this response; closing it here would wait for
            # that read (the file's lock) forever. Shutting the socket down wakes the reader first.
            conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                resp.close()


def _chunks(resp: Any) -> Iterator[bytes]:
    """The body as it arrives: a chunked (follow) response yields each chunk the kubelet flushed."""
    if getattr(resp, "chunked", False) and getattr(resp, "supports_chunked_reads", lambda: False)():
        yield from resp.read_chunked(decode_content=True)
    else:
        yield from resp.stream(64 * 1024)


def iter_lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Lines from a byte stream whose chunks split lines (and UTF-8 characters) anywhere. A last
    line without a newline is yielded at the end; "\\r\\n" ends a line too."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = ""
    for chunk in chunks:
        buf += decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if "\n" in buf:
            *complete, buf = buf.split("\n")
            for line in complete:
                yield line.removesuffix("\r")
    buf += decoder.decode(b"", final=True)
    if buf:
        yield buf.removesuffix("\r")


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")


def _time_key(line: str) -> str:
    """A sort key for a kubelet timestamp prefix (RFC 3339 with 0-9 fraction digits, UTC)."""
    m = _TS.match(line)
    return m.group(1) + "." + (m.group(2) or "").ljust(9, "0") if m else ""


def _strip_timestamp(line: str) -> str:
    m = _TS.match(line)
    return line[m.end():] if m else line


def merge_by_time(sources: Mapping[int, Iterable[str]]) -> Iterator[tuple[int, str]]:
    """Merges finished logs by their timestamp prefixes (lines without one keep their place after
    the line before them), reading each source lazily: memory stays at one line per source."""

    def keyed(w: int, lines: Iterable[str]) -> Iterator[tuple[str, int, int, str]]:
        last = ""
        for seq, line in enumerate(lines):
            last = _time_key(line) or last
            yield last, w, seq, line

    for _, w, _, line in heapq.merge(*(keyed(w, src) for w, src in sources.items())):
        yield w, line


_DONE = object()


def interleave(sources: Mapping[int, Callable[[], Iterable[str]]], on_close: Callable[[], None] | None = None,
               maxsize: int = 10000) -> Iterator[tuple[int, str | None, BaseException | None]]:
    """Runs every source in its own thread and yields (key, line, None) in arrival order, and
    (key, None, error) when a source fails. Ends when every source has ended. Closing the
    generator early calls `on_close` (which should unblock the sources' reads) and returns."""
    q: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item: tuple[int, Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(key: int, source: Callable[[], Iterable[str]]) -> None:
        try:
            for line in source():
                if not put((key, line, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the reader, never lost in a thread
            put((key, None, e))
        finally:
            put((key, _DONE, None))

    threads = [threading.Thread(target=run, args=(k, s), name=f"trainyard-logs-{k}", daemon=True)
               for k, s in sources.items()]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            key, line, err = q.get()
            if line is _DONE:
                remaining -= 1
                continue
            yield key, line, err
    finally:
        stop.set()
        if on_close is not None:
            on_close()


# --------------------------------------------------------------------------------- progress lines

_STEP = re.compile(r"\[trainyard\] step=(\d+)((?: [A-Za-z_][\w.]*=\S+)*)\s*$")
_FILE_ATTEMPT = re.compile(r"attempt-(\d+)$")
_FILE_WORKER = re.compile(r"worker-(\d+)\.log$")


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_progress(source: Any, *, worker: int | None = None, attempt: int | None = None) -> list[dict[str, Any]]:
    """The training steps in Trainyard progress lines (`[trainyard] step=N epoch=E loss=X ...`):
    one dict per line, every key=value field converted to int or float, plus `worker` and
    `attempt` when known. Anything before "[trainyard]" on a line (a `w0| ` prefix, a timestamp,
    torchrun's `[default0]:`) is ignored, and so are the other progress lines.

    `source` is any of: an iterable of lines; an iterable of (worker, line) pairs, as
    `TrainyardClient.logs()` yields them; text (a str holding newlines); a `pathlib.Path` to one
    log file; or a `pathlib.Path` to the work directory of `trainyard run`
    (`.trainyard/<job>/`, with `attempt-N/worker-I.log`), read in attempt order. After a gang
    restart the steps from the last checkpoint on appear twice: once per attempt."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        if path.is_dir():
            files = sorted(path.rglob("worker-*.log"), key=_log_file_key)
            return [r for f in files for r in parse_progress(f)]
        m_w, m_a = _FILE_WORKER.search(path.name), _FILE_ATTEMPT.search(path.parent.name)
        with open(path, errors="replace") as f:
            return parse_progress(f, worker=int(m_w.group(1)) if m_w else worker,
                                  attempt=int(m_a.group(1)) if m_a else attempt)
    if isinstance(source, str):
        source = source.splitlines()
    out: list[dict[str, Any]] = []
    for item in source:
        w, line = (item if isinstance(item, tuple) else (worker, item))
        m = _STEP.search(line.rstrip("\n"))
        if not m:
            continue
        rec: dict[str, Any] = {"step": int(m.group(1))}
        for pair in m.group(2).split():
            k, v = pair.split("=", 1)
            rec[k] = _number(v)
        if w is not None:
            rec["worker"] = w
        if attempt is not None:
            rec["attempt"] = attempt
        out.append(rec)
    return out


def _log_file_key(path: Path) -> tuple[int, int, str]:
    m_a, m_w = _FILE_ATTEMPT.search(path.parent.name), _FILE_WORKER.search(path.name)
    return (int(m_a.group(1)) if m_a else -1, int(m_w.group(1)) if m_w else -1, str(path))


# ------------------------------------------------------------------------------------ status view


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and (type(shell).__name__ == "ZMQInteractiveShell"
                                  or "google.colab" in str(type(shell)))


@dataclass
class StatusView:
    """Shows a job while `wait` polls it. Modes: "live" (a rich live table, for terminals),
    "jupyter" (an updating display in a notebook; no ipywidgets needed), "lines" (one plain line
    per change, for logs and CI) and "off". `StatusView.auto()` picks jupyter, live or off."""

    mode: str = "off"
    stream: Any = None
    _live: Any = field(default=None, repr=False)
    _handle: Any = field(default=None, repr=False)
    _last: Any = field(default=None, repr=False)

    @classmethod
    def auto(cls, fallback: str = "off", stream: Any = None) -> StatusView:
        if _in_jupyter():
            return cls("jupyter", stream)
        out = stream or sys.stderr
        if hasattr(out, "isatty") and out.isatty():
            return cls("live", out)
        return cls(fallback, stream)

    @property
    def wants_workers(self) -> bool:
        return self.mode in ("live", "jupyter")

    def update(self, obj: dict[str, Any], workers: list[WorkerInfo]) -> None:
        if self.mode == "off":
            return
        if self.mode == "lines":
            line = status_line(obj)
            if line != self._last:
                self._last = line
                out = self.stream or sys.stdout
                print(line, file=out, flush=True)
            return
        renderable = render_status(obj, workers)
        if self.mode == "jupyter":
            from IPython.display import display
            from rich.panel import Panel

            panel = Panel(renderable, expand=False)
            if self._handle is None:
                self._handle = display(panel, display_id=True)
            else:
                self._handle.update(panel)
            return
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(renderable, console=Console(file=self.stream or sys.stderr), refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            self._live.update(renderable, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def status_line(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    w = st.get("workers") or {}
    line = (f"{obj['metadata']['name']}: {st.get('phase') or 'Pending'}  ready {w.get('ready', 0)}/"
            f"{w.get('desired', 0)}  attempt {st.get('attempt', 0)}  restarts {st.get('restarts', 0)}")
    return line + (f"  {st['message']}" if st.get("message") else "")


def render_status(obj: dict[str, Any], workers: list[WorkerInfo]) -> Any:
    """A rich renderable: the job's phase and counts, its message and a table of its current pods."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    st = obj.get("status") or {}
    phase = st.get("phase") or "Pending"
    colour = {"Succeeded": "bold green", "Failed": "bold red", "Running": "green", "Restarting": "yellow",
              "Suspended": "magenta"}.get(phase, "cyan")
    w = st.get("workers") or {}
    head = Text.assemble((obj["metadata"]["name"], "bold"), "  ", (phase, colour),
                         f"  ready {w.get('ready', 0)}/{w.get('desired', 0)}  attempt {st.get('attempt', 0)}"
                         f"  restarts {st.get('restarts', 0)}  disruptions {st.get('disruptions', 0)}"
                         f"  age {age(obj['metadata'].get('creationTimestamp'))}")
    table = Table(box=None, pad_edge=False)
    for col in ("WORKER", "ATTEMPT", "POD", "PHASE", "EXIT", "REASON", "NODE"):
        table.add_column(col)
    current = [p for p in workers if p.attempt >= st.get("rendezvousAttempt", 0)]
    for p in current:
        table.add_row(str(p.index), str(p.attempt), p.name, p.phase + (" (deleting)" if p.deleting else ""),
                      "-" if p.exit_code is None else str(p.exit_code), p.reason or "-", p.node or "-")
    parts: list[Any] = [head]
    if st.get("message"):
        parts.append(Text(st["message"]))
    if current:
        parts.append(table)
    return Group(*parts)
