"""ONE table of inputs the CRD refuses, each with the field and the message the refusal names.

Two tiers read it: the cluster tier (tests/cluster/test_crd_validation.py: the real apiserver
refuses each, naming the field) and the runtime tier (tests/runtime/test_bad_inputs.py:
`trainyard run` exits 2 with the same message on stderr). tests/unit/test_api_crd.py checks that
every CEL rule of the generated CRD is refused by some row, evaluated in Python.

`BAD_INPUTS` are creations. `RUNNING_CHANGES` are updates of a job that is running: the apiserver
refuses them while the job runs and takes them once it is Suspended (a local run has no updates,
so only the unit tier and the cluster tier read them).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any

TRAINER = {"name": "trainer", "image": "trainyard/trainer:test", "command": [sys.executable, "-c", "pass"]}


def manifest(name: str = "bad", **spec: Any) -> dict[str, Any]:
    """A valid job every row starts from (its command runs anywhere, though no row gets that far)."""
    body: dict[str, Any] = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "metadata": {"name": name},
        "spec": {"workers": 2, "template": {"spec": {"containers": [copy.deepcopy(TRAINER)]}}},
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396): maps merge, None deletes, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Bad:
    id: str
    patch: dict[str, Any]  # merged into manifest()
    field: str  # the field the refusal names
    message: str  # a part of the message, the same from the apiserver and from `trainyard run`

    def body(self, name: str = "bad") -> dict[str, Any]:
        return merge(manifest(name), self.patch)


def _spec(**spec: Any) -> dict[str, Any]:
    return {"spec": spec}


def _containers(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": list(containers)}
    if init is not None:
        pod["initContainers"] = init
    return _spec(template={"spec": pod})


def _env(**env: str) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in env.items()]


SIDE = {"name": "side", "image": "side:1"}

BAD_INPUTS: list[Bad] = [
    # -- metadata
    Bad("name-too-long", {"metadata": {"name": "a" * 49}}, "metadata.name",
        "metadata.name must be at most 48 characters, not 49: worker hostnames are <name>-<attempt>-<index>"),
    Bad("name-not-a-dns-label", {"metadata": {"name": "9lives"}}, "metadata.name",
        "metadata.name must be a DNS label starting with a letter"),
    # -- sizes
    Bad("no-workers", _spec(workers=None), "spec.workers", "spec.workers is required unless spec.elastic is set"),
    Bad("workers-a-string", _spec(workers="2"), "spec.workers", "spec.workers in body must be of type integer"),
    Bad("elastic-min-above-max", _spec(elastic={"minWorkers": 3, "maxWorkers": 2}, workers=None),
        "spec.elastic.minWorkers", "spec.elastic.minWorkers (3) must not exceed spec.elastic.maxWorkers (2)"),
    Bad("workers-out-of-elastic-bounds", _spec(elastic={"minWorkers": 1, "maxWorkers": 2}, workers=5),
        "spec.workers", "spec.workers must lie within spec.elastic.minWorkers and spec.elastic.maxWorkers (1 to 2); "
                        "5 was asked for"),
    Bad("too-many-workers", _spec(workers=100001), "spec.workers", "should be less than or equal to 100000"),
    Bad("procs-per-worker-zero", _spec(procsPerWorker=0), "spec.procsPerWorker", "should be greater than or equal to 1"),
    # -- durations: every one bounded (1e12 made the engine overflow; 2147483647 the probe's int32)
    Bad("active-deadline-overflows", _spec(runPolicy={"activeDeadlineSeconds": 1000000000000}),
        "spec.runPolicy.activeDeadlineSeconds", "should be less than or equal to 31536000"),
    Bad("progress-deadline-overflows-the-probe", _spec(runPolicy={"progressDeadlineSeconds": 2147483647}),
        "spec.runPolicy.progressDeadlineSeconds", "should be less than or equal to 31536000"),
    Bad("first-progress-deadline-without-a-progress-deadline", _spec(runPolicy={"firstProgressDeadlineSeconds": 300}),
        "spec.runPolicy.firstProgressDeadlineSeconds",
        "spec.runPolicy.firstProgressDeadlineSeconds needs spec.runPolicy.progressDeadlineSeconds"),
    Bad("first-progress-deadline-too-long", _spec(runPolicy={"progressDeadlineSeconds": 60,
                                                             "firstProgressDeadlineSeconds": 31536001}),
        "spec.runPolicy.firstProgressDeadlineSeconds", "should be less than or equal to 31536000"),
    Bad("startup-deadline-too-long", _spec(runPolicy={"startupDeadlineSeconds": 31536001}),
        "spec.runPolicy.startupDeadlineSeconds", "should be less than or equal to 31536000"),
    Bad("ttl-too-long", _spec(runPolicy={"ttlSecondsAfterFinished": 99999999999}),
        "spec.runPolicy.ttlSecondsAfterFinished", "should be less than or equal to 31536000"),
    Bad("backoff-too-long", _spec(failurePolicy={"backoffSeconds": 86401}),
        "spec.failurePolicy.backoffSeconds", "should be less than or equal to 86400"),
    # -- failure policy
    Bad("unknown-restart-policy", _spec(failurePolicy={"restartPolicy": "Sometimes"}),
        "spec.failurePolicy.restartPolicy", 'Unsupported value: "Sometimes": supported values: "Never", "OnFailure", '
                                            '"ExitCode"'),
    Bad("negative-backoff-limit", _spec(failurePolicy={"backoffLimit": -1}),
        "spec.failurePolicy.backoffLimit", "should be greater than or equal to 0"),
    Bad("retryable-codes-without-exit-code-policy", _spec(failurePolicy={"retryableExitCodes": [143]}),
        "spec.failurePolicy.retryableExitCodes",
        "retryableExitCodes applies only to restartPolicy ExitCode, and this job has restartPolicy OnFailure"),
    Bad("retryable-codes-with-never", _spec(failurePolicy={"restartPolicy": "Never", "retryableExitCodes": [1]}),
        "spec.failurePolicy.retryableExitCodes", "this job has restartPolicy Never"),
    Bad("worker-scope-on-a-fixed-size-job", _spec(failurePolicy={"restartScope": "Worker", "inPlaceRestarts": 1}),
        "spec.failurePolicy.restartScope", "spec.failurePolicy.restartScope Worker needs spec.elastic"),
    Bad("runtime-horovod", _spec(runtime="horovod"), "spec.runtime", "Unsupported value: \"horovod\""),
    Bad("tensorflow-elastic", _spec(runtime="tensorflow", elastic={"minWorkers": 1, "maxWorkers": 2}, workers=2),
        "spec.runtime", "spec.runtime tensorflow runs one fixed-size MultiWorkerMirroredStrategy group"),
    Bad("tensorflow-worker-scope", _spec(runtime="tensorflow", failurePolicy={"inPlaceRestarts": 1}),
        "spec.failurePolicy", "spec.runtime tensorflow recovers by gang restarts only"),
    Bad("worker-scope-without-in-place-restarts",
        _spec(elastic={"minWorkers": 2, "maxWorkers": 3}, workers=3, failurePolicy={"restartScope": "Worker"}),
        "spec.failurePolicy.inPlaceRestarts", "Worker needs spec.failurePolicy.inPlaceRestarts of at least 1"),
    Bad("warm-restart-mode-unknown", _spec(failurePolicy={"restartMode": "Hot"}),
        "spec.failurePolicy.restartMode", "Unsupported value: \"Hot\""),
    Bad("warm-with-elastic", _spec(elastic={"minWorkers": 1, "maxWorkers": 2}, failurePolicy={"restartMode": "Warm"}),
        "spec.failurePolicy.restartMode", "spec.failurePolicy.restartMode Warm hands each rank of a fixed-size group"),
    Bad("warm-with-procs-per-worker", _spec(procsPerWorker=2, failurePolicy={"restartMode": "Warm"}),
        "spec.failurePolicy.restartMode", "needs runtime torchrun, no spec.elastic and procsPerWorker 1"),
    Bad("warm-with-tensorflow", _spec(runtime="tensorflow", failurePolicy={"restartMode": "Warm"}),
        "spec.failurePolicy.restartMode", "spec.failurePolicy.restartMode Warm hands each rank"),
    # -- checkpoint
    Bad("claim-and-size", _spec(checkpoint={"claimName": "c", "size": "1Gi"}),
        "spec.checkpoint.claimName", "mounts an existing claim: do not also set size"),
    Bad("neither-claim-nor-size", _spec(checkpoint={"mountPath": "/c"}),
        "spec.checkpoint.size", "needs either claimName"),
    Bad("retain-an-existing-claim", _spec(checkpoint={"claimName": "c", "retain": True}),
        "spec.checkpoint.retain", "an existing claimName is never deleted"),
    Bad("size-not-a-quantity", _spec(checkpoint={"size": "lots"}), "spec.checkpoint.size", "in body should match"),
    # -- the pod template
    Bad("no-trainer", _containers({"name": "main", "image": "x"}),
        "spec.template.spec.containers", "must include a container named 'trainer'"),
    Bad("container-without-a-name", _containers({"image": "x"}),
        "spec.template.spec.containers[0].name", "Required value"),
    Bad("command-a-string", _containers({**TRAINER, "command": "python train.py"}),
        "spec.template.spec.containers[0].command", "must be of type array"),
    Bad("reserved-pet-in-the-trainer", _containers({**TRAINER, "env": _env(PET_NNODES="9")}),
        "spec.template.spec.containers[0].env", "container 'trainer' sets env PET_NNODES: Trainyard sets"),
    Bad("reserved-master-addr-in-a-sidecar-container", _containers({**SIDE, "env": _env(MASTER_ADDR="x")}, TRAINER),
        "spec.template.spec.containers[0].env", "container 'side' sets env MASTER_ADDR: Trainyard sets"),
    Bad("reserved-rank-in-an-init-container", _containers(TRAINER, init=[{**SIDE, "name": "setup",
                                                                         "env": _env(RANK="0")}]),
        "spec.template.spec.initContainers[0].env", "container 'setup' sets env RANK: Trainyard sets"),
    Bad("reserved-name-in-a-sidecar", _containers(TRAINER, init=[{**SIDE, "restartPolicy": "Always",
                                                                 "env": _env(TRAINYARD_ATTEMPT="1")}]),
        "spec.template.spec.initContainers[0].env", "container 'side' sets env TRAINYARD_ATTEMPT"),
    Bad("reserved-envfrom-prefix", _containers({**TRAINER, "envFrom": [{"configMapRef": {"name": "cm"}},
                                                                       {"prefix": "PET_", "configMapRef": {"name": "c"}}]}),
        "spec.template.spec.containers[0].envFrom", "container 'trainer' has envFrom prefix 'PET_'"),
    Bad("reserved-envfrom-prefix-in-an-init-container",
        _containers(TRAINER, init=[{**SIDE, "envFrom": [{"prefix": "TRAINYARD_X", "secretRef": {"name": "s"}}]}]),
        "spec.template.spec.initContainers[0].envFrom", "container 'side' has envFrom prefix 'TRAINYARD_X'"),
    Bad("trainer-restart-policy", _containers({**TRAINER, "restartPolicy": "Always"}),
        "spec.template.spec.containers[0].restartPolicy", "container 'trainer' must not set restartPolicy"),
    Bad("trainer-restart-policy-rules", _containers(
        {**TRAINER, "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}),
        "spec.template.spec.containers[0].restartPolicyRules", "container 'trainer' must not set restartPolicyRules"),
]


@dataclass(frozen=True)
class Change:
    """An update of a running job (the `start` spec) that the apiserver refuses until it is Suspended."""

    id: str
    patch: dict[str, Any]  # a merge patch of the running job
    field: str
    message: str
    start: dict[str, Any] = field(default_factory=dict)  # spec fields of the running job
    scale: int | None = None  # the cluster tier makes this change with `kubectl scale --replicas`
    # the phase the job has when the change comes (a claim kwok cannot bind keeps the pods Pending)
    phase: str = "Running"

    def body(self, name: str = "running") -> dict[str, Any]:
        return manifest(name, **self.start)


RUNNING = "cannot change while the job is Running"
PENDING = "cannot change while the job is Pending"
SUSPEND = "suspend it first (spec.runPolicy.suspend: true), wait for phase Suspended, then change it"

RUNNING_CHANGES: list[Change] = [
    Change("template", _containers({**TRAINER, "image": "trainyard/trainer:other"}), "spec.template",
           f"spec.template {RUNNING}: the running workers were made from it; {SUSPEND}"),
    Change("procs-per-worker", _spec(procsPerWorker=4), "spec.procsPerWorker", f"spec.procsPerWorker {RUNNING}"),
    Change("rendezvous-port", _spec(rendezvous={"port": 29500}), "spec.rendezvous.port",
           f"spec.rendezvous.port {RUNNING}: worker 0 serves the rendezvous on it"),
    Change("checkpoint-claim", _spec(checkpoint={"claimName": "other"}), "spec.checkpoint",
           f"spec.checkpoint {PENDING}: every worker mounts the claim it names",
           start={"checkpoint": {"claimName": "mine"}}, phase="Pending"),
    Change("checkpoint-added", _spec(checkpoint={"size": "1Gi"}), "spec.checkpoint", f"spec.checkpoint {RUNNING}"),
    Change("elastic-bounds", _spec(elastic={"minWorkers": 1, "maxWorkers": 8}), "spec.elastic",
           f"spec.elastic {RUNNING}: every worker's PET_NNODES comes from it",
           start={"elastic": {"minWorkers": 1, "maxWorkers": 4}}),
    Change("runtime", _spec(runtime="tensorflow"), "spec.runtime",
           f"spec.runtime {RUNNING}: every worker was started by it"),
    Change("scale-a-fixed-size-job", _spec(workers=3), "spec.workers",
           "spec.workers of a fixed-size job cannot change while it is Running (3 was asked for): its 2 workers have "
           "PET_NNODES=2:2; set spec.elastic to scale a job, or suspend it first", scale=3),
]
