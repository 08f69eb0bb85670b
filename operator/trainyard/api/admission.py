"""The apiserver's checks of a DistributedTrainingJob, evaluated in Python from one source: the
generated CRD itself.

`admission_errors(obj, old)` walks the CRD's openAPIV3Schema over an object and reports what the
apiserver would refuse, worded as the apiserver words it: first the schema's own constraints
(types, required fields, enums, bounds, patterns), then, only if those hold (as the apiserver
does), every `x-kubernetes-validations` rule, evaluated by cel-python with its messageExpression
(else its message) at its fieldPath. So `trainyard run`, the SDK, the engine's re-check and the
apiserver refuse the same inputs with the same messages, and a rule added to the models is
enforced everywhere without a second copy of it.

`obj` must be the object as the apiserver validates it, defaults applied (`validation.with_defaults`
for a manifest, `validation.job_object` for parsed models). Transition rules (those reading
`oldSelf`) run only when `old` is given, as the apiserver runs them only on updates.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import celpy
from celpy.evaluation import CELEvalError

from .crd import openapi_schema

# cel-python logs every evaluation step at DEBUG, tracebacks of the errors it handles included: an
# operator run with --verbose would drown in them (and its own errors would hide among them).
logging.getLogger("celpy").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations entry and where in the schema it sits."""

    schema_path: str
    rule: str
    message: str
    message_expression: str | None
    field_path: str

    @property
    def transition(self) -> bool:
        return "oldSelf" in self.rule


@functools.cache
def crd_schema() -> dict[str, Any]:
    """The generated CRD's openAPIV3Schema (built once: treat it as read-only)."""
    return openapi_schema()


@functools.cache
def _env() -> celpy.Environment:
    return celpy.Environment()


@functools.cache
def _program(expr: str) -> Any:
    env = _env()
    return env.program(env.compile(expr))


def compile_rules() -> int:
    """Compiles every rule (and messageExpression) of the CRD ahead of use; returns how many. The
    first evaluation would otherwise compile them all (about 0.5 s) in the middle of a reconcile."""
    texts = {t for r in rules() for t in (r.rule, r.message_expression) if t}
    for text in texts:
        _program(text)
    return len(texts)


def rules() -> list[Rule]:
    """Every CEL rule of the CRD, in schema order (the test that each is evaluated reads this)."""
    out: list[Rule] = []

    def visit(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for r in node.get("x-kubernetes-validations") or []:
            out.append(Rule(path, r["rule"], r.get("message", ""), r.get("messageExpression"), r.get("fieldPath", "")))
        for name, sub in (node.get("properties") or {}).items():
            visit(sub, f"{path}.{name}" if path else name)
        if "items" in node:
            visit(node["items"], f"{path}[]")

    visit(crd_schema(), "")
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _type_ok(want: str, value: Any) -> bool:
    got = _json_type(value)
    return got == want or (want == "number" and got == "integer")


def _join(path: str, field: str) -> str:
    field = field.lstrip(".")
    return f"{path}.{field}" if path and field else path or field


def _children(schema: dict[str, Any], value: Any, old: Any, path: str) -> Iterator[tuple[dict, Any, Any, str]]:
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if value.get(name) is not None:
                yield sub, value[name], old.get(name) if isinstance(old, dict) else None, _join(path, name)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            # list items are not correlated with their old selves (no list-type map): no oldSelf
            yield schema["items"], item, None, f"{path}[{i}]"


def _structure(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """The schema's own constraints, worded as the apiserver words them."""
    v = json.dumps(value) if isinstance(value, str) else value
    want = schema.get("type")
    if want and not _type_ok(want, value):
        got = json.dumps(_json_type(value))
        errors.append(f"{path}: Invalid value: {got}: {path} in body must be of type {want}: {got}")
        return  # its constraints and children would only fail on the wrong type again
    if isinstance(value, dict):
        errors.extend(f"{_join(path, name)}: Required value" for name in schema.get("required") or []
                      if value.get(name) is None)
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: "
                      + ", ".join(json.dumps(e) for e in schema["enum"]))
    if isinstance(value, list) and len(value) > schema.get("maxItems", len(value)):
        errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    if isinstance(value, str):
        if len(value.encode()) > schema.get("maxLength", len(value.encode())):
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: Invalid value: {v}: {path} in body should be at least {schema['minLength']} "
                          "chars long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: Invalid value: {v}: {path} in body should match '{schema['pattern']}'")
    if _json_type(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: Invalid value: {v}: {path} in body should be greater than or equal to "
                          f"{schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: Invalid value: {v}: {path} in body should be less than or equal to "
                          f"{schema['maximum']}")
    for sub, child, _, where in _children(schema, value, None, path):
        _structure(sub, child, where, errors)


def _rules(schema: dict[str, Any], value: Any, old: Any, path: str, errors: list[str],
           failed: set[str] | None) -> None:
    for sub, child, old_child, where in _children(schema, value, old, path):
        _rules(sub, child, old_child, where, errors, failed)
    # A transition rule runs only on an update (with an old object).
    applicable = [r for r in schema.get("x-kubernetes-validations") or [] if old is not None or "oldSelf" not in r["rule"]]
    if not applicable:
        return
    # The same node (a container, a spec) of another job, or of this job at its next reconcile, is
    # judged the same: evaluate each distinct one once.
    value_json = json.dumps(value, sort_keys=True)
    old_json = json.dumps(old, sort_keys=True) if old is not None else None
    for r in applicable:
        text = r["rule"]
        outcome = _outcome(text, r.get("messageExpression"), r.get("message", ""),
                           value_json, old_json if "oldSelf" in text else None)
        if outcome is None:
            continue
        field = _join(path, r.get("fieldPath", "")) or "<root>"
        errors.append(f"{field}: Invalid value: {outcome}")
        if failed is not None:
            failed.add(text)


@functools.lru_cache(maxsize=4096)
def _outcome(rule: str, message_expression: str | None, message: str, value_json: str,
             old_json: str | None) -> str | None:
    """None if the rule holds for the node, else what the apiserver says (after "Invalid value: ")."""
    activation = {"self": celpy.json_to_cel(json.loads(value_json))}
    if old_json is not None:
        activation["oldSelf"] = celpy.json_to_cel(json.loads(old_json))
    try:
        result = _program(rule).evaluate(activation)
    except CELEvalError as e:
        result = e
    if isinstance(result, CELEvalError):
        return f"the rule {rule!r} could not be evaluated: {result.args[0] if result.args else result}"
    if not result:
        return _message({"rule": rule, "messageExpression": message_expression, "message": message}, activation)
    return None


def _message(r: dict[str, Any], activation: dict[str, Any]) -> str:
    """The messageExpression's string; the apiserver falls back to message when it fails."""
    if r.get("messageExpression"):
        try:
            out = _program(r["messageExpression"]).evaluate(activation)
            if isinstance(out, str) and out.strip():
                return str(out)
        except CELEvalError:
            pass
    return r.get("message") or f"failed rule: {r['rule']}"


def _errors(obj: Any, old: Any, failed: set[str] | None) -> list[str]:
    errors: list[str] = []
    _structure(crd_schema(), obj, "", errors)
    if errors:
        # as the apiserver: no rule runs on an object with schema errors (its rules may assume the types)
        return errors
    _rules(crd_schema(), obj, old, "", errors, failed)
    return errors


@functools.lru_cache(maxsize=512)
def _create_errors(text: str) -> tuple[str, ...]:
    return tuple(_errors(json.loads(text), None, None))


def admission_errors(obj: dict[str, Any], old: dict[str, Any] | None = None,
                     failed: set[str] | None = None) -> list[str]:
    """What the apiserver would refuse in `obj` (a create, or an update of `old`), one line each,
    "field: why", as the apiserver words it. `failed` collects the text of every rule that refused."""
    if old is None and failed is None:
        # The engine re-checks a job on every reconcile: evaluate each distinct object once.
        return list(_create_errors(json.dumps(obj, sort_keys=True)))
    return _errors(obj, old, failed)
