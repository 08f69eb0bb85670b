"""Reading the workers' logs: which pods (the current gang, an attempt, the one before), their
streams interleaved or merged by time, and the policy for workers whose log cannot be read."""

from __future__ import annotations

import codecs
import contextlib
import heapq
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes.client.exceptions import ApiException

from .. import api
from ..engine.gang import current_gang
from .errors import ClusterUnreachable, JobNotFound, LogsUnavailable
from .info import WorkerInfo
from .transport import connection_problem, status_body

if TYPE_CHECKING:
    from .client import TrainyardClient

# A followed log may stay silent for a long time (data loading, a long epoch); the client wants a number.
FOLLOW_READ_TIMEOUT = 30 * 86400


@dataclass(frozen=True)
class LogItem:
    """A log line of a worker, or an error reading its log, or a notice (worker -1) for the reader.
    `state`: what a worker's pod was doing when its log was read (an item of its own, which the
    policy turns into the notice of why no line came). `empty`: this notice says why."""

    worker: int
    line: str | None
    error: str | None
    notice: str | None = None
    state: str | None = None
    empty: bool = False


def _logs_failure(name: str, failures: list[tuple[int, str]]) -> str:
    failures = sorted(failures)  # (streams fail in any order when followed)
    first = failures[0][1]
    others = f" (and {len(failures) - 1} more worker(s))" if len(failures) > 1 else ""
    return f"cannot read the logs of job {name!r}: worker {failures[0][0]}: {first}{others}"


def no_lines_notice(states: Mapping[int, str]) -> str:
    """"no log lines yet: worker 0 is Pending (ContainerCreating), worker 1 is Running"."""
    active = any(s.startswith(("Pending", "Running")) for s in states.values())
    return (f"no log lines{' yet' if active else ''}: "
            + ", ".join(f"worker {w} is {s}" for w, s in sorted(states.items())))


def hold_errors(name: str, items: Iterable[LogItem]) -> Iterator[LogItem]:
    """The logs policy: a worker whose log cannot be read is reported once some line has come
    (until then its error is held back); if no line ever comes, LogsUnavailable names the errors;
    if no line comes and no error either (the logs are empty), a notice says what each worker's
    pod is doing, so that an empty answer is never silent."""
    held: list[tuple[int, str]] = []
    states: dict[int, str] = {}
    produced = False
    for item in items:
        if item.state is not None:
            states[item.worker] = item.state
            continue
        if item.error is not None and not produced:
            held.append((item.worker, item.error))
            continue
        if item.line is not None and not produced:
            produced = True
            for w, err in held:
                yield LogItem(w, None, err)
        yield item
    if held and not produced:
        raise LogsUnavailable(_logs_failure(name, held))
    if not produced and states:
        yield LogItem(-1, None, None, notice=no_lines_notice(states), empty=True)


def _one_line(e: BaseException | None) -> str | None:
    if e is None:
        return None
    return " ".join(str(e).split()) or type(e).__name__


class LogReader:
    """The logs of one client's jobs."""

    def __init__(self, client: TrainyardClient):
        self.c = client

    def stream(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
               previous_attempt: bool = False, namespace: str | None = None) -> Iterator[LogItem]:
        return hold_errors(name, self.items(name, worker, follow, attempt=attempt, previous_attempt=previous_attempt,
                                            namespace=namespace))

    def items(self, name: str, worker: int | None = None, follow: bool = False, *, attempt: int | None = None,
              previous_attempt: bool = False, namespace: str | None = None) -> Iterator[LogItem]:
        c = self.c
        ns = c._ns(namespace)
        obj = c.get_raw(name, ns)
        uid = obj["metadata"].get("uid")
        st = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
        chosen = self._select(name, ns, uid, st, worker, attempt, previous_attempt, wait=follow)
        shown: set[str] = set()
        while True:
            for p in chosen:
                yield LogItem(p.index, None, None, state=p.state)
            failed: set[int] = set()
            for item in self._stream_pods(chosen, ns, follow):
                if item.error is not None:
                    failed.add(item.worker)
                yield item
            shown.update(p.name for p in chosen)
            if not follow or attempt is not None or previous_attempt or len(failed) == len(chosen):
                return  # (when no stream could be opened, following on would only wait for nothing)
            # Following the current gang: go on with the next attempt's pods until the job ends.
            while True:
                obj = c.get_raw(name, ns)
                st = api.DistributedTrainingJobStatus.model_validate(obj.get("status") or {})
                pods = [p for p in self._current(name, ns, uid, st, worker) if p.name not in shown]
                if pods:
                    first = min(p.attempt for p in pods)
                    yield LogItem(-1, None, None, notice=f"attempt {first}: {', '.join(p.name for p in pods)}")
                    chosen = pods
                    break
                if st.phase is not None and st.phase.terminal:
                    return
                time.sleep(1.0)

    def _current(self, name: str, ns: str, uid: str | None, st: api.DistributedTrainingJobStatus,
                 worker: int | None) -> list[WorkerInfo]:
        gang = current_gang(self.c.workers(name, ns, uid), st)
        return [p for i, p in gang.items() if worker is None or i == worker]

    def _select(self, name: str, ns: str, uid: str | None, st: api.DistributedTrainingJobStatus,
                worker: int | None, attempt: int | None, previous_attempt: bool, wait: bool) -> list[WorkerInfo]:
        which = f" pod of worker {worker}" if worker is not None else " worker pods"
        if attempt is not None or previous_attempt:
            pods = self.c.workers(name, ns, uid)
            if previous_attempt:
                earlier = sorted({p.attempt for p in pods if p.attempt < st.attempt})
                if not earlier:
                    raise LogsUnavailable(f"job {name!r} has no pods of an attempt before {st.attempt} "
                                          "(a gang restart keeps only the failed pod)")
                attempt = earlier[-1]
            chosen = [p for p in pods if p.attempt == attempt and (worker is None or p.index == worker)]
            if not chosen:
                raise LogsUnavailable(f"job {name!r} has no{which} in attempt {attempt}")
            return chosen
        while True:
            chosen = self._current(name, ns, uid, st, worker)
            if chosen or not wait or (st.phase is not None and st.phase.terminal):
                break
            time.sleep(1.0)  # following a job whose workers are not created yet
            st = self.c.status(name, ns)
        if not chosen:
            raise LogsUnavailable(f"job {name!r} has no{which} (phase "
                                  f"{st.phase.value if st.phase else 'Pending'}, attempt {st.attempt})")
        return chosen

    def _stream_pods(self, pods: list[WorkerInfo], ns: str, follow: bool) -> Iterator[LogItem]:
        streams = _Streams()
        sources = {p.index: self._pod_source(p.name, ns, follow, streams) for p in pods}
        try:
            if follow:
                for w, line, err in interleave(sources, on_close=streams.close):
                    yield LogItem(w, _strip_timestamp(line) if line is not None else None, _one_line(err))
            else:
                failures: list[LogItem] = []

                def guarded(w: int, src: Callable[[], Iterable[str]]) -> Iterator[str]:
                    try:
                        yield from src()
                    except Exception as e:
                        failures.append(LogItem(w, None, _one_line(e)))

                for w, line in merge_by_time({w: guarded(w, s) for w, s in sources.items()}):
                    yield LogItem(w, _strip_timestamp(line), None)
                yield from failures
        finally:
            streams.close()

    def _pod_source(self, pod: str, ns: str, follow: bool, streams: _Streams) -> Callable[[], Iterator[str]]:
        c = self.c

        def lines() -> Iterator[str]:
            while True:
                try:
                    resp = c.core.read_namespaced_pod_log(
                        pod, ns, container=api.TRAINER_CONTAINER, follow=follow, timestamps=True,
                        _preload_content=False, _request_timeout=(10, FOLLOW_READ_TIMEOUT if follow else 300))
                except ApiException as e:
                    if follow and e.status == 400 and self._pending(pod, ns) and not streams.closed:
                        time.sleep(1.0)  # not started yet: follow waits for it
                        continue
                    err = c._error(e, pod, ns, what="pod")
                    raise LogsUnavailable(err.message if isinstance(err, JobNotFound) else
                                          " ".join(str((status_body(e) or {}).get("message") or
                                                       e.body or e.reason).split())) from e
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise ClusterUnreachable(f"cannot reach the Kubernetes API at {c.server}: "
                                             f"{connection_problem(e)}") from e
                streams.add(resp)
                try:
                    yield from iter_lines(read_chunks(resp))
                except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
                    if not streams.closed:
                        raise
                finally:
                    if streams.closed:
                        with contextlib.suppress(Exception):
                            resp.close()  # a shut-down connection must not go back to the pool
                    else:
                        resp.release_conn()
                return

        return lines

    def _pending(self, pod: str, ns: str) -> bool:
        try:
            p = self.c.core.read_namespaced_pod(pod, ns, _request_timeout=self.c.request_timeout)
        except ApiException:
            return False
        return p.status is not None and p.status.phase == "Pending" and p.metadata.deletion_timestamp is None


class _Streams:
    """Open log responses, closed all at once when the reader stops (Ctrl-C, a closed generator)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Any] = []
        self.closed = False

    def add(self, resp: Any) -> None:
        with self._lock:
            if self.closed:
                resp.close()
                return
            self._open.append(resp)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            opened, self._open = self._open, []
        for resp in opened:
            # Another thread may be blocked reading this response; closing it here would wait for
            # that read (the file's lock) forever. Shutting the socket down wakes the reader first.
            conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                resp.close()


def read_chunks(resp: Any) -> Iterator[bytes]:
    """The body as it arrives: a chunked (follow) response yields each chunk the kubelet flushed."""
    if getattr(resp, "chunked", False) and getattr(resp, "supports_chunked_reads", lambda: False)():
        yield from resp.read_chunked(decode_content=True)
    else:
        yield from resp.stream(64 * 1024)


def iter_lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Lines from a byte stream whose chunks split lines (and UTF-8 characters) anywhere. A last
    line without a newline is yielded at the end; "\\r\\n" ends a line too."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = ""
    for chunk in chunks:
        buf += decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if "\n" in buf:
            *complete, buf = buf.split("\n")
            for line in complete:
                yield line.removesuffix("\r")
    buf += decoder.decode(b"", final=True)
    if buf:
        yield buf.removesuffix("\r")


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")


def _time_key(line: str) -> str:
    """A sort key for a kubelet timestamp prefix (RFC 3339 with 0-9 fraction digits, UTC)."""
    m = _TS.match(line)
    return m.group(1) + "." + (m.group(2) or "").ljust(9, "0") if m else ""


def _strip_timestamp(line: str) -> str:
    m = _TS.match(line)
    return line[m.end():] if m else line


def merge_by_time(sources: Mapping[int, Iterable[str]]) -> Iterator[tuple[int, str]]:
    """Merges finished logs by their timestamp prefixes (lines without one keep their place after
    the line before them), reading each source lazily: memory stays at one line per source."""

    def keyed(w: int, lines: Iterable[str]) -> Iterator[tuple[str, int, int, str]]:
        last = ""
        for seq, line in enumerate(lines):
            last = _time_key(line) or last
            yield last, w, seq, line

    for _, w, _, line in heapq.merge(*(keyed(w, src) for w, src in sources.items())):
        yield w, line


_DONE = object()


def interleave(sources: Mapping[int, Callable[[], Iterable[str]]], on_close: Callable[[], None] | None = None,
               maxsize: int = 10000) -> Iterator[tuple[int, str | None, BaseException | None]]:
    """Runs every source in its own thread and yields (key, line, None) in arrival order, and
    (key, None, error) when a source fails. Ends when every source has ended. Closing the
    generator early calls `on_close` (which should unblock the sources' reads) and returns."""
    q: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item: tuple[int, Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(key: int, source: Callable[[], Iterable[str]]) -> None:
        try:
            for line in source():
                if not put((key, line, None)):
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the reader, never lost in a thread
            put((key, None, e))
        finally:
            put((key, _DONE, None))

    threads = [threading.Thread(target=run, args=(k, s), name=f"trainyard-logs-{k}", daemon=True)
               for k, s in sources.items()]
    for t in threads:
        t.start()
    remaining = len(threads)
    try:
        while remaining:
            key, line, err = q.get()
            if line is _DONE:
                remaining -= 1
                continue
            yield key, line, err
    finally:
        stop.set()
        if on_close is not None:
            on_close()


