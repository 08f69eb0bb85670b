"""The worker pod template: its schema in the CRD, and access to its trainer container.

The template stays open (preserve-unknown-fields) so any valid PodSpec passes; only the parts a
rule must see are typed: the containers and init containers (sidecars are init containers with
restartPolicy Always), their names, command, args, env and envFrom names, and the trainer's
restart settings. A CEL rule can only read fields the schema declares.
"""

from __future__ import annotations

from typing import Any

from .cel import Expr, cel, cel_list, concat
from .contract import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES

TRAINER_CONTAINER = "trainer"

# Kubernetes itself sets no limit on these lists; the apiserver needs one to bound the cost of the
# rules that walk them. Far above what a worker pod has.
MAX_CONTAINERS = 32
MAX_ENV = 512
MAX_ENV_FROM = 64


def _reserved(name: str) -> str:
    """CEL: the string expression `name` is a reserved env name."""
    prefixes = " || ".join(f"{name}.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
    return f"({prefixes} || {name} in {cel_list(RESERVED_ENV_NAMES)})"


def _reserved_prefix(prefix: str) -> str:
    """CEL: every name an envFrom with this prefix produces is reserved."""
    return "(" + " || ".join(f"{prefix}.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES) + ")"


def reserved_env_description() -> str:
    """"PET_*, TRAINYARD_*, MASTER_ADDR, MASTER_PORT, WORLD_SIZE or RANK"."""
    names = [f"{p}*" for p in RESERVED_ENV_PREFIXES] + list(RESERVED_ENV_NAMES)
    return ", ".join(names[:-1]) + f" or {names[-1]}"


WHY_RESERVED = ("Trainyard sets PET_* (torchrun's flags), TRAINYARD_* (the trainer library's) and MASTER_ADDR, "
                "MASTER_PORT, WORLD_SIZE and RANK (torch.distributed's env://) in every worker; remove it")

_ENV_RULES = [
    cel(
        f"!has(self.env) || self.env.all(e, !{_reserved('e.name')})",
        f"a container's env must not set {reserved_env_description()}: {WHY_RESERVED}",
        ".env",
        message_expression=concat("container '", Expr("self.name"), "' sets env ",
                                  Expr(f"self.env.filter(e, {_reserved('e.name')})[0].name"), f": {WHY_RESERVED}"),
    ),
    cel(
        f"!has(self.envFrom) || self.envFrom.all(s, !has(s.prefix) || !{_reserved_prefix('s.prefix')})",
        "a container's envFrom prefix must not start with "
        f"{' or '.join(RESERVED_ENV_PREFIXES)}: every variable it brings in would be one Trainyard sets",
        ".envFrom",
        message_expression=concat(
            "container '", Expr("self.name"), "' has envFrom prefix '",
            # (map first: a prefix taken from filter()'s result counts as unbounded in the cost estimate)
            Expr(f"self.envFrom.map(s, has(s.prefix) ? s.prefix : '').filter(p, {_reserved_prefix('p')})[0]"),
            "': every variable it brings in would be one Trainyard sets (PET_*, TRAINYARD_*)"),
    ),
]

_TRAINER_RULES = [
    cel(
        f"self.name != '{TRAINER_CONTAINER}' || !has(self.restartPolicy)",
        f"container '{TRAINER_CONTAINER}' must not set restartPolicy: the kubelet would restart the trainer behind "
        "spec.failurePolicy, which restarts the whole gang with a new rendezvous (spec.failurePolicy.inPlaceRestarts "
        "restarts processes inside a running pod)",
        ".restartPolicy",
    ),
    cel(
        f"self.name != '{TRAINER_CONTAINER}' || !has(self.restartPolicyRules)",
        f"container '{TRAINER_CONTAINER}' must not set restartPolicyRules: the kubelet would restart the trainer "
        "behind spec.failurePolicy (use spec.failurePolicy.restartPolicy ExitCode and retryableExitCodes)",
        ".restartPolicyRules",
    ),
]

_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def _container_schema(*, regular: bool) -> dict[str, Any]:
    """A container; `regular` ones (spec.containers) hold the trainer."""
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 63},
            "command": _STRINGS,
            "args": _STRINGS,
            "env": {
                "type": "array",
                "maxItems": MAX_ENV,
                "items": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "maxLength": 253}},
                },
            },
            "envFrom": {
                "type": "array",
                "maxItems": MAX_ENV_FROM,
                "items": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"prefix": {"type": "string", "maxLength": 253}},
                },
            },
            "restartPolicy": {"type": "string"},
            "restartPolicyRules": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "x-kubernetes-validations": _ENV_RULES + (_TRAINER_RULES if regular else []),
    }


TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": f"Pod template for every worker. It must have a container named '{TRAINER_CONTAINER}'.",
    "required": ["spec"],
    "properties": {
        "metadata": {
            "type": "object",
            "description": "Labels and annotations copied onto every worker pod.",
            "x-kubernetes-preserve-unknown-fields": True,
        },
        "spec": {
            "type": "object",
            "description": "A core/v1 PodSpec. restartPolicy is always Never: Trainyard does the restarting.",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["containers"],
            "x-kubernetes-validations": [
                cel(
                    f"self.containers.exists(c, c.name == '{TRAINER_CONTAINER}')",
                    f"spec.template.spec.containers must include a container named '{TRAINER_CONTAINER}'",
                    ".containers",
                )
            ],
            "properties": {
                "containers": {"type": "array", "maxItems": MAX_CONTAINERS,
                               "items": _container_schema(regular=True)},
                "initContainers": {"type": "array", "maxItems": MAX_CONTAINERS,
                                   "items": _container_schema(regular=False)},
            },
        },
    },
}


def trainer_container(template: dict[str, Any]) -> dict[str, Any] | None:
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == TRAINER_CONTAINER:
            return c
    return None
