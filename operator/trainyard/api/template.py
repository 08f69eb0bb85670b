"""The worker pod template: its schema in the CRD, and access to its trainer container.

The template stays open (preserve-unknown-fields) so any valid PodSpec passes; only the parts
the CEL rules must see (containers, their names and env names) are typed.
"""

from __future__ import annotations

from typing import Any

from .cel import cel
from .contract import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES

TRAINER_CONTAINER = "trainer"


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _reserved_env_cel() -> str:
    prefixes = " || ".join(f"e.name.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
    return f"self.all(c, !has(c.env) || c.env.all(e, !({prefixes} || e.name in {_cel_list(RESERVED_ENV_NAMES)})))"


def reserved_env_description() -> str:
    """"PET_*, TRAINYARD_*, MASTER_ADDR, MASTER_PORT, WORLD_SIZE or RANK"."""
    names = [f"{p}*" for p in RESERVED_ENV_PREFIXES] + list(RESERVED_ENV_NAMES)
    return ", ".join(names[:-1]) + f" or {names[-1]}"


_CONTAINER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 63},
        "env": {
            "type": "array",
            "maxItems": 512,
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": ["name"],
                "properties": {"name": {"type": "string", "maxLength": 253}},
            },
        },
    },
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
                "containers": {
                    "type": "array",
                    "maxItems": 32,
                    "items": _CONTAINER_SCHEMA,
                    "x-kubernetes-validations": [
                        cel(
                            _reserved_env_cel(),
                            f"spec.template.spec.containers[].env must not set {reserved_env_description()}: "
                            "Trainyard sets them for the rendezvous",
                        )
                    ],
                },
            },
        },
    },
}


def trainer_container(template: dict[str, Any]) -> dict[str, Any] | None:
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == TRAINER_CONTAINER:
            return c
    return None
