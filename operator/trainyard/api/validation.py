"""The CRD's checks for objects that did not pass through the apiserver (`trainyard run`, the
SDK's `Job.problems()`) or slipped past an older CRD (the engine's re-check). One source: the
CRD's own schema and CEL rules, evaluated by `admission.py`; nothing here restates a rule."""

from __future__ import annotations

import copy
from typing import Any

from .admission import admission_errors, crd_schema
from .errors import InvalidSpec
from .manifest import check_kind, parse_job
from .models import DistributedTrainingJob


def job_object(job: DistributedTrainingJob, with_status: bool = False) -> dict[str, Any]:
    """The object the apiserver would validate for a parsed job: the models' defaults are the
    CRD's, so their dump is the defaulted object."""
    meta = job.metadata
    name = meta.name or (getattr(meta, "generateName", None) or "") + "xxxxx"  # as the apiserver completes it
    obj: dict[str, Any] = {"apiVersion": job.apiVersion, "kind": job.kind, "metadata": {"name": name},
                           "spec": job.spec.dump()}
    if with_status:
        obj["status"] = job.status.dump()
    return obj


def semantic_errors(job: DistributedTrainingJob) -> list[str]:
    """What the CRD's rules refuse in a parsed job, "field: message" each (creation rules only: a
    parsed job has no old version to compare with)."""
    return admission_errors(job_object(job))


def with_defaults(obj: Any, schema: dict[str, Any] | None = None) -> Any:
    """`obj` with the CRD's defaults filled in, as the apiserver does before it validates."""
    schema = crd_schema() if schema is None else schema
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        # the apiserver prunes a null that the schema does not allow, then defaults the field
        out = {k: v for k, v in obj.items() if v is not None or (props.get(k) or {}).get("nullable")}
        for name, sub in props.items():
            if out.get(name) is None and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = with_defaults(out[name], sub)
        return out
    if isinstance(obj, list) and "items" in schema:
        return [with_defaults(v, schema["items"]) for v in obj]
    return obj


def checked_job(obj: Any, where: str = "") -> DistributedTrainingJob:
    """A manifest refused as the apiserver would refuse it (the same checks, the same words),
    else parsed by the models, which also refuse fields the CRD does not know (kubectl's strict
    field validation would; the apiserver drops them)."""
    check_kind(obj, where)
    where = where or "the manifest"
    if not (obj.get("metadata") or {}).get("name"):
        raise InvalidSpec(f"{where}: metadata.name: Required value: name is required", ["metadata.name"])
    created = {k: v for k, v in obj.items() if k != "status"}  # a create ignores the status
    errors = admission_errors(with_defaults(created))
    if errors:
        raise InvalidSpec(f"{where}: " + "; ".join(errors), [e.split(":", 1)[0] for e in errors])
    return parse_job(obj, DistributedTrainingJob, where)
