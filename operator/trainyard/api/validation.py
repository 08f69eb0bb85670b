"""The CRD's CEL rules, re-checked in Python for objects that did not pass through the apiserver
(the local runtime) or slipped past an older CRD. Each message names the field."""

from __future__ import annotations

from .contract import is_reserved_env
from .models import MAX_NAME_LENGTH, DistributedTrainingJob, RestartScope
from .template import TRAINER_CONTAINER, trainer_container


def semantic_errors(job: DistributedTrainingJob) -> list[str]:
    errs: list[str] = []
    spec = job.spec
    name = job.metadata.name
    if len(name) > MAX_NAME_LENGTH:
        errs.append(f"metadata.name must be at most {MAX_NAME_LENGTH} characters (worker hostnames are "
                    f"<name>-<attempt>-<index>), got {len(name)}")
    if spec.workers is None and spec.elastic is None:
        errs.append("spec.workers is required unless spec.elastic is set")
    if spec.elastic:
        if spec.elastic.min_workers > spec.elastic.max_workers:
            errs.append("spec.elastic.minWorkers must not exceed spec.elastic.maxWorkers")
        elif spec.workers is not None and not (spec.elastic.min_workers <= spec.workers <= spec.elastic.max_workers):
            errs.append("spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers")
    if spec.failure_policy.restart_scope == RestartScope.WORKER and spec.elastic is None:
        errs.append("spec.failurePolicy.restartScope Worker needs spec.elastic")
    if trainer_container(spec.template) is None:
        errs.append(f"spec.template.spec.containers must include a container named '{TRAINER_CONTAINER}'")
    for c in (spec.template.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            n = str(e.get("name", ""))
            if is_reserved_env(n):
                errs.append(f"spec.template.spec.containers[{c.get('name')}].env[{n}] is reserved: Trainyard sets it")
    return errs
