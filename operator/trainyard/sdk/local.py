"""`LocalClient`: the SDK on the workstation runtime, for a notebook without a cluster.

It runs jobs as `trainyard run` does (the operator's engine driving local processes: trainyard.local)
in a thread of this Python process, and answers with the methods of `TrainyardClient` a notebook
uses: `submit`, `status`, `progress`, `wait` (the same live display), `records` (the progress lines,
for a plot) and `delete`. Each job's logs and its Lease stand-in are in `<workdir>/<job>/`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import api
from ..api.validation import checked_job
from ..engine.progress import newest_progress
from ..local.preflight import check_runnable, prepare_dir
from ..local.runner import LOCAL_NAMESPACE, Runner, RunResult
from .errors import JobExists, JobNotFound, WaitTimeout
from .job import Job
from .progress import parse_progress
from .view import StatusView


@dataclass
class _Run:
    runner: Runner
    created: datetime
    workdir: Path
    thread: threading.Thread | None = None
    result: RunResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LocalClient:
    """Jobs on this machine: every worker a local process tree with exactly the env a pod gets.

    workdir: where each job's logs, Lease stand-in and (by default) checkpoints go, `<workdir>/<job>/`.
    """

    def __init__(self, workdir: str | os.PathLike = ".trainyard", *, tick: float = 0.1):
        self.workdir = Path(workdir)
        self.tick = tick
        self.runs: dict[str, _Run] = {}

    # -- jobs
    def submit(self, job: Job | Mapping[str, Any] | str | os.PathLike, *, workers: int | None = None,
               checkpoint_dir: str | os.PathLike | None = None) -> str:
        """Starts the job (a Job, a manifest dict, a path or YAML text) and returns its name at once;
        refused as `trainyard run` refuses it (InvalidSpec with the apiserver's words)."""
        if not isinstance(job, Job):
            job = Job.from_dict(job) if isinstance(job, Mapping) else Job.from_yaml(job)
        manifest = job.to_manifest()
        name = manifest["metadata"]["name"]
        if name in self.runs and not self.runs[name].done.is_set():
            raise JobExists(f"job {name!r} is running here already")
        manifest["metadata"] = {**manifest["metadata"], "namespace": LOCAL_NAMESPACE,
                                "uid": f"local-{os.urandom(6).hex()}", "creationTimestamp": _now().isoformat()}
        if workers is not None:
            manifest["spec"]["workers"] = workers
        parsed = checked_job(manifest, f"job {name!r}")
        check_runnable(parsed)
        base = prepare_dir(self.workdir / name, "workdir")
        ckpt = prepare_dir(Path(checkpoint_dir) if checkpoint_dir else base / "checkpoints", "checkpoint_dir")
        runner = Runner(parsed, base, ckpt, tick=self.tick)
        run = _Run(runner, _now(), base)

        def body() -> None:
            try:
                run.result = runner.run()
            except BaseException as e:  # noqa: BLE001 - reported by wait()
                run.error = e
            finally:
                run.done.set()

        run.thread = threading.Thread(target=body, name=f"trainyard-local-{name}", daemon=True)
        self.runs[name] = run
        run.thread.start()
        return name

    def _run(self, name: str) -> _Run:
        run = self.runs.get(name)
        if run is None:
            raise JobNotFound(f"job {name!r} was not submitted to this LocalClient")
        return run

    def get_raw(self, name: str) -> dict[str, Any]:
        """The job as an object (what TrainyardClient.get_raw returns from the apiserver)."""
        job = self._run(name).runner.job
        obj = job.model_dump(by_alias=True, mode="json", exclude_none=True)
        obj["metadata"]["creationTimestamp"] = self._run(name).created.isoformat()
        return obj

    def status(self, name: str) -> api.DistributedTrainingJobStatus:
        return self._run(name).runner.job.status.model_copy(deep=True)

    def progress(self, name: str) -> api.Progress | None:
        """status.progress as the engine builds it, from the newest report (not held back by the
        30 s write bound a cluster's status has: nothing is written to an apiserver here)."""
        runner = self._run(name).runner
        return newest_progress([runner.backend.lease()], runner.job.status)

    def _object(self, name: str) -> dict[str, Any]:
        obj = self.get_raw(name)
        p = self.progress(name)
        if p is not None:
            obj.setdefault("status", {})["progress"] = p.model_dump(by_alias=True, mode="json", exclude_none=True)
        return obj

    def wait(self, name: str, timeout: float | None = None, progress: bool = True, poll_interval: float = 0.5,
             view: StatusView | None = None) -> api.DistributedTrainingJobStatus:
        """Returns the status once the job ended; WaitTimeout after `timeout` seconds. With
        progress=True: the live display (a notebook's updating output, a terminal's table)."""
        run = self._run(name)
        if view is None:
            view = StatusView.auto() if progress else StatusView("off")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                finished = run.done.wait(poll_interval)
                view.update(self._object(name), [])
                if finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    st = self.status(name)
                    raise WaitTimeout(f"job {name!r} is still {st.phase.value if st.phase else 'Pending'} after "
                                      f"{timeout:g}s" + (f": {st.message}" if st.message else ""), st)
        finally:
            view.close()
        if run.error is not None:
            raise run.error
        return self.status(name)

    def records(self, name: str) -> list[dict[str, Any]]:
        """The progress lines of every attempt's workers (parse_progress of the work directory)."""
        return parse_progress(self._run(name).workdir)

    def logs_dir(self, name: str) -> Path:
        return self._run(name).workdir

    def delete(self, name: str, wait: bool = True, timeout: float = 60.0) -> None:
        """Stops the job's workers (every process tree) and forgets it."""
        run = self._run(name)
        run.runner.stop()
        if wait:
            run.done.wait(timeout)
        del self.runs[name]


def _now() -> datetime:
    return datetime.now(UTC)
