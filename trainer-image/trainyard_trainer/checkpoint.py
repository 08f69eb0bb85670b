"""Checkpoints that survive crashes: atomic, checksummed, keep-last-K, optionally asynchronous.

Two formats share one directory and the same rules:

* ``step-00000120.pt`` + ``step-00000120.pt.json``: a whole ``torch.save`` state written by one
  process (rank 0 of a DDP job). The data goes to a temporary file in the same directory, is
  flushed, fsynced and renamed; then a manifest ``{"step", "size", "sha256"}`` is written the same
  way, and the directory is fsynced. :meth:`Checkpointer.load_latest` takes the newest checkpoint
  whose manifest matches (size and sha256) and which ``torch.load`` reads; a truncated or corrupt
  newest one is skipped with a warning, so a job resumes from the one before.
* ``step-00000120.dcp/``: a sharded ``torch.distributed.checkpoint`` (DCP) written by every rank.
  It is written into ``.step-00000120.dcp.partial/``; after ``dcp.save`` returned on every rank (its
  metadata is written last, by the coordinator) and a barrier, rank 0 writes the completion marker
  ``.trainyard-complete`` inside it and renames the directory to its final name. Only directories
  with the marker count.

A checkpoint written without a manifest (a crash between the data's rename and the manifest's, or
a file from another tool) is accepted only if ``torch.load`` reads it, with a warning.

Attempts are fenced. Every checkpoint records the job and the attempt that wrote it
(``TRAINYARD_JOB_UID`` and ``TRAINYARD_ATTEMPT``, which the operator and ``trainyard run`` set in
every worker). When a newer attempt starts, its first load (or first save) writes a fence,
``.trainyard-fence.json``: "attempt A of job J resumed from step S". From then on a checkpoint of
an older writer is valid only up to step S: a pod of a superseded gang that is still shutting down
can finish writing a file, but that file never becomes the latest, and never pushes a valid one
out of the last ``keep``. "Older" is by attempt within one job; a new job that takes over the
directory (a re-created job, another `trainyard run` on the same checkpoints, a resize to a new job)
is newer than every writer that fenced before it, whatever its attempt number.

Objects registered with ``Checkpointer(..., stateful={"data": sampler})`` (anything with
``state_dict()`` and ``load_state_dict()``, e.g. :class:`trainyard_trainer.data.ShardedSampler`) go
into every checkpoint under their key, captured when ``save`` is called (before an asynchronous
save returns), and are restored by every load: the data position is always the one of the model
next to it in the same file or directory.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import progress
from .contract import ENV_ATTEMPT, ENV_JOB_UID

log = logging.getLogger("trainyard.checkpoint")

FILE_RE = re.compile(r"^step-(\d{8,})\.pt$")
DCP_RE = re.compile(r"^step-(\d{8,})\.dcp$")
TMP_RE = re.compile(r"^\.step-(\d{8,})\.(?:pt|pt\.json)\.tmp-[0-9a-f]+$")
PARTIAL_RE = re.compile(r"^\.step-(\d{8,})\.dcp\.partial$")
MANIFEST_SUFFIX = ".json"
COMPLETE_MARKER = ".trainyard-complete"
FENCE = ".trainyard-fence.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (raised by the call after a failed background save)."""


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):08d}.pt"


def dcp_name(step: int) -> str:
    return f"step-{int(step):08d}.dcp"


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so that renames and unlinks in it are durable (best effort off Linux)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        self.sha.update(mv)
        self.size += mv.nbytes
        return self._f.write(mv)

    def flush(self) -> None:
        self._f.flush()


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (created), held for the block: the fence's read-modify-write."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _write_temp(path: Path, write: Callable[[Any], None]) -> Path:
    """Write via ``write(fileobj)`` to a temp file next to ``path`` and fsync it; returns the temp."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Write via ``write(fileobj)`` to a temp file next to ``path``, fsync it and rename it over ``path``."""
    os.replace(_write_temp(path, write), path)


def snapshot_to_cpu(obj: Any) -> Any:
    """A deep copy of ``obj`` whose tensors are detached CPU copies (never views of live tensors).

    ``tensor.cpu()`` returns the tensor itself when it is already on the CPU, so that is not enough
    for a background save: training would mutate what is being written.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = {k: snapshot_to_cpu(v) for k, v in obj.items()}
        if type(obj) is not dict:
            with contextlib.suppress(TypeError):
                out = type(obj)(out)  # OrderedDict from state_dict() keeps its type
        return out
    if isinstance(obj, list):
        return [snapshot_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        if hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*(snapshot_to_cpu(v) for v in obj))
        return tuple(snapshot_to_cpu(v) for v in obj)
    if isinstance(obj, (int, float, str, bytes, bool, type(None), torch.dtype, torch.device, torch.Size)):
        return obj
    return copy.deepcopy(obj)


@dataclass(frozen=True)
class Entry:
    step: int
    path: Path
    manifest: Path | None  # None for DCP directories

    def _meta(self) -> dict:
        meta = self.manifest if self.manifest is not None else self.path / COMPLETE_MARKER
        try:
            doc = json.loads(meta.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    @property
    def attempt(self) -> int | None:
        """The attempt that wrote it (None: written before attempts were recorded, or by hand)."""
        value = self._meta().get("attempt")
        return int(value) if isinstance(value, int) else None

    @property
    def job(self) -> str | None:
        """The uid of the job that wrote it (None: not recorded)."""
        value = self._meta().get("job")
        return value if isinstance(value, str) and value else None


def _report_checkpoint(step: int) -> None:
    """status.progress.lastCheckpointStep: the checkpoint is durable now (rank 0's reporter sends it)."""
    with contextlib.suppress(Exception):
        progress.checkpointed(step)


def _env_attempt() -> int | None:
    try:
        return int(os.environ[ENV_ATTEMPT])
    except (KeyError, ValueError):
        return None


def _newer(fences: list[dict], job: str | None, attempt: int | None) -> list[dict]:
    """The fences written after writer (job, attempt) started: a later attempt of its job, or any
    fence after the job's own last one (another job took the directory over). A writer that never
    fenced (attempt None: written by hand or before fencing) is older than every fence."""
    if attempt is None:
        return fences
    mine = [i for i, f in enumerate(fences) if f.get("job") == job]
    last = mine[-1] if mine else -1
    return [f for i, f in enumerate(fences)
            if (f.get("job") == job and f["attempt"] > attempt) or (f.get("job") != job and i > last)]


class Checkpointer:
    """Atomic, checksummed checkpoints in ``directory``, keeping the last ``keep`` complete ones.

    Typical use in a DDP script: every rank constructs one and calls :meth:`load_latest` (or
    ``load_latest(broadcast=True)``: rank 0 reads, everyone gets it); only rank 0 calls :meth:`save`.
    For DCP (:meth:`save_distributed` / :meth:`load_distributed`) every rank calls.

    ``stateful`` maps keys to objects with ``state_dict()``/``load_state_dict()`` that every save
    adds to the state (captured at the call) and every load restores (e.g. the data position).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, *, rank: int | None = None,
                 stateful: Mapping[str, Any] | None = None, attempt: int | None = None, job: str | None = None):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.attempt = _env_attempt() if attempt is None else int(attempt)  # None: not fenced
        self.job = (os.environ.get(ENV_JOB_UID) or None) if job is None else job
        self.fenced_out = False  # a newer attempt took over: this one's saves are not written
        self.keep = int(keep)
        self._rank = rank
        self.stateful: dict[str, Any] = dict(stateful or {})
        for key, obj in self.stateful.items():
            if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
                raise TypeError(f"stateful[{key!r}] has no state_dict()/load_state_dict()")
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._dcp_pending: Any = None
        self._dcp_finisher: threading.Thread | None = None
        self._dcp_group: Any = None
        self.last_stall_s: float = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ listing

    def entries(self, *, fenced: bool = True) -> list[Entry]:
        """Whole-state checkpoints whose data file exists, oldest first; with ``fenced`` (the
        default) only those the fence allows (their checksum is not checked here)."""
        out = []
        for p in self.directory.iterdir():
            m = FILE_RE.match(p.name)
            if m and p.is_file():
                out.append(Entry(int(m.group(1)), p, p.with_name(p.name + MANIFEST_SUFFIX)))
        return self._allowed(sorted(out, key=lambda e: e.step)) if fenced else sorted(out, key=lambda e: e.step)

    def dcp_entries(self, *, complete_only: bool = True) -> list[Entry]:
        out = []
        for p in self.directory.iterdir():
            m = DCP_RE.match(p.name)
            if m and p.is_dir() and (not complete_only or (p / COMPLETE_MARKER).is_file()):
                out.append(Entry(int(m.group(1)), p, None))
        out.sort(key=lambda e: e.step)
        return self._allowed(out) if complete_only else out

    # ------------------------------------------------------------------ fencing of superseded attempts

    def fences(self) -> list[dict[str, Any]]:
        """[{"job": J, "attempt": A, "from": S}, ...], oldest first: attempt A of job J resumed from
        step S (0: from scratch). "job" is absent in fences of writers that had no job uid."""
        try:
            doc = json.loads((self.directory / FENCE).read_text())
        except (OSError, ValueError):
            return []
        return [f for f in doc.get("fences", []) if isinstance(f, dict) and {"attempt", "from"} <= f.keys()]

    def _allowed(self, entries: list[Entry]) -> list[Entry]:
        fences = self.fences()
        if not fences:
            return entries

        def ok(e: Entry) -> bool:
            return all(e.step <= f["from"] for f in _newer(fences, e.job, e.attempt))

        return [e for e in entries if ok(e)]

    def _fence(self, resumed_from: int) -> None:
        """This attempt starts from ``resumed_from``: older attempts' later checkpoints are void."""
        if self.attempt is None:
            return
        with _locked(self.directory / (FENCE + ".lock")):
            fences = self.fences()
            if any(f.get("job") == self.job and f["attempt"] >= self.attempt for f in fences):
                return  # fenced already (by this attempt, or a newer one of this job)
            fence = {"attempt": self.attempt, "from": int(resumed_from)}
            if self.job is not None:
                fence["job"] = self.job
            fences.append(fence)
            payload = (json.dumps({"fences": fences[-64:]}, sort_keys=True) + "\n").encode()
            _atomic_write_bytes(self.directory / FENCE, lambda f: f.write(payload))
            fsync_dir(self.directory)

    def _superseded(self) -> bool:
        """True when a newer attempt has started: this writer must not publish any more."""
        if self.attempt is None:
            return False
        if _newer(self.fences(), self.job, self.attempt):
            if not self.fenced_out:
                log.warning("attempt %d is superseded by a newer attempt or job: its checkpoints are no longer written",
                            self.attempt)
            self.fenced_out = True
        return self.fenced_out

    def steps(self) -> list[int]:
        return [e.step for e in self.entries()]

    # ------------------------------------------------------------------ registered stateful objects

    def _check_keys(self, state: Mapping[str, Any]) -> None:
        clash = sorted(k for k in self.stateful if k in state)
        if clash:
            raise ValueError(f"state already has {clash}, which are registered as stateful: pass them once")

    def _with_stateful(self, state: dict) -> dict:
        """``state`` plus each registered object's ``state_dict()``, taken now."""
        if not self.stateful:
            return state
        self._check_keys(state)
        return {**state, **{k: obj.state_dict() for k, obj in self.stateful.items()}}

    def restore(self, state: Mapping[str, Any]) -> None:
        """``load_state_dict`` of each registered object from its key in ``state`` (absent: warn, leave it)."""
        for key, obj in self.stateful.items():
            if key in state:
                obj.load_state_dict(state[key])
            else:
                log.warning("checkpoint has no %r entry: %s keeps its current state", key, type(obj).__name__)

    # ------------------------------------------------------------------ whole-state save

    def save(self, state: dict, step: int, *, asynchronous: bool = False) -> Path:
        """Write ``state`` as ``step-XXXXXXXX.pt`` atomically, then prune to the last ``keep``.

        With ``asynchronous=True`` the tensors are first copied to the CPU (the call returns once
        that copy is made: training may then change the live tensors) and the file is written by a
        background thread. At most one save is in flight: a new one first waits for the previous
        one. The error of a failed background save is raised by the next call of save, wait or close.
        The time this call blocked is in ``last_stall_s``.
        """
        t0 = time.perf_counter()
        state = self._with_stateful(state)  # the registered objects as they are at this call
        self._join_background()
        path = self.directory / checkpoint_name(step)
        if self._superseded():
            self.last_stall_s = time.perf_counter() - t0
            return path
        self._fence(0)  # a run that never loaded starts its trajectory here
        if asynchronous:
            snap = snapshot_to_cpu(state)
            self._thread = threading.Thread(
                target=self._background, args=(snap, step), name=f"trainyard-ckpt-{step}", daemon=False
            )
            self._thread.start()
        else:
            self._write(state, step)
        self.last_stall_s = time.perf_counter() - t0
        return path

    def _background(self, state: dict, step: int) -> None:
        try:
            self._write(state, step)
        except BaseException as exc:  # surfaced by the next call
            with self._lock:
                self._error = exc
            log.error("background checkpoint of step %d failed: %s", step, exc)

    def _write(self, state: dict, step: int) -> None:
        path = self.directory / checkpoint_name(step)
        manifest = path.with_name(path.name + MANIFEST_SUFFIX)
        box: dict[str, _HashingWriter] = {}

        def write_data(f) -> None:
            hw = _HashingWriter(f)
            torch.save(state, hw)
            box["hw"] = hw

        tmp = _write_temp(path, write_data)
        hw = box["hw"]
        doc = {"format": FORMAT_VERSION, "step": int(step), "size": hw.size, "sha256": hw.sha.hexdigest(),
               "time": time.time()}
        if self.attempt is not None:
            doc["attempt"] = self.attempt
        if self.job is not None:
            doc["job"] = self.job
        payload = (json.dumps(doc, sort_keys=True) + "\n").encode()
        with self._publishing() as allowed:
            if not allowed:  # a newer attempt started while this one was writing: never publish
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                return
            # A manifest from an earlier write of the same step must not vouch for the new data.
            with contextlib.suppress(FileNotFoundError):
                manifest.unlink()
            os.replace(tmp, path)
            _atomic_write_bytes(manifest, lambda f: f.write(payload))
            fsync_dir(self.directory)
        _report_checkpoint(step)
        self._prune(step)

    @contextlib.contextmanager
    def _publishing(self):
        """Yields whether this writer may publish; held, the fence cannot change (a newer attempt
        fences under the same lock), so nothing of a superseded attempt lands after the fence."""
        if self.attempt is None:
            yield True
            return
        with _locked(self.directory / (FENCE + ".lock")):
            yield not self._superseded()

    def _join_background(self) -> None:
        t = self._thread
        if t is not None:
            t.join()
            self._thread = None
        self._raise_pending_error()

    def _raise_pending_error(self) -> None:
        with self._lock:
            err, self._error = self._error, None
        if err is not None:
            raise CheckpointError(f"an earlier background checkpoint failed: {err}") from err

    def wait(self) -> None:
        """Wait for the background save in flight (whole-state and DCP); raise its error if it failed."""
        self._join_background()
        self._wait_dcp()

    def close(self) -> None:
        """Wait for anything in flight and release resources. Safe to call twice."""
        try:
            self.wait()
        finally:
            if self._dcp_group is not None:
                import torch.distributed as dist

                with contextlib.suppress(Exception):
                    dist.destroy_process_group(self._dcp_group)
                self._dcp_group = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ whole-state load

    def verify(self, entry: Entry) -> str | None:
        """None if ``entry``'s manifest matches its data, else why not ('' = no manifest)."""
        if entry.manifest is None or not entry.manifest.is_file():
            return ""
        try:
            doc = json.loads(entry.manifest.read_text())
            want_sha, want_size = doc["sha256"], int(doc["size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable manifest ({exc})"
        size = entry.path.stat().st_size
        if size != want_size:
            return f"size {size} != {want_size} in the manifest (truncated?)"
        sha, _ = sha256_file(entry.path)
        if sha != want_sha:
            return "sha256 does not match the manifest (corrupt)"
        return None

    def load_latest(self, map_location: Any = "cpu", *, weights_only: bool = True,
                    broadcast: bool = False) -> tuple[dict, int] | None:
        """The newest valid checkpoint as ``(state, step)``, or None if there is none.

        A newest checkpoint that is truncated or corrupt (checksum mismatch, or torch.load fails) is
        skipped with a warning and the one before it is tried. Registered ``stateful`` objects are
        restored from it. With ``broadcast=True`` (a collective when torch.distributed is
        initialised: call it on every rank) rank 0 reads and sends the result to every rank, so all
        start from the same checkpoint even if the shared volume shows them different things.
        """
        import torch.distributed as dist

        if broadcast and dist.is_available() and dist.is_initialized():
            box = [self._find_latest(map_location, weights_only) if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(box, src=0)
            loaded = box[0]
        else:
            loaded = self._find_latest(map_location, weights_only)
        if self._rank_is_0():
            self._fence(loaded[1] if loaded is not None else 0)
        if loaded is not None:
            self.restore(loaded[0])
        return loaded

    def _rank_is_0(self) -> bool:
        if self._rank is not None:
            return self._rank == 0
        try:
            return int(os.environ.get("RANK", "0")) == 0
        except ValueError:
            return True

    def _find_latest(self, map_location: Any, weights_only: bool) -> tuple[dict, int] | None:
        for entry in reversed(self.entries()):
            problem = self.verify(entry)
            if problem:
                log.warning("skipping checkpoint %s: %s", entry.path.name, problem)
                continue
            try:
                state = torch.load(entry.path, map_location=map_location, weights_only=weights_only)
            except Exception as exc:
                log.warning("skipping checkpoint %s: torch.load failed: %s", entry.path.name, exc)
                continue
            if problem == "":
                log.warning("checkpoint %s has no manifest; accepted because torch.load reads it", entry.path.name)
            return state, entry.step
        return None

    # ------------------------------------------------------------------ pruning

    def _prune(self, just_saved: int) -> None:
        """Keep the newest ``keep`` complete whole-state checkpoints the fence allows; delete older
        ones, the ones the fence voids, and stale temps."""
        complete = [e for e in self.entries() if e.manifest is not None and e.manifest.is_file()]
        allowed = {e.path for e in self.entries()}
        for e in self.entries(fenced=False):
            if e.path not in allowed:  # a superseded attempt's, from past where the newer one resumed
                for p in (e.path, e.manifest):
                    if p is not None:
                        with contextlib.suppress(FileNotFoundError):
                            p.unlink()
        if len(complete) > self.keep:
            oldest_kept = complete[-self.keep].step
            for e in self.entries():
                if e.step < oldest_kept:
                    for p in (e.path, e.manifest):
                        if p is not None:
                            with contextlib.suppress(FileNotFoundError):
                                p.unlink()
        # Temp files of steps before this one can only be left over from a crashed writer.
        for p in self.directory.iterdir():
            m = TMP_RE.match(p.name)
            if m and int(m.group(1)) < just_saved:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        fsync_dir(self.directory)

    def _prune_dcp(self, just_saved: int) -> None:
        complete = self.dcp_entries()
        if len(complete) > self.keep:
            oldest_kept = complete[-self.keep].step
            for e in self.dcp_entries(complete_only=False):
                if e.step < oldest_kept:
                    shutil.rmtree(e.path, ignore_errors=True)
        for p in self.directory.iterdir():
            m = PARTIAL_RE.match(p.name)
            if m and int(m.group(1)) < just_saved:
                shutil.rmtree(p, ignore_errors=True)
        fsync_dir(self.directory)

    # ------------------------------------------------------------------ DCP (sharded)

    def _dist_rank(self) -> int:
        import torch.distributed as dist

        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @staticmethod
    def _barrier(group: Any = None) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier(group=group)

    def save_distributed(self, state_dict: dict, step: int, *, asynchronous: bool = False) -> Path:
        """Save a (sharded) state dict with torch.distributed.checkpoint; call on every rank.

        With ``asynchronous=True`` this uses ``dcp.async_save`` on a dedicated gloo group (so its
        background collectives never interleave with training's), and the completion marker and
        rename happen when the save finished; at most one is in flight.
        """
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        t0 = time.perf_counter()
        if self.stateful:  # DCP calls their state_dict() itself, synchronously (async_save too)
            self._check_keys(state_dict)
            state_dict = {**state_dict, **self.stateful}
        self._wait_dcp()
        rank = self._dist_rank()
        final = self.directory / dcp_name(step)
        partial = self.directory / f".{final.name}.partial"
        if rank == 0 and partial.exists():
            shutil.rmtree(partial)
        self._barrier()
        if asynchronous:
            if dist.is_available() and dist.is_initialized() and self._dcp_group is None:
                self._dcp_group = dist.new_group(backend="gloo")
            result = dcp.async_save(state_dict, checkpoint_id=str(partial), process_group=self._dcp_group)
            future = getattr(result, "upload_completion", result)
            self._dcp_pending = future

            def finish() -> None:
                try:
                    future.result()
                    if rank == 0:
                        self._complete_dcp(partial, final, step)
                except BaseException as exc:
                    with self._lock:
                        self._error = exc
                    log.error("background DCP checkpoint of step %d failed: %s", step, exc)

            self._dcp_finisher = threading.Thread(target=finish, name=f"trainyard-dcp-{step}", daemon=False)
            self._dcp_finisher.start()
        else:
            dcp.save(state_dict, checkpoint_id=str(partial))
            # dcp.save returns on every rank after the coordinator wrote the metadata; the barrier
            # makes "every rank's shards are on disk" explicit before rank 0 declares it complete.
            self._barrier()
            if rank == 0:
                self._complete_dcp(partial, final, step)
            self._barrier()
        self.last_stall_s = time.perf_counter() - t0
        return final

    def _complete_dcp(self, partial: Path, final: Path, step: int) -> None:
        doc = {"format": FORMAT_VERSION, "step": int(step), "time": time.time()}
        if self.attempt is not None:
            doc["attempt"] = self.attempt
        if self.job is not None:
            doc["job"] = self.job
        payload = (json.dumps(doc, sort_keys=True) + "\n").encode()
        with self._publishing() as allowed:
            if not allowed:
                shutil.rmtree(partial, ignore_errors=True)
                return
            _atomic_write_bytes(partial / COMPLETE_MARKER, lambda f: f.write(payload))
            fsync_dir(partial)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            fsync_dir(self.directory)
        _report_checkpoint(step)
        self._prune_dcp(step)

    def _wait_dcp(self) -> None:
        t = self._dcp_finisher
        if t is not None:
            t.join()
            self._dcp_finisher = None
            self._dcp_pending = None
        self._raise_pending_error()

    def latest_distributed(self) -> tuple[Path, int] | None:
        entries = self.dcp_entries()
        return (entries[-1].path, entries[-1].step) if entries else None

    def load_distributed(self, state_dict: dict) -> int | None:
        """Load the newest complete DCP checkpoint into ``state_dict`` in place; call on every rank.

        Rank 0 chooses the checkpoint and broadcasts it, so every rank loads the same one even if
        the shared directory looks different to them for a moment. Returns its step, or None.
        Registered ``stateful`` objects are loaded too (DCP calls their ``load_state_dict``); one
        the checkpoint has no entry for keeps its state, with a warning.
        """
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp

        self._wait_dcp()
        choice = self.latest_distributed()
        pick = [None if choice is None else (str(choice[0]), choice[1])]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(pick, src=0)
        if self._dist_rank() == 0:
            self._fence(pick[0][1] if pick[0] is not None else 0)
        if pick[0] is None:
            return None
        path, step = pick[0]
        if self.stateful:
            self._check_keys(state_dict)
            saved = _dcp_keys(path)
            for key, obj in self.stateful.items():
                if any(fqn == key or fqn.startswith(key + ".") for fqn in saved):
                    state_dict[key] = obj
                else:
                    log.warning("checkpoint %s has no %r entry: %s keeps its current state", Path(path).name, key,
                                type(obj).__name__)
        try:
            dcp.load(state_dict, checkpoint_id=path)
        finally:
            for key, obj in self.stateful.items():  # the caller's dict gets the objects' states, not the objects
                if state_dict.get(key) is obj:
                    del state_dict[key]
        return int(step)


def _dcp_keys(path: str | os.PathLike) -> set[str]:
    """The keys a DCP checkpoint holds (nested dicts are flattened as ``a.b.c``)."""
    import torch.distributed.checkpoint as dcp

    return set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)

