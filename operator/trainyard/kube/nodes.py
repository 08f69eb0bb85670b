"""Nodes as the operator needs them: is each Ready, and since when not. A node that is gone, or
not Ready for longer than the engine's grace, loses its workers at once, without waiting for pod
garbage collection (40 s and more) or the 5-minute taint eviction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .pods import _ts, lean_meta


@dataclass(frozen=True)
class NodeState:
    ready: bool
    since: datetime | None  # when Ready last changed


def node_state(node: dict[str, Any]) -> NodeState:
    cond = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if cond is None:
        return NodeState(False, _ts((node.get("metadata") or {}).get("creationTimestamp")))
    return NodeState(cond.get("status") == "True", _ts(cond.get("lastTransitionTime")))


def lean_node(node: dict[str, Any]) -> dict[str, Any]:
    """The node as the operator holds it, in place: what node_state reads (a real node's status
    also lists every image it holds, kilobytes each)."""
    lean_meta(node)
    status = node.get("status")
    if isinstance(status, dict):
        node["status"] = {"conditions": status.get("conditions") or []}
    return node
