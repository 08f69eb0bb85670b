"""What `trainyard_trainer.progress.report()` costs a training step (issue 14), measured.

`python -m bench.progress_cost [--calls N]` times the hot path, the call a training loop makes after
every optimizer step, in this process:

- `bare`: the loop alone (what the numbers below are net of);
- `not rank 0`: report() on a rank that sends nothing (every rank but 0): the heartbeat's rate limit;
- `rank 0`: report() on rank 0 with its reporter thread running and a Lease that costs nothing
  (the send is off the hot path: this is what the step pays), at the default 10 s interval;
- `rank 0 + heartbeat`: the same with `TRAINYARD_HEARTBEAT_FILE` set (touched at most once a second);
- `rank 0, every call due`: interval 0: every report() also wakes the reporter thread (the worst case
  of the hot path: a step slower than the interval);

and one send (one JSON merge patch of the job's Lease) is timed separately when `--server`, `--token`
and `--ca` name an apiserver (the cluster tier prints it too). Writes bench/results/progress_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from trainyard_trainer import heartbeat
from trainyard_trainer import progress as P

RESULTS = Path(__file__).resolve().parent / "results"


class _NullLease:
    def __init__(self):
        self.patches = 0

    def patch(self, annotations, *, holder=None, renew=False):
        self.patches += 1

    def annotations(self):
        return {}

    def close(self):
        pass


def _per_call(fn, calls: int, repeats: int = 7) -> float:
    """The fastest of `repeats` runs (the machine's other load only ever adds): the mean time of one
    call, in microseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for step in range(calls):
            fn(step)
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return min(times)


def measure(calls: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["bare"] = _per_call(lambda step: None, calls)
    os.environ.pop(heartbeat.ENV_FILE, None)
    heartbeat.reset()
    P.set_reporter(P.Reporter(None))
    out["not rank 0"] = _per_call(lambda step: P.report(step, loss=0.5, samples=64), calls)
    lease = _NullLease()
    r = P.Reporter(lease, interval=10.0)
    P.set_reporter(r)
    r.start(0, total_steps=calls)
    out["rank 0"] = _per_call(lambda step: P.report(step, loss=0.5, samples=64), calls)
    with tempfile.TemporaryDirectory() as d:
        os.environ[heartbeat.ENV_FILE] = str(Path(d) / "beat")
        heartbeat.reset()
        out["rank 0 + heartbeat"] = _per_call(lambda step: P.report(step, loss=0.5, samples=64), calls)
        os.environ.pop(heartbeat.ENV_FILE)
    r.close()
    due = P.Reporter(_NullLease(), interval=0.0)
    P.set_reporter(due)
    due.start(0)
    out["rank 0, every call due"] = _per_call(lambda step: P.report(step, loss=0.5, samples=64), calls // 10)
    due.close()
    P.set_reporter(None)
    out["sends during the 10 s-interval runs"] = lease.patches
    return out


def one_send(server: str, token: str, ca: str, namespace: str, name: str, n: int = 20) -> float:
    from trainyard_trainer.lease import LeaseClient

    c = LeaseClient(namespace, name, server, token_file=token, ca_file=ca)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        c.patch({"trainyard.dev/progress": json.dumps({"attempt": 0, "step": i, "time": "2026-01-01T00:00:00Z"})},
                renew=True)
        times.append((time.perf_counter() - t0) * 1e3)
    c.close()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200000)
    p.add_argument("--server")
    p.add_argument("--token")
    p.add_argument("--ca")
    p.add_argument("--lease", default="default/bench-progress")
    args = p.parse_args(argv)
    got = measure(args.calls)
    doc = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "microseconds_per_report": {k: round(v, 3) for k, v in got.items() if not k.startswith("sends")},
           "net_of_the_bare_loop_us": {k: round(v - got["bare"], 3) for k, v in got.items()
                                       if k not in ("bare",) and not k.startswith("sends")},
           "sends_at_10s_interval": got["sends during the 10 s-interval runs"]}
    if args.server:
        ns, name = args.lease.split("/")
        doc["one_lease_patch_ms"] = round(one_send(args.server, args.token, args.ca, ns, name), 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "progress_cost.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
