"""Shared pieces of the benchmarks: statistics, result files, the machine and its versions.

Every figure is reported as a ratio between contenders measured interleaved in the same run
(round r runs every contender once, in an order rotated by r), with the median and the spread
(min-max) of the per-round ratios, next to the absolute medians for orientation only: on a
shared 2-core machine absolute seconds drift from run to run, ratios much less.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", BENCH / "results"))
CACHE = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))
BIN = CACHE / "bin" / "current"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0}
    q = statistics.quantiles(vals, n=4, method="inclusive") if len(vals) > 1 else [vals[0]] * 3
    return {
        "n": len(vals),
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "p25": q[0],
        "p75": q[2],
        "values": [round(v, 6) for v in vals],
    }


def paired_ratios(num: Sequence[float | None], den: Sequence[float | None]) -> dict[str, Any]:
    """Per-round ratios num[i]/den[i] (same round = measured back to back), then their stats."""
    return stats([a / b for a, b in zip(num, den, strict=False) if a is not None and b])


def rotated(items: Sequence[Any], r: int) -> list[Any]:
    """The contenders of round r, rotated so that no one always goes first."""
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def interleave(contenders: dict[str, Callable[[int], dict[str, float]]], rounds: int,
               warmup: int = 1) -> dict[str, list[dict[str, float]]]:
    """Runs `warmup` discarded rounds then `rounds` measured ones; each round calls every contender
    once (rotated order). Returns {contender: [per-round measurements]}; a measurement that raised is
    recorded as {"error": ...} and left out of the statistics."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(-warmup, rounds):
        for name in rotated(names, max(r, 0)):
            tag = "warm-up" if r < 0 else f"round {r + 1}/{rounds}"
            t0 = time.monotonic()
            try:
                m = contenders[name](r)
            except Exception as e:  # keep going: one failed trial must not lose the others
                log(f"  {tag} {name}: FAILED: {type(e).__name__}: {e}")
                m = {"error": f"{type(e).__name__}: {e}"}
            else:
                shown = ", ".join(f"{k}={v:.3f}" for k, v in m.items() if isinstance(v, float))
                log(f"  {tag} {name}: {shown} ({time.monotonic() - t0:.1f}s)")
            if r >= 0:
                out[name].append(m)
    return out


def column(trials: list[dict[str, Any]], key: str) -> list[float | None]:
    return [t.get(key) if "error" not in t else None for t in trials]


def sh(cmd: list[str], timeout: float = 30, **kw: Any) -> str:
    try:
        return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unavailable: {e}"


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("kopf", "kubernetes", "torch", "trainyard", "trainyard-trainer", "ray"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    env: dict[str, str] = {}
    for f in (REPO / "e2e" / "cluster" / "versions.env", BENCH / "kubeflow" / "versions.env"):
        if f.exists():
            for line in f.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    env[k.strip()] = v.strip()
    out["kubernetes (control plane)"] = env.get("KUBE_VERSION", "?")
    out["etcd"] = env.get("ETCD_VERSION", "?")
    out["kwok"] = env.get("KWOK_VERSION", "?")
    out["kubeflow training-operator"] = env.get("TRAINING_OPERATOR_VERSION", "?")
    out["go"] = sh(["go", "env", "GOVERSION"])
    ray_py = BENCH / ".venv-ray" / "bin" / "python"
    if ray_py.exists():
        out["ray (bench/.venv-ray)"] = sh([str(ray_py), "-c", "import ray; print(ray.__version__)"])
    return out


@dataclass
class Result:
    """One benchmark's JSON file: its workload, method, raw trials and summary rows."""

    name: str
    title: str
    workload: str
    method: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # the summary table's rows
    trials: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def row(self, figure: str, ratio: dict[str, Any] | None, target: str = "", *,
            a: dict[str, Any] | None = None, b: dict[str, Any] | None = None, unit: str = "s",
            note: str = "") -> None:
        """A summary row: `figure` = what, ratio stats (median and spread), the absolute medians of
        the two sides (for orientation) and the target, if the issue sets one."""
        self.rows.append({"benchmark": self.name, "figure": figure, "ratio": ratio, "target": target,
                          "a": a, "b": b, "unit": unit, "note": note})

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        body = {
            "benchmark": self.name, "title": self.title, "workload": self.workload, "method": self.method,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "summary": self.rows, "notes": self.notes, "trials": self.trials, **self.extra,
        }
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")
        return path


def fmt_ratio(r: dict[str, Any] | None) -> str:
    if not r or not r.get("n"):
        return "n/a"
    return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}] n={r['n']}"


def fmt_abs(s: dict[str, Any] | None, unit: str) -> str:
    if not s or not s.get("n"):
        return "-"
    m = s["median"]
    if unit == "s":
        return f"{m:.3f}s" if m < 10 else f"{m:.1f}s"
    if unit == "MB":
        return f"{m:.0f}MB"
    return f"{m:.2f}{unit}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ["benchmark", "figure", "ratio: median [min-max] n", "A median", "B median", "target"]
    body = [[r["benchmark"], r["figure"], fmt_ratio(r["ratio"]), fmt_abs(r.get("a"), r["unit"]),
             fmt_abs(r.get("b"), r["unit"]), r.get("target", "")] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])
