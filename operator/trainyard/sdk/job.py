"""`Job`: a DistributedTrainingJob as a user writes it, with constructors and its manifest."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import Field

from .. import api
from ..api.errors import InvalidSpec
from ..api.manifest import job_document, parse_job


class JobMeta(api.ObjectMeta):
    """Metadata of a job as a user writes it: the namespace is optional (the client's is used)."""

    name: str = ""
    generateName: str | None = None
    namespace: str | None = None  # type: ignore[assignment]
    annotations: dict[str, str] = Field(default_factory=dict)


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
        job = parse_job(obj, cls, source)
        if not job.metadata.name and not job.metadata.generateName:
            raise InvalidSpec(f"{source or 'the manifest'}: metadata.name is required", ["metadata.name"])
        return job

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> Job:
        """From a file (a path, or a str naming an existing file) or from YAML text. The YAML may
        hold other documents; exactly one must be a DistributedTrainingJob."""
        return cls.from_dict(*job_document(source))

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
