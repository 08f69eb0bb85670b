"""Warm workers: a spare process that has already paid for the interpreter, ``import torch`` (with
``torch.distributed``, DDP and ``torch._dynamo``, which DDP imports on construction) and the
imports of the training script, waiting for a rank. Given one, it runs the unchanged script in
itself with the environment torchrun would have given it, so a restart costs the rendezvous,
the checkpoint load and the first step, not a process start and two torch imports.

``python -m trainyard_trainer.warm COMMAND...`` (started by the runtime with an fd number in
``TRAINYARD_WARM_FD``: one end of a socketpair):

1. :func:`target_of` reads the container command (``trainyard-launch [-m MOD | SCRIPT] ARGS``,
   ``torchrun [--nnodes N] [--nproc-per-node 1] (-m MOD | SCRIPT) ARGS``, ``python [-u] (-m MOD |
   SCRIPT) ARGS``). Anything else (other torchrun flags, a shell, a binary) cannot run in a spare:
   the spare writes ``unsupported <why>`` on the socket and exits 0, and the runtime restarts
   cold, as before.
2. It imports torch and friends, then every module the script imports at its top level (read
   from its source with :mod:`ast`; the script itself is not run, so nothing of ``__main__``
   happens). The imports run in a thread at ``TRAINYARD_WARM_NICE`` (default 10): nice is per
   thread on Linux, so the warm-up yields the CPU to training while the main thread, which will
   run the rank, keeps its priority without any privilege to lower it again.
3. It writes ``ready <pid> <seconds the warm-up took>`` and blocks on the socket. One JSON line
   ``{"env": {...}, "cwd": ..., "log": PATH}`` assigns a rank: the env is the one a cold worker
   would get (the operator's contract: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, PET_*,
   TRAINYARD_*); :func:`torchrun_env` adds what torchrun sets for each process (LOCAL_RANK,
   TORCHELASTIC_RUN_ID ...). stdout and stderr go to PATH, and the script runs with runpy as
   ``__main__``. The process group is then an env:// rendezvous on a TCPStore hosted by rank 0,
   on the port the runtime picked for this attempt: no torchrun agent is needed for a fixed-size
   job with one process per worker (the only kind the runtime hands to a spare).
4. It exits as ``trainyard-launch`` would: the script's exit code, 1 for an exception, or
   :data:`PEER_LOST_EXIT_CODE` when the exception says the gang broke under it (a peer died).
   EOF on the socket before an assignment (the runtime retired the spare or died): exit 0.

A spare dies with its parent (PR_SET_PDEATHSIG), so none is ever left behind.

What a script gains from the spare depends on nothing in it: any script that works under
``torchrun`` with a fixed world size works here. What it cannot have is torchrun's agent: no
``--max-restarts`` inside the worker (the runtime restarts the gang), and TORCHELASTIC_* values
describe the runtime's attempt, not an agent's restart count.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import importlib
import importlib.util
import json
import os
import re
import runpy
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .contract import ENV_WARM_FD, ENV_WARM_NICE, ENV_WARM_TRACE, PEER_LOST_EXIT_CODE

# Imported in every spare: what every DDP script pays before its first step.
BASE_PRELOAD = ("torch", "torch.distributed", "torch.nn.parallel", "torch._dynamo", "torch.distributed.c10d_logger")
# torchrun flags a spare can honour: the ones that only restate a fixed world of 1 process per worker.
_HARMLESS_TORCHRUN_FLAGS = {"--nnodes": None, "--nproc-per-node": "1", "--nproc_per_node": "1"}
_PEER_LOST_RE = re.compile(
    r"Connection (closed|reset) by peer|failed to recv, got 0 bytes|connectFullMesh failed|ECONNRESET|"
    r"DistNetworkError|Broken pipe|Rendezvous(Connection|Closed|Timeout|State)Error"
)


class Unsupported(ValueError):
    """This command cannot run in a spare (the runtime starts it cold instead)."""


@dataclass(frozen=True)
class Target:
    kind: str  # "module" or "path"
    name: str  # module name or script path
    args: tuple[str, ...]

    @property
    def argv0(self) -> str:
        return self.name if self.kind == "path" else self.name.rsplit(".", 1)[-1] + ".py"


def _split_target(argv: Sequence[str], what: str) -> Target:
    if not argv:
        raise Unsupported(f"{what} names no script")
    if argv[0] == "-m":
        if len(argv) < 2:
            raise Unsupported(f"{what} -m names no module")
        return Target("module", argv[1], tuple(argv[2:]))
    if argv[0].startswith("-"):
        raise Unsupported(f"{what} option {argv[0]} is not supported in a spare")
    return Target("path", argv[0], tuple(argv[1:]))


def target_of(command: Sequence[str]) -> Target:
    """The script a container command runs, or Unsupported saying why it cannot run in a spare."""
    if not command:
        raise Unsupported("the container has no command")
    prog = os.path.basename(command[0])
    rest = list(command[1:])
    if prog == "trainyard-launch":
        return _split_target(rest, "trainyard-launch")
    if re.fullmatch(r"python(\d+(\.\d+)?)?", prog):
        while rest and rest[0] in ("-u", "-B"):
            rest.pop(0)
        if rest[:2] == ["-m", "torch.distributed.run"]:
            return _torchrun(rest[2:])
        return _split_target(rest, "python")
    if prog == "torchrun":
        return _torchrun(rest)
    raise Unsupported(f"{prog} is not trainyard-launch, torchrun or python")


def _torchrun(rest: list[str]) -> Target:
    while rest and rest[0].startswith("--"):
        flag, eq, value = rest.pop(0).partition("=")
        if flag not in _HARMLESS_TORCHRUN_FLAGS:
            raise Unsupported(f"torchrun {flag} needs torchrun's agent")
        if not eq:
            if not rest:
                raise Unsupported(f"torchrun {flag} has no value")
            value = rest.pop(0)
        want = _HARMLESS_TORCHRUN_FLAGS[flag]
        if want is not None and value != want:
            raise Unsupported(f"torchrun {flag}={value} needs torchrun's agent")
    return _split_target(rest, "torchrun")


def torchrun_env(env: Mapping[str, str]) -> dict[str, str]:
    """What torchrun sets for the one process of a worker of a fixed-size job, from the operator's
    contract (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are set for exactly those jobs)."""
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        int(env["MASTER_PORT"])
        env["MASTER_ADDR"]
    except (KeyError, ValueError) as e:
        raise Unsupported(f"no fixed rank in the environment ({e}): only torchrun can start this job") from None
    out = dict(env)
    out.update({
        "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": str(rank), "GROUP_WORLD_SIZE": str(world),
        "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world), "ROLE_NAME": "default",
        "TORCHELASTIC_RESTART_COUNT": env.get("TORCHELASTIC_RESTART_COUNT", "0"), "TORCHELASTIC_MAX_RESTARTS": env.get("PET_MAX_RESTARTS", "0"),
        "TORCHELASTIC_RUN_ID": env.get("PET_RDZV_ID", "none"), "TORCHELASTIC_USE_AGENT_STORE": "False",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": env.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    })
    return out


def script_imports(target: Target) -> list[str]:
    """Modules the script imports at its top level (not inside functions, not under a guard)."""
    if target.kind == "module":
        try:
            spec = importlib.util.find_spec(target.name)
        except (ImportError, ValueError):
            return []
        path = spec.origin if spec else None
        package = target.name.rpartition(".")[0]
    else:
        path, package = target.name, ""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read()) if path else None  # noqa: SIM115
    except (OSError, SyntaxError, ValueError):
        return []
    out: list[str] = []
    for node in tree.body if tree else ():
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base and base != "__future__":
                out.append(base)
    return out


def _say(sock: socket.socket | None, msg: str) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.sendall(msg.encode() + b"\n")


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def preload(modules: Sequence[str], nice: int) -> list[str]:
    """Imports `modules` in a thread at `nice` (best effort); returns those that failed."""
    failed: list[str] = []

    def work() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        for m in modules:
            try:
                importlib.import_module(m)
            except BaseException:  # noqa: BLE001 - a failed preload is only a cold import later
                failed.append(m)

    t = threading.Thread(target=work, name="trainyard-warm-preload", daemon=True)
    t.start()
    t.join()
    return failed


def _trace(phase: str) -> None:
    print(f"[trainyard-warm] phase={phase} t={time.time():.6f}", file=sys.stderr, flush=True)


def _install_trace() -> None:
    """TRAINYARD_WARM_TRACE=1 (benchmarks): a timestamped line when the process group is up and
    when DDP is constructed, for the phase breakdown of a warm restart."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    init = dist.init_process_group

    def init_process_group(*a, **kw):
        _trace("init_process_group")
        out = init(*a, **kw)
        _trace("process_group_ready")
        return out

    dist.init_process_group = init_process_group
    ddp_init = DistributedDataParallel.__init__

    def __init__(self, *a, **kw):
        _trace("ddp_start")
        ddp_init(self, *a, **kw)
        _trace("ddp_ready")

    DistributedDataParallel.__init__ = __init__


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        print(code, file=sys.stderr)
        return 1
    text = "".join(traceback.format_exception(exc))
    return PEER_LOST_EXIT_CODE if _PEER_LOST_RE.search(text) else 1


def run_assignment(target: Target, assignment: Mapping[str, object]) -> int:
    env = torchrun_env({str(k): str(v) for k, v in dict(assignment["env"]).items()})  # type: ignore[arg-type]
    trace = os.environ.get(ENV_WARM_TRACE) == "1"  # the spare's own env (the runtime's knob), not the rank's
    sys.stdout.flush()
    sys.stderr.flush()
    if assignment.get("log"):  # else: keep the stdout/stderr it inherited (a pod's: kubectl logs)
        fd = os.open(str(assignment["log"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    if assignment.get("cwd"):
        os.chdir(str(assignment["cwd"]))
    hb = env.get("TRAINYARD_HEARTBEAT_FILE")
    if hb:
        from .heartbeat import touch
        with contextlib.suppress(OSError):
            touch(hb)
    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch
        torch.set_num_threads(int(threads))
    if trace:
        _install_trace()
        _trace("assigned")
    print(f"[trainyard-warm] rank {env['RANK']} of {env['WORLD_SIZE']} in spare pid {os.getpid()}: "
          f"{target.name} {' '.join(target.args)}", file=sys.stderr, flush=True)
    sys.argv = [target.argv0 if target.kind == "module" else target.name, *target.args]
    try:
        if target.kind == "module":
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(target.name)))
            runpy.run_path(target.name, run_name="__main__")
    except BaseException as exc:  # noqa: BLE001 - the exit code says what happened
        code = exit_code_of(exc)
        if not isinstance(exc, SystemExit):
            traceback.print_exc()
        return code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    _die_with_parent()
    fd = os.environ.get(ENV_WARM_FD)
    sock = socket.socket(fileno=int(fd)) if fd and fd.isdigit() else None
    if sock is None:
        print(f"usage: {ENV_WARM_FD}=N python -m trainyard_trainer.warm COMMAND...", file=sys.stderr)
        return 2
    try:
        target = target_of(argv)
    except Unsupported as e:
        _say(sock, f"unsupported {e}")
        return 0
    t0 = time.monotonic()
    nice = int(os.environ.get(ENV_WARM_NICE, "10") or 0)
    failed = preload(BASE_PRELOAD, nice)
    if "torch" in failed:
        _say(sock, "unsupported torch does not import in this environment")
        return 0
    preload(script_imports(target), nice)
    _say(sock, f"ready {os.getpid()} {time.monotonic() - t0:.3f}")
    buf = b""
    while b"\n" not in buf:
        try:
            chunk = sock.recv(1 << 20)
        except InterruptedError:
            continue
        if not chunk:
            return 0  # retired before it got a rank
        buf += chunk
    sock.close()
    return run_assignment(target, json.loads(buf.split(b"\n", 1)[0]))


if __name__ == "__main__":  # pragma: no cover
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
