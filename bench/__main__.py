"""`python -m bench [--only p1,p3,...] [--rounds N] [--keep-cluster]`: run the benchmarks, write
bench/results/<name>.json each, and print one summary table (also bench/results/summary.md)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback

from .common import RESULTS, Result, log, machine, table, versions

ORDER = ["p1", "p3", "p5", "ckpt", "p2", "p4", "p6"]
CLUSTER = {"p1", "p3", "p2"}
ALIASES = {"fanout": "p1", "recovery": "p3", "first-step": "p5", "checkpoint": "ckpt", "async": "ckpt",
           "scale": "p2", "ray": "p4", "warm": "p6"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", default=os.environ.get("BENCH", ""),
                   help=f"comma-separated subset of {','.join(ORDER)} (default: all; env BENCH)")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "0")) or None,
                   help="override every benchmark's number of interleaved rounds")
    p.add_argument("--keep-cluster", action="store_true", help="leave the trainyard-bench cluster running")
    p.add_argument("--summary", action="store_true",
                   help="only print the summary table of the result files already in bench/results/")
    return p.parse_args(argv)


def summary_from_files() -> int:
    rows = []
    for b in ORDER:
        for f in sorted(RESULTS.glob("*.json")):
            if f.name.startswith(b) and f.name != "run.json":
                rows += json.loads(f.read_text()).get("summary", [])
    print(table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.summary:
        return summary_from_files()
    # SIGTERM as Ctrl-C: the session's clean-up (operators stopped, cluster deleted) still runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    wanted = [ALIASES.get(x.strip().lower(), x.strip().lower()) for x in args.only.split(",") if x.strip()]
    unknown = [w for w in wanted if w not in ORDER]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {ORDER}", file=sys.stderr)
        return 2
    selected = [b for b in ORDER if b in wanted] if wanted else list(ORDER)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"benchmarks: {', '.join(selected)} (results in {RESULTS})")
    results: list[Result] = []
    failures: list[str] = []

    def rounds(default: int) -> int:
        return args.rounds or default

    def attempt(name: str, fn) -> None:
        t0 = time.monotonic()
        try:
            res = fn()
        except Exception:
            failures.append(name)
            log(f"{name} FAILED:\n{traceback.format_exc()}")
            return
        res.save()
        results.append(res)
        log(f"{name} done in {time.monotonic() - t0:.0f}s")

    cluster_benches = [b for b in selected if b in CLUSTER]
    if cluster_benches:
        from .session import Session

        try:
            # BENCH_KUBEFLOW=0 leaves Kubeflow out (quick iterations; the recorded run has it).
            with Session(want_kubeflow=bool({"p1", "p3"} & set(cluster_benches))
                         and os.environ.get("BENCH_KUBEFLOW", "1") != "0",
                         keep_cluster=args.keep_cluster) as session:
                for b in cluster_benches:
                    if b == "p1":
                        from . import p1_fanout
                        attempt("p1", lambda: p1_fanout.run(session, rounds(8)))
                    elif b == "p3":
                        from . import p3_recovery
                        attempt("p3", lambda: p3_recovery.run(session, rounds(5)))
                    elif b == "p2":
                        from . import p2_scale
                        attempt("p2", lambda: p2_scale.run(session, rounds(2)))
        except Exception:
            failures.append("cluster")
            log(f"cluster session FAILED:\n{traceback.format_exc()}")
    for b in selected:
        if b == "p5":
            from . import p5_first_step
            attempt("p5", lambda: p5_first_step.run(rounds(4)))
        elif b == "ckpt":
            from . import ckpt_async
            attempt("ckpt", lambda: ckpt_async.run(rounds(3)))
        elif b == "p4":
            from . import p4_ray
            attempt("p4", lambda: p4_ray.run(rounds(3)))
        elif b == "p6":
            from . import p6_warm
            attempt("p6", lambda: p6_warm.run(rounds(3), int(os.environ.get("BENCH_P6_SOAK", "20"))))

    rows = [r for res in results for r in res.rows]
    summary = table(rows)
    meta = {"machine": machine(), "versions": versions(), "benchmarks": selected, "failed": failures,
            "duration_s": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (RESULTS / "run.json").write_text(json.dumps({**meta, "summary": rows}, indent=2, default=str) + "\n")
    (RESULTS / "summary.md").write_text(summary + "\n")
    print()
    print("ratio = A/B per round (A and B measured back to back); median [min-max] over n rounds;")
    print("A/B median: absolute medians, for orientation only (2 shared cores: they drift, ratios less).")
    print(summary)
    for res in results:
        for note in res.notes:
            print(f"note ({res.name}): {note}")
    print(f"\n{len(results)} benchmark(s) in {time.time() - started:.0f}s; results in {RESULTS}")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
