"""Reading a DistributedTrainingJob manifest: the one YAML loader of the package, so that
`trainyard run`, `trainyard submit` and the SDK report a bad file the same way."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import InvalidInput, InvalidSpec, NotADistributedTrainingJob, error_fields, validation_message
from .models import API_VERSION, KIND

M = TypeVar("M", bound=BaseModel)


def read_source(source: str | os.PathLike) -> tuple[str, str]:
    """(text, where): `source` is a path (or a str naming a file) or YAML text."""
    if isinstance(source, os.PathLike) or ("\n" not in source and (
            os.path.exists(source) or source.endswith((".yaml", ".yml", ".json")))):
        path = Path(source)
        try:
            return path.read_text(), str(path)
        except FileNotFoundError:
            raise InvalidInput(f"{path}: no such file") from None
        except IsADirectoryError:
            raise InvalidInput(f"{path}: is a directory, not a YAML file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{path}: cannot read it: {e}") from None
    return str(source), "the YAML"


def job_document(source: str | os.PathLike) -> tuple[Any, str]:
    """The one DistributedTrainingJob document of a YAML file or text (other documents may be
    there too), and where it came from."""
    text, where = read_source(source)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InvalidInput(f"{where}: not valid YAML: {problem}{at}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(jobs) > 1:
        raise InvalidInput(f"{where}: holds {len(jobs)} {KIND}s; use one per file")
    if jobs:
        return jobs[0], where
    if not docs:
        raise NotADistributedTrainingJob(f"{where}: no YAML document in it")
    if len(docs) == 1:
        return docs[0], where  # parse_job names the kind it holds
    kinds = ", ".join(str(d.get("kind")) if isinstance(d, dict) else type(d).__name__ for d in docs)
    raise NotADistributedTrainingJob(f"{where}: no {KIND} among its documents ({kinds})")


def check_kind(obj: Any, where: str = "") -> None:
    """Refuses anything but a trainyard.dev/v1alpha1 DistributedTrainingJob with a spec."""
    where = where or "the manifest"
    if not isinstance(obj, Mapping):
        raise NotADistributedTrainingJob(f"{where}: not a Kubernetes object")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind != KIND:
        raise NotADistributedTrainingJob(
            f"{where}: kind {kind or '(none)'} ({api_version or 'no apiVersion'}) is not a {KIND} ({API_VERSION})")
    if api_version != API_VERSION:
        raise NotADistributedTrainingJob(f"{where}: apiVersion {api_version or '(none)'} is not served; a {KIND} is "
                                         f"{API_VERSION}")
    if "spec" not in obj:
        raise InvalidSpec(f"{where}: spec is required", ["spec"])


def parse_job(obj: Any, model: type[M], where: str = "") -> M:
    """Validates a manifest (a dict as yaml.safe_load returns it) with `model`."""
    check_kind(obj, where)
    where = where or "the manifest"
    data = dict(obj)
    data["metadata"] = data.get("metadata") or {}
    data["status"] = data.get("status") or {}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(validation_message(e, where), error_fields(e)) from e
