"""CEL rules as the CRD carries them (x-kubernetes-validations).

Every rule names the field it refuses (fieldPath) and says why in its message. The rules stay
within what both the apiserver's CEL (cel-go with Kubernetes' libraries) and cel-python evaluate:
the standard macros and functions only (no optionals, no string extension library), because
`admission.py` evaluates these same rules in Python for `trainyard run` and the engine.
"""

from __future__ import annotations

from typing import Any


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None,
        message_expression: str | None = None) -> dict[str, Any]:
    """`message` is also what the apiserver falls back to when `message_expression` fails."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def cel_list(items: tuple[str, ...] | list[str]) -> str:
    """A CEL list literal of strings: ['a', 'b']."""
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


class Expr(str):
    """A CEL expression among the literal texts given to `concat`."""


def literal(text: str) -> str:
    """A CEL string literal of any text (quotes and backslashes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def concat(*parts: str) -> str:
    """A messageExpression: literal texts and `Expr`s, joined with +."""
    return " + ".join(p if isinstance(p, Expr) else literal(p) for p in parts)


_DIGITS = cel_list([str(d) for d in range(10)])


def int_text(expr: str, max_value: int) -> Expr:
    """The decimal text of a non-negative integer expression no larger than `max_value`.

    Not `string(expr)`: the apiserver's cost estimator takes a string made by string(int) to be of
    any length, so a message that concatenates one is refused as far too costly. Digits picked
    from a list of one-character literals have a known length."""
    digits = len(str(max_value))
    parts = [f"({expr} >= {10 ** k} ? {_DIGITS}[{expr} / {10 ** k} % 10] : '')" for k in range(digits - 1, 0, -1)]
    return Expr(" + ".join([*parts, f"{_DIGITS}[{expr} % 10]"]))
