"""What `trainyard run` checks before it starts anything, beyond the apiserver's own checks (the
job passed those already): what a pod gets from Kubernetes and a workstation cannot give. Each
problem is an InvalidInput naming the field or flag, so the command exits 2 with one line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..api import DistributedTrainingJob, trainer_container
from ..api.errors import InvalidInput
from .backend import container_env, working_dir

TRAINER = "spec.template.spec.containers[trainer]"


def check_runnable(job: DistributedTrainingJob) -> None:
    spec = job.spec
    if spec.run_policy.suspend:
        raise InvalidInput("spec.runPolicy.suspend is true: the job would wait for a resume that cannot come here; "
                           "set it to false to run the job locally")
    c = trainer_container(spec.template) or {}
    for e in c.get("env") or []:
        if "valueFrom" in e:
            raise InvalidInput(f"{TRAINER}.env[{e['name']}]: valueFrom cannot be resolved locally (no Secrets, "
                               "ConfigMaps or pod fields here): give it a value to run the job locally")
    if c.get("envFrom"):
        raise InvalidInput(f"{TRAINER}.envFrom cannot be resolved locally (no Secrets or ConfigMaps here): "
                           "give the variables values in env to run the job locally")
    command = c.get("command") or []
    if not command:
        what = "its args" if c.get("args") else "anything"
        raise InvalidInput(f"{TRAINER}.command is required to run locally: there is no image whose entrypoint "
                           f"would run {what}")
    _check_executable(command[0], c)


def _check_executable(exe: str, c: dict) -> None:
    where = f"{TRAINER}.command[0] {exe!r}"
    if "/" not in exe:
        path = container_env(c).get("PATH", "")
        if shutil.which(exe, path=path) is None:
            raise InvalidInput(f"{where}: not found on PATH (this Python's bin directory first, then $PATH)")
        return
    file = Path(working_dir(c) or ".") / exe
    if not file.exists():
        raise InvalidInput(f"{where}: no such file")
    if file.is_dir():
        raise InvalidInput(f"{where}: is a directory")
    if not os.access(file, os.X_OK):
        raise InvalidInput(f"{where}: is not executable (chmod +x it, or name its interpreter first, "
                           f"e.g. command: [python, {exe}])")


def prepare_dir(path: Path, flag: str) -> Path:
    """Creates a directory the run writes to (--workdir, --checkpoint-dir); refuses one it cannot use."""
    where = f"{flag} {path}"
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{where}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInput(f"{where}: cannot create it: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInput(f"{where}: is not writable")
    return path.resolve()
