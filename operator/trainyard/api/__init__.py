"""The API contract: the DistributedTrainingJob models (the single source of truth the CRD is
generated from), reasons, names and labels, and what the operator agrees on with the trainer.

Everything above this package (engine, drivers, clients) imports from it; it imports nothing of
theirs.
"""

from .models import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    Checkpoint,
    CleanPodPolicy,
    Condition,
    DistributedTrainingJob,
    DistributedTrainingJobSpec,
    DistributedTrainingJobStatus,
    ElasticPolicy,
    FailurePolicy,
    ObjectMeta,
    Phase,
    Progress,
    Rendezvous,
    RestartMode,
    RestartPolicy,
    RestartScope,
    RunPolicy,
    WorkerCounts,
)
from .template import TEMPLATE_SCHEMA, TRAINER_CONTAINER, trainer_container
from .validation import semantic_errors

__all__ = [
    "API_VERSION", "GROUP", "KIND", "MAX_NAME_LENGTH", "PLURAL", "SHORT_NAMES", "SINGULAR", "TEMPLATE_SCHEMA",
    "TRAINER_CONTAINER", "VERSION", "Checkpoint", "CleanPodPolicy", "Condition", "DistributedTrainingJob",
    "DistributedTrainingJobSpec", "DistributedTrainingJobStatus", "ElasticPolicy", "FailurePolicy", "ObjectMeta",
    "Phase", "Progress", "Rendezvous", "RestartMode", "RestartPolicy", "RestartScope", "RunPolicy", "WorkerCounts",
    "semantic_errors",
    "trainer_container",
]
