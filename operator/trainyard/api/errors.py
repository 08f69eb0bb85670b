"""Errors about input, shared by every client of the API (the SDK, the CLI, the local runtime),
and the one formatter of pydantic's validation errors."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


class TrainyardError(Exception):
    """Base class. `str(e)` is one line meant for a human; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(TrainyardError, ValueError):
    """A file that is missing, is not YAML, or holds the wrong thing."""

    exit_code = 2


class NotADistributedTrainingJob(InvalidInput):
    """YAML that is not a trainyard.dev/v1alpha1 DistributedTrainingJob."""


class InvalidSpec(InvalidInput):
    """The job was refused: by the apiserver (its message, which names the field and quotes the CEL
    rule's message) or, for structural errors, by the pydantic models before it was sent.
    `fields` lists the field paths named, when known."""

    def __init__(self, message: str, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = list(fields)


def error_fields(e: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in e.errors()]


def validation_message(e: ValidationError, where: str = "") -> str:
    """"where: spec.workers: Input should be greater than or equal to 1; ..." (one line)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return (f"{where}: " if where else "") + "; ".join(parts)
