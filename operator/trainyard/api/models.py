"""The DistributedTrainingJob API (trainyard.dev/v1alpha1).

These pydantic models are the single source of truth: the CRD in crds/ is generated from them
(`make crds`), their descriptions become `kubectl explain` text, and the CEL rules attached here
through `x-kubernetes-validations` are what the apiserver enforces. The operator and the local
runtime parse objects with the same models, so anything the schema lets through is re-checked
by pydantic and turned into a Failed condition instead of a crash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .base import API_VERSION, GROUP, KIND, MAX_NAME_LENGTH, PLURAL, SHORT_NAMES, SINGULAR, VERSION, Model
from .spec import (
    Checkpoint,
    CleanPodPolicy,
    DistributedTrainingJobSpec,
    ElasticPolicy,
    FailurePolicy,
    Rendezvous,
    RestartMode,
    RestartPolicy,
    RestartScope,
    RunPolicy,
)
from .status import Condition, DistributedTrainingJobStatus, Phase, Progress, WorkerCounts

__all__ = [
    "API_VERSION", "GROUP", "KIND", "MAX_NAME_LENGTH", "PLURAL", "SHORT_NAMES", "SINGULAR", "VERSION", "Checkpoint",
    "CleanPodPolicy", "Condition", "DistributedTrainingJob", "DistributedTrainingJobSpec",
    "DistributedTrainingJobStatus", "ElasticPolicy", "FailurePolicy", "Model", "ObjectMeta", "Phase", "Progress",
    "Rendezvous", "RestartMode", "RestartPolicy", "RestartScope", "RunPolicy", "WorkerCounts",
]


class ObjectMeta(BaseModel):
    """The subset of metadata the engine reads."""

    model_config = ConfigDict(extra="ignore")
    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    creationTimestamp: datetime | None = None
    deletionTimestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    resourceVersion: str | None = None


class DistributedTrainingJob(BaseModel):
    """A DistributedTrainingJob, as the operator and the local runtime read it."""

    model_config = ConfigDict(extra="ignore")
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: DistributedTrainingJobSpec
    status: DistributedTrainingJobStatus = Field(default_factory=DistributedTrainingJobStatus)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> DistributedTrainingJob:
        data = dict(obj)
        data["status"] = data.get("status") or {}
        return cls.model_validate(data)
