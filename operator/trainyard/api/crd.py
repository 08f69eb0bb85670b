"""Generates the CustomResourceDefinition from the pydantic models (`make crds`).

pydantic emits JSON Schema; the apiserver wants a structural OpenAPI v3 subset: no $ref, no
anyOf-with-null, no titles, no `default: null`, `nullable` instead. This converts one to the other.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from . import models as api
from .cel import Expr, cel, concat, int_text, literal
from .spec import MAX_WORKERS
from .template import TEMPLATE_SCHEMA

_DROP = {"title", "discriminator"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        rest = {k: v for k, v in node.items() if k != "$ref"}
        target.update(rest)  # a field's own description wins over the model's docstring
        return _inline(target, defs)
    return {k: _inline(v, defs) for k, v in node.items()}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if node.pop("x-trainyard-schema", None) == "template":
        return {**copy.deepcopy(TEMPLATE_SCHEMA), "description": node.get("description", "")}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {options} structurally")
        node = {**options[0], **node, "nullable": True}
    for key in _DROP:
        node.pop(key, None)
    # Unknown fields are pruned by the apiserver (and rejected by kubectl's strict field
    # validation); additionalProperties next to properties is not structural.
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if "default" in node and node["default"] is None:
        node.pop("default")
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    if node.get("format") == "date-time":
        node["type"] = "string"
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["x-kubernetes-preserve-unknown-fields"] = True
    out = {}
    for k, v in node.items():
        if k == "properties":
            out[k] = {name: _structural(sub) for name, sub in v.items()}
        else:
            out[k] = _structural(v)
    return out


def _schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_inline(raw, defs))


# A transition rule's escape: a job that never started or is Suspended (no workers) may change.
_NOT_RUNNING = "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Suspended'"
_FINISHED = "oldSelf.status.phase in ['Succeeded', 'Failed']"


def _frozen_while_running(field: str, unchanged: str, why: str) -> dict[str, Any]:
    """A transition rule: `field` keeps its value while the job has workers (`why` they need it)."""
    return cel(
        f"{_NOT_RUNNING} || ({unchanged})",
        f"{field} cannot change while the job is running: {why}; suspend it first",
        "." + field,
        message_expression=concat(
            f"{field} cannot change while the job is ", Expr("oldSelf.status.phase"), ": ",
            Expr(f"({_FINISHED} ? {literal('it has finished; create a new job')} : "
                 f"{literal(why + '; suspend it first (spec.runPolicy.suspend: true), wait for phase Suspended, then change it')})"),
        ),
    )


def _same_optional(path: str) -> str:
    return f"has(self.{path}) == has(oldSelf.{path}) && (!has(self.{path}) || self.{path} == oldSelf.{path})"


ROOT_RULES = [
    cel(
        f"size(self.metadata.name) <= {api.MAX_NAME_LENGTH}",
        f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters: worker hostnames are "
        "<name>-<attempt>-<index> and must fit in 63",
        ".metadata.name",
        message_expression=concat(f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters, not ",
                                  int_text("size(self.metadata.name)", 253),
                                  ": worker hostnames are <name>-<attempt>-<index> and must fit in 63"),
    ),
    cel(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS label starting with a letter: lowercase letters, digits and '-' "
        "(it names the job's Service)",
        ".metadata.name",
    ),
    _frozen_while_running("spec.template", "self.spec.template == oldSelf.spec.template",
                          "the running workers were made from it"),
    _frozen_while_running("spec.procsPerWorker", "self.spec.procsPerWorker == oldSelf.spec.procsPerWorker",
                          "every worker's torchrun runs that many processes, and the group's size counts them"),
    _frozen_while_running("spec.rendezvous.port", "self.spec.rendezvous.port == oldSelf.spec.rendezvous.port",
                          "worker 0 serves the rendezvous on it"),
    _frozen_while_running("spec.checkpoint", _same_optional("spec.checkpoint"),
                          "every worker mounts the claim it names"),
    _frozen_while_running("spec.elastic", _same_optional("spec.elastic"),
                          "every worker's PET_NNODES comes from it"),
    _frozen_while_running("spec.runtime", _same_optional("spec.runtime"),
                          "every worker was started by it"),
    # `kubectl scale` of a fixed-size job: new workers would get PET_NNODES=N:N for another N.
    cel(
        f"{_NOT_RUNNING} || has(self.spec.elastic) || "
        "(has(self.spec.workers) && has(oldSelf.spec.workers) && self.spec.workers == oldSelf.spec.workers)",
        "spec.workers of a fixed-size job cannot change while it is running: every worker has PET_NNODES=N:N; "
        "set spec.elastic to scale it, or suspend it first",
        ".spec.workers",
        message_expression=concat(
            "spec.workers of a fixed-size job cannot change while it is ", Expr("oldSelf.status.phase"), " (",
            int_text("self.spec.workers", MAX_WORKERS), " was asked for): its ",
            int_text("oldSelf.spec.workers", MAX_WORKERS), " workers have PET_NNODES=",
            int_text("oldSelf.spec.workers", MAX_WORKERS), ":", int_text("oldSelf.spec.workers", MAX_WORKERS), "; ",
            Expr(f"({_FINISHED} ? {literal('it has finished')} : "
                 f"{literal('set spec.elastic to scale a job, or suspend it first')})"),
        ),
    ),
]


def openapi_schema() -> dict[str, Any]:
    spec = _schema(api.DistributedTrainingJobSpec)
    status = _schema(api.DistributedTrainingJobStatus)
    # Defaults belong to the controller, not the apiserver, for status.
    _strip_defaults(status)
    return {
        "type": "object",
        "description": "DistributedTrainingJob runs torchrun workers as pods, restarts them under a "
                       "failure policy and reports what happened.",
        "required": ["spec"],
        "x-kubernetes-validations": ROOT_RULES,
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: trainyard.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: DistributedTrainingJob."},
            # name is declared so that a rule's fieldPath may point at it; its maxLength (the apiserver's
            # own limit) bounds the cost of the rules that read it
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 253}}},
            "spec": spec,
            "status": status,
        },
    }


def _strip_defaults(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("default", None)
        for v in node.values():
            _strip_defaults(v)
    elif isinstance(node, list):
        for v in node:
            _strip_defaults(v)


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["all", "trainyard"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers",
                            "statusReplicasPath": ".status.workers.active",
                            # the operator fills it (trainyard.dev/job-name=<job>): an HPA needs it
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.workers.ready",
                         "description": "Workers running and ready"},
                        {"name": "Desired", "type": "integer", "jsonPath": ".status.workers.desired"},
                        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
                        {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step",
                         "description": "The last training step rank 0 reported"},
                        {"name": "%", "type": "number", "jsonPath": ".status.progress.percent",
                         "description": "step / totalSteps"},
                        {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta",
                         "description": "Time left when the step was reported, at the recent step rate"},
                        {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1},
                        {"name": "Disruptions", "type": "integer", "jsonPath": ".status.disruptions", "priority": 1},
                        {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss", "priority": 1},
                        {"name": "Last-Ckpt", "type": "integer", "jsonPath": ".status.progress.lastCheckpointStep",
                         "priority": 1, "description": "The step of the last completed checkpoint"},
                        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


HEADER = "# Generated by `make crds` from the models in operator/trainyard/api/. Do not edit.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120)
