"""``trainyard-launch SCRIPT [ARGS...]``: torchrun, plus what a pod needs around it.

It runs ``python -m torch.distributed.run SCRIPT ARGS`` as a child in its own process group;
torchrun reads every ``PET_*`` variable the operator sets (each torchrun flag defaults from
``PET_<FLAG>``), so ``torchrun SCRIPT`` in a job works as well and the launcher requires nothing
torchrun does not. Around it the launcher:

1. waits (up to the rendezvous join timeout) until the host of ``PET_RDZV_ENDPOINT`` resolves: a
   pod's DNS record appears a moment after the pod starts, and torchrun fails at once on
   "host not found". Meanwhile a worker other than 0 also reads the job's Lease
   (``TRAINYARD_PROGRESS_LEASE``, one GET with the pod's token): once the operator has published
   worker 0's pod IP for this rendezvous there, torchrun is started with that IP as the endpoint
   (the cluster DNS caches a "no such name" answer for up to 30 s, longer than the IP takes).
   The worker that hosts the store (``is_host=true``, worker 0) does not wait for its own name: in a
   pod (``TRAINYARD_POD_IP``) its torchrun gets its pod IP as the endpoint;
2. forwards SIGTERM/SIGINT/SIGHUP to the child's process group and exits with the child's exit
   code, made faithful to the worker: torchrun exits 1 for any failed worker, so the launcher reads
   the "Root Cause" block torchrun prints on stderr (it passes stderr through unchanged) and exits
   with that worker's code instead (a worker killed by signal N gives 128+N, as a shell would say).
   A child that exits with a plain error code after a forwarded signal (torchrun turns SIGTERM into
   an exception and exits 1) is reported as 128+signal, so a pod stopped by Kubernetes never looks
   like a bug in the training script;
3. if ``TRAINYARD_HEARTBEAT_FILE`` and ``TRAINYARD_PROGRESS_DEADLINE_SECONDS`` are set, watches the
   heartbeat's mtime: when it is older than the deadline, training is hung (seen for real: after an
   in-place restart, workers blocked forever in "Gloo connectFullMesh failed ... Connection
   refused"). Until a trainer's first step (the file says ``starting``: written when torchrun
   starts, and by a trainer that starts) the deadline is ``TRAINYARD_FIRST_PROGRESS_DEADLINE_SECONDS``
   instead. It kills every process it started (SIGTERM, then SIGKILL), writes
   ``Hung: no training progress for N s`` to /dev/termination-log and stderr, and exits 86. The
   operator's own hang detection (the job's Lease) fires 30 s earlier: this is its backstop;
4. worker 0 notes in the job's Lease that torchrun (or the warm in-place agent) started
   (``trainyard.dev/launcher``): the operator then knows this gang can report its progress, and
   judges its startup.

Explicit torchrun flags: only ``--local-addr``. torchrun otherwise advertises ``socket.getfqdn()`` as
the address of rank 0's store, and rank 0 is the agent whose address sorts first. On a workstation
(a loopback rendezvous endpoint) that name may not resolve: ``127.0.0.1``. In a pod
(``TRAINYARD_POD_IP`` set by the operator) the pod's IP: the job's headless Service publishes worker
0's name alone (the rendezvous endpoint), and rank 0 is not always worker 0.
Everything after the script is passed to it untouched.

``TRAINYARD_RUNTIME=tensorflow`` (the default is ``torchrun``): no torchrun. The launcher runs
``python SCRIPT ARGS`` (or ``python -m MODULE ARGS``) once, as the worker itself; the script's
strategy reads ``TF_CONFIG``. Before starting it waits until every host in ``TF_CONFIG``'s cluster
resolves (up to ``TRAINYARD_JOIN_TIMEOUT_SECONDS``, default 600), since a gRPC peer that is not in
DNS yet makes TensorFlow fail or stall. Signals, exit codes and the watchdog work as above.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import contract
from .contract import (
    ANNOTATION_LAUNCHER,
    ANNOTATION_RENDEZVOUS,
    ENV_ATTEMPT,
    ENV_WORKER_INDEX,
    HUNG_EXIT_CODE,
    HUNG_MESSAGE_PREFIX,
    PEER_LOST_EXIT_CODE,
)
from .heartbeat import ENV_DEADLINE, ENV_FILE, ENV_FIRST_DEADLINE, STARTING, mark, state_of, touch

DEFAULT_JOIN_TIMEOUT = 600.0
ENV_RUNTIME = contract.ENV_RUNTIME
ENV_JOIN_TIMEOUT = contract.ENV_JOIN_TIMEOUT
RUNTIMES = ("torchrun", "tensorflow")
# Both overridable from the environment (tests, or a pod with a custom terminationMessagePath).
TERMINATION_LOG = os.environ.get("TRAINYARD_TERMINATION_LOG", "/dev/termination-log")
KILL_GRACE_SECONDS = float(os.environ.get("TRAINYARD_KILL_GRACE_SECONDS", "5"))
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

__all__ = [
    "HUNG_EXIT_CODE",
    "LaunchConfig",
    "build_argv",
    "exit_code_from_status",
    "main",
    "parse_endpoint",
    "parse_rdzv_conf",
    "parse_tf_config_hosts",
]


# ---------------------------------------------------------------------------- pure parts


def parse_rdzv_conf(conf: str | None) -> dict[str, str]:
    """``"join_timeout=600,last_call_timeout=5,is_host=true"`` -> dict (torchrun's own syntax)."""
    out: dict[str, str] = {}
    for item in (conf or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"PET_RDZV_CONF item {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def parse_endpoint(endpoint: str | None) -> tuple[str, int | None] | None:
    """``host:port``, ``[v6]:port``, ``host`` -> (host, port or None); None for an empty endpoint."""
    endpoint = (endpoint or "").strip()
    if not endpoint:
        return None
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, _, port = endpoint.partition(":")
    else:  # a bare host, or a bare IPv6 address
        host, port = endpoint, ""
    if not host:
        raise ValueError(f"rendezvous endpoint {endpoint!r} has no host")
    return host, (int(port) if port else None)


def parse_tf_config_hosts(raw: str | None) -> tuple[tuple[str, int | None], ...]:
    """Every ``host:port`` of every role in a ``TF_CONFIG`` cluster, in order, without duplicates."""
    if not raw:
        return ()
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"TF_CONFIG is not JSON: {exc}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict):
        raise ValueError("TF_CONFIG has no \"cluster\" object")
    out: list[tuple[str, int | None]] = []
    for role, addrs in cluster.items():
        if not isinstance(addrs, list):
            raise ValueError(f"TF_CONFIG cluster.{role} is not a list of host:port")
        for addr in addrs:
            ep = parse_endpoint(str(addr))
            if ep is not None and ep not in out:
                out.append(ep)
    return tuple(out)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    value = float(raw) if raw else None
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class LaunchConfig:
    script: str
    args: tuple[str, ...]
    endpoint_host: str | None
    endpoint_port: int | None
    join_timeout: float
    heartbeat_file: str | None
    progress_deadline: float | None
    runtime: str = "torchrun"
    peers: tuple[tuple[str, int | None], ...] = ()  # tensorflow: every host in TF_CONFIG
    first_deadline: float | None = None  # until a trainer's first step (the heartbeat says "starting")
    worker_index: int | None = None
    attempt: int | None = None
    rendezvous_attempt: int | None = None  # from PET_RDZV_ID (<job uid>-<n>)
    pod_ip: str | None = None  # TRAINYARD_POD_IP (Kubernetes): torchrun's --local-addr
    is_host: bool = False  # PET_RDZV_CONF is_host=true: this agent serves the rendezvous store

    @classmethod
    def from_env(cls, argv: Sequence[str], env: Mapping[str, str]) -> LaunchConfig:
        if not argv:
            raise ValueError("usage: trainyard-launch SCRIPT [ARGS...]")
        runtime = (env.get(ENV_RUNTIME) or "torchrun").strip().lower()
        if runtime not in RUNTIMES:
            raise ValueError(f"{ENV_RUNTIME}={runtime!r}: expected one of {', '.join(RUNTIMES)}")
        peers: tuple[tuple[str, int | None], ...] = ()
        conf: dict[str, str] = {}
        if runtime == "torchrun":
            conf = parse_rdzv_conf(env.get("PET_RDZV_CONF"))
            join_timeout = float(conf.get("join_timeout", DEFAULT_JOIN_TIMEOUT))
            ep = parse_endpoint(env.get("PET_RDZV_ENDPOINT"))
        else:
            join_timeout = float(env.get(ENV_JOIN_TIMEOUT) or DEFAULT_JOIN_TIMEOUT)
            ep = None
            peers = parse_tf_config_hosts(env.get(contract.TF_CONFIG))
        hb = env.get(ENV_FILE) or None
        deadline, first = _positive(env, ENV_DEADLINE), _positive(env, ENV_FIRST_DEADLINE)
        rdzv_id = env.get("PET_RDZV_ID") or ""
        tail = rdzv_id.rpartition("-")[2]
        return cls(
            script=argv[0],
            args=tuple(argv[1:]),
            endpoint_host=ep[0] if ep else None,
            endpoint_port=ep[1] if ep else None,
            join_timeout=join_timeout,
            heartbeat_file=hb,
            progress_deadline=deadline,
            runtime=runtime,
            peers=peers,
            first_deadline=first,
            worker_index=_int_or_none(env.get(ENV_WORKER_INDEX)),
            attempt=_int_or_none(env.get(ENV_ATTEMPT)),
            rendezvous_attempt=_int_or_none(tail) if "-" in rdzv_id else None,
            pod_ip=(env.get(contract.ENV_POD_IP) or "").strip() or None,
            is_host=conf.get("is_host", "").lower() == "true",
        )

    def deadline_for(self, state: str) -> float:
        """The watchdog's deadline for the heartbeat's state (STARTING: the first-step budget)."""
        assert self.progress_deadline is not None
        if state == STARTING and self.first_deadline is not None:
            return self.first_deadline
        return self.progress_deadline

    @property
    def watchdog(self) -> bool:
        return bool(self.heartbeat_file and self.progress_deadline)


def build_argv(cfg: LaunchConfig, python: str = sys.executable) -> list[str]:
    """The child's argv: torchrun as a module of this interpreter, flags from PET_* in its env;
    for the tensorflow runtime the script (or ``-m MODULE``) itself."""
    if cfg.runtime == "tensorflow":
        return [python, cfg.script, *cfg.args]
    argv = [python, "-m", "torch.distributed.run"]
    if cfg.endpoint_host and is_loopback(cfg.endpoint_host):
        argv += ["--local-addr", "127.0.0.1"]
    elif cfg.pod_ip:
        argv += ["--local-addr", cfg.pod_ip]
    argv.append(cfg.script)
    argv += list(cfg.args)
    return argv


def exit_code_from_status(returncode: int) -> int:
    """Popen-style returncode (-N for a signal) -> shell-style exit code (128+N)."""
    return 128 - returncode if returncode < 0 else returncode


_ROOT_CAUSE_RE = re.compile(r"^\s*Root Cause \(first observed failure\)")
# What a worker (or torchrun's agent) says when the gang broke under it rather than by its own
# fault: the rendezvous is unreachable, closed or timed out, or a peer's connection went away.
_PEER_LOST_RE = re.compile(
    r"Rendezvous(Connection|Closed|Timeout|State)Error|DistNetworkError|Connection (closed|reset) by peer|"
    r"failed to recv, got 0 bytes|connectFullMesh failed|ECONNRESET|\bUNAVAILABLE\b.*(reset|closed|connect)"
)
_EXITCODE_RE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_RULE_RE = re.compile(r"^={20,}\s*$")
# How long a warm agent that is done waits for its start note to be written (one Lease patch).
ANNOUNCE_JOIN_SECONDS = 5.0

# After torchrun's root-cause block, how long it may go on before the launcher ends it (its own
# shutdown after the verdict: 2-3 s measured, during which the pod looks alive and a new gang waits).
VERDICT_GRACE_SECONDS = float(os.environ.get("TRAINYARD_VERDICT_GRACE_SECONDS", "0.3"))


class RootCauseScanner:
    """Finds the failed worker's exit code in torchrun's ChildFailedError summary::

        Root Cause (first observed failure):
        [0]:
          ...
          exitcode  : -11 (pid: 26672)  (SIGSEGV)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_root_cause = False
        self.exitcode: int | None = None
        self.peer_lost = False  # some line said the gang broke under us
        self.complete_at: float | None = None  # when the block's closing rule was read
        self.exitcode_at: float | None = None
        self._clock = clock

    def feed(self, line: str) -> None:
        if not self.peer_lost and _PEER_LOST_RE.search(line):
            self.peer_lost = True
        if self.exitcode is not None:
            if self.complete_at is None and _RULE_RE.match(line):
                self.complete_at = self._clock()
            return
        if _ROOT_CAUSE_RE.match(line):
            self.in_root_cause = True
        elif self.in_root_cause and (m := _EXITCODE_RE.match(line)):
            self.exitcode = int(m.group(1))
            self.exitcode_at = self._clock()

    def verdict_due(self, now: float, grace: float) -> bool:
        """torchrun has printed its verdict (the block is complete, or its exit code line is older
        than `grace`): everything after it is torchrun's own shutdown, which takes seconds (its
        rendezvous close and interpreter exit) and decides nothing."""
        if self.exitcode is None:
            return False
        return self.complete_at is not None or (self.exitcode_at is not None and now - self.exitcode_at >= grace)


def final_exit_code(child_code: int, worker_exitcode: int | None = None, forwarded: int | None = None,
                    peer_lost: bool = False) -> int:
    """The launcher's exit code from torchrun's (shell-style) one, the root-cause worker's
    (Popen-style: -N for signal N) if torchrun printed one, the signal we forwarded, if any, and
    whether the output said the gang broke (then a plain error exit becomes PEER_LOST_EXIT_CODE)."""
    code = child_code
    if code == 1 and worker_exitcode is not None and worker_exitcode != 0:
        code = exit_code_from_status(worker_exitcode)
    if forwarded is not None and 0 < code < 128:
        code = 128 + forwarded
    elif peer_lost and code == 1:
        code = PEER_LOST_EXIT_CODE
    return code


def hung_message(deadline: float, starting: bool = False) -> str:
    if starting:
        return f"{HUNG_MESSAGE_PREFIX}no first training step within {deadline:g} s of the trainer's start"
    return f"{HUNG_MESSAGE_PREFIX}no training progress for {deadline:g} s"


# ---------------------------------------------------------------------------- process parts


def _say(msg: str) -> None:
    print(f"[trainyard-launch] {msg}", file=sys.stderr, flush=True)


def wait_for_dns(
    host: str,
    port: int | None,
    timeout: float,
    *,
    resolve: Callable[[str, int | None], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    interval: float = 1.0,
    what: str = "rendezvous host",
    then: str = "starting torchrun anyway",
    fallback: Callable[[], str | None] | None = None,
) -> bool | str:
    """Block until ``host`` resolves or ``timeout`` passes; one line is printed while waiting.
    Returns True once it resolves, False after the timeout, or the address ``fallback`` gave (it is
    asked after every failed lookup: worker 0's pod IP from the job's Lease, or None)."""
    resolve = resolve or (lambda h, p: socket.getaddrinfo(h, p, type=socket.SOCK_STREAM))
    start = clock()
    announced = False
    while True:
        try:
            resolve(host, port)
            if announced:
                _say(f"{what} {host} resolved after {clock() - start:.1f} s")
            return True
        except (socket.gaierror, UnicodeError, OSError):
            pass
        address = fallback() if fallback is not None else None
        if address:
            _say(f"{what} {host} does not resolve yet after {clock() - start:.1f} s; using {address}, worker 0's "
                 "pod IP from the job's Lease")
            return address
        if clock() - start >= timeout:
            _say(f"{what} {host} still does not resolve after {timeout:g} s; {then}")
            return False
        if not announced:
            _say(f"waiting for {what} {host} to resolve (up to {timeout:g} s)")
            announced = True
        sleep(interval)


def _set_child_subreaper() -> None:
    """Orphaned descendants (torchrun's workers run in sessions of their own) become our children,
    so that the watchdog can find and kill them even after torchrun itself died. Linux only."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _die_with_parent(parent: int) -> None:
    """In the child: SIGTERM us if the launcher dies (even by SIGKILL), so torchrun, which stops its
    workers on SIGTERM, never outlives it. Linux only."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the launcher already died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) for every process (from /proc)."""
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = data[data.rfind(")") + 2 :].split()
        # rest: state ppid pgrp ...
        with contextlib.suppress(IndexError, ValueError):
            table[int(name)] = (int(rest[1]), int(rest[2]))
    return table


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (children, grandchildren, ...)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in out:
                out.add(c)
                stack.append(c)
    return out


def _signal_tree(child_pid: int, sig: int) -> None:
    """Signal the child's process group, and every descendant of ours with its own group."""
    me = os.getpid()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child_pid, sig)
    table = _process_table()
    for pid in descendants(me):
        pgid = table.get(pid, (0, 0))[1]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pgid and pgid != os.getpgrp():
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)


class Launcher:
    def __init__(self, cfg: LaunchConfig, env: Mapping[str, str] | None = None, python: str = sys.executable):
        self.cfg = cfg
        self.env = dict(os.environ if env is None else env)
        self.python = python
        self.child_pid: int | None = None
        self.child_status: int | None = None  # Popen-style returncode
        self.forwarded: int | None = None
        self.scanner = RootCauseScanner()
        self._stderr_thread: threading.Thread | None = None

    def _pump_stderr(self, fd: int) -> None:
        """Copy the child's stderr to ours unchanged, scanning its lines for torchrun's root cause."""
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except InterruptedError:
                    continue
                if not chunk:
                    break
                with contextlib.suppress(OSError):
                    os.write(2, chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.scanner.feed(line.decode(errors="replace"))
                if len(pending) > 65536:  # a huge line without newline: not ours to parse
                    pending = b""
            if pending:
                self.scanner.feed(pending.decode(errors="replace"))
        finally:
            os.close(fd)

    # -- signals
    def _forward(self, signum: int, _frame) -> None:
        self.forwarded = self.forwarded or signum
        if self.child_pid is not None and self.child_status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child_pid, signum)
        elif self.child_pid is None:
            raise SystemExit(128 + signum)  # still waiting for DNS: just stop

    def _reap(self) -> None:
        """Reap every exited child (we are a subreaper); record the main child's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.child_pid:
                self.child_status = os.waitstatus_to_exitcode(status)

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if self.child_status is not None and not descendants(os.getpid()):
                return
            time.sleep(0.02)

    def _kill_everything(self) -> None:
        assert self.child_pid is not None
        _signal_tree(self.child_pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < deadline:
            self._reap()
            if self.child_status is not None and not descendants(os.getpid()):
                return
            time.sleep(0.1)
        _signal_tree(self.child_pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while time.monotonic() < deadline:
            self._reap()
            if self.child_status is not None and not descendants(os.getpid()):
                return
            time.sleep(0.05)

    # -- the job's Lease
    def _lease(self):
        if not hasattr(self, "_lease_obj"):
            from .lease import lease_from_env

            self._lease_obj = lease_from_env(self.env)
        return self._lease_obj

    def _announce(self) -> threading.Thread:
        """Notes the start in a thread: the Lease write is never in the way of the start."""
        thread = threading.Thread(target=self._announce_start, name="trainyard-launch-lease", daemon=True)
        thread.start()
        return thread

    def _announce_start(self) -> None:
        """Worker 0 notes that torchrun started: the operator then judges this gang's startup."""
        from .lease import LEASE_WAIT_SECONDS, micro_time

        lease = self._lease()
        if lease is None or self.cfg.attempt is None:
            return
        doc = json.dumps({"attempt": self.cfg.attempt, "time": micro_time()}, separators=(",", ":"))
        # The operator makes the Lease once worker 0 (this pod) has its IP, about when this runs:
        # a 404 (or a 403 before its RoleBinding) is "not yet", tried again for LEASE_WAIT_SECONDS.
        deadline, pause = time.monotonic() + LEASE_WAIT_SECONDS, 0.25
        while True:
            try:
                lease.patch({ANNOTATION_LAUNCHER: doc})
                return
            except Exception as e:  # noqa: BLE001 - never a reason not to train
                if not getattr(e, "not_made_yet", False) or time.monotonic() + pause > deadline:
                    _say(f"could not note the start in the job's Lease: {e}")
                    return
            time.sleep(pause)
            pause = min(2.0, pause * 2)

    def _use_endpoint(self, address: str) -> None:
        host = f"[{address}]" if ":" in address else address
        port = self.cfg.endpoint_port
        self.env["PET_RDZV_ENDPOINT"] = f"{host}:{port}" if port else host

    def _rendezvous_ip(self) -> str | None:
        """Worker 0's pod IP for this rendezvous, as the operator published it in the Lease (one GET
        per call, at most one a second), or None."""
        now = time.monotonic()
        if now < getattr(self, "_next_lease_read", 0.0):
            return None
        self._next_lease_read = now + 1.0
        lease = self._lease()
        if lease is None or self.cfg.rendezvous_attempt is None:
            return None
        try:
            raw = lease.annotations().get(ANNOTATION_RENDEZVOUS)
            doc = json.loads(raw) if raw else None
        except Exception as e:  # noqa: BLE001 - DNS remains
            if getattr(e, "not_made_yet", False):
                return None  # the operator makes it with worker 0's IP in it: read again in a second
            if not getattr(self, "_lease_warned", False):
                self._lease_warned = True
                _say(f"cannot read the job's Lease (waiting for DNS instead): {e}")
            return None
        if isinstance(doc, dict) and doc.get("attempt") == self.cfg.rendezvous_attempt and doc.get("ip"):
            return str(doc["ip"])
        return None

    def _report_hung(self, starting: bool = False) -> None:
        cfg = self.cfg
        msg = hung_message((cfg.deadline_for(STARTING) if starting else cfg.progress_deadline) or 0, starting)
        _say(msg)
        with contextlib.suppress(OSError):
            if os.path.exists(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK):
                with open(TERMINATION_LOG, "w") as f:
                    f.write(msg + "\n")

    def run(self) -> int:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        cfg = self.cfg
        if cfg.heartbeat_file:
            try:
                mark(cfg.heartbeat_file, STARTING)  # the probe's first-step budget covers the DNS wait too
            except OSError as exc:
                _say(f"error: cannot write the heartbeat file {cfg.heartbeat_file}: {exc}")
                return 2
        if cfg.endpoint_host and cfg.is_host and cfg.pod_ip and not is_loopback(cfg.endpoint_host):
            # The store's host serves on every address and reaches its own store by its pod IP: its
            # own name may not resolve yet (the first lookup can beat the Service's EndpointSlice, and
            # the cluster DNS then caches the NXDOMAIN for ~30 s, measured on the real node).
            _say(f"rendezvous host {cfg.endpoint_host} is this worker: serving the store on {cfg.pod_ip}")
            self._use_endpoint(cfg.pod_ip)
        elif cfg.endpoint_host:
            fallback = self._rendezvous_ip if cfg.worker_index not in (None, 0) else None
            found = wait_for_dns(cfg.endpoint_host, cfg.endpoint_port, cfg.join_timeout, fallback=fallback)
            if isinstance(found, str):
                self._use_endpoint(found)
        if cfg.peers:  # tensorflow: every peer, within one join timeout in all
            deadline = time.monotonic() + cfg.join_timeout
            for host, port in cfg.peers:
                if not wait_for_dns(host, port, round(max(0.0, deadline - time.monotonic()), 1), what="TF_CONFIG host",
                                    then="starting the worker anyway"):
                    break
        _set_child_subreaper()
        if cfg.runtime == "torchrun" and (agent := self._warm_agent()) is not None:
            if cfg.heartbeat_file:
                touch(cfg.heartbeat_file)
            # The warm agent starts the gang too: the operator judges its startup from this note.
            announced = self._announce() if cfg.worker_index == 0 else None
            code = agent.run()
            if announced is not None:
                announced.join(ANNOUNCE_JOIN_SECONDS)  # a rank that ends at once still leaves its note
            return code
        argv = build_argv(cfg, self.python)
        if cfg.heartbeat_file:
            mark(cfg.heartbeat_file, STARTING)  # the first-step budget counts from torchrun's start, not before DNS
        if cfg.worker_index == 0:
            self._announce()
        read_fd, write_fd = os.pipe()
        # No signal may land between fork and recording the child's pid: block them around it.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: own process group, default signal handling, exec torchrun
            try:
                os.setpgid(0, 0)
                _die_with_parent(parent)
                os.dup2(write_fd, 2)
                os.close(write_fd)
                os.close(read_fd)
                for sig in FORWARDED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
                os.execvpe(argv[0], argv, self.env)
            except BaseException as exc:  # exec failed
                with contextlib.suppress(Exception):
                    os.write(2, f"[trainyard-launch] cannot start {argv[0]}: {exc}\n".encode())
            finally:
                os._exit(127)
        self.child_pid = pid
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also from the parent: no race with an early killpg
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        os.close(write_fd)
        self._stderr_thread = threading.Thread(target=self._pump_stderr, args=(read_fd,), daemon=True)
        self._stderr_thread.start()
        _say("started: " + " ".join(argv[1 if cfg.runtime == "tensorflow" else 2:]))

        poll = 0.05 if not cfg.watchdog else min(0.05, max(0.02, cfg.progress_deadline / 20))
        while self.child_status is None:
            self._reap()
            if self.child_status is not None:
                break
            if cfg.watchdog and self.forwarded is None:
                try:
                    age = time.time() - os.stat(cfg.heartbeat_file).st_mtime
                except FileNotFoundError:
                    touch(cfg.heartbeat_file)  # someone removed it: start the clock again
                    age = 0.0
                state = state_of(cfg.heartbeat_file)
                if age > cfg.deadline_for(state):
                    self._kill_everything()
                    self._join_stderr()
                    self._report_hung(state == STARTING and cfg.first_deadline is not None)
                    return HUNG_EXIT_CODE
            if cfg.runtime == "torchrun" and self.forwarded is None and \
                    self.scanner.verdict_due(time.monotonic(), VERDICT_GRACE_SECONDS):
                # The verdict is in: do not wait for torchrun's shutdown (its workers are stopped).
                _signal_tree(self.child_pid, signal.SIGKILL)
                self._reap_all(KILL_GRACE_SECONDS)
                self._join_stderr()
                code = 1 if self.child_status is None or self.child_status == -signal.SIGKILL else \
                    exit_code_from_status(self.child_status)
                return final_exit_code(code, self.scanner.exitcode, None, self.scanner.peer_lost)
            time.sleep(poll)

        # torchrun stops its workers itself; anything left (it was killed hard) goes too.
        if descendants(os.getpid()):
            self._kill_everything()
        self._join_stderr()
        return final_exit_code(exit_code_from_status(self.child_status), self.scanner.exitcode, self.forwarded,
                               self.scanner.peer_lost)

    def _warm_agent(self):
        """restartMode Warm with inPlaceRestarts >= 1 on a fixed-size job: the launcher is the agent
        and its in-place restarts are warm (trainyard_trainer.inplace); None: torchrun as usual."""
        from . import inplace
        from .warm import Unsupported, target_of

        if inplace.wanted(self.env) is not None:
            return None
        command = ["trainyard-launch", self.cfg.script, *self.cfg.args]
        try:
            target_of(command)
        except Unsupported as e:
            _say(f"warm in-place restarts unavailable ({e}); starting torchrun")
            return None
        _say(f"restartMode Warm: rank {self.env['RANK']} runs in a warm spare; up to "
             f"{self.env.get('PET_MAX_RESTARTS')} in-place restarts, coordinated by worker 0's launcher")
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        return inplace.WarmAgent(command, self.env, self.cfg.join_timeout, self.cfg.heartbeat_file,
                                 self.cfg.progress_deadline)

    def _join_stderr(self) -> None:
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cfg = LaunchConfig.from_env(argv, os.environ)
    except ValueError as exc:
        _say(f"error: {exc}")
        return 2
    return Launcher(cfg).run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
