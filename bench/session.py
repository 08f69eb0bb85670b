"""One benchmark session on the local control plane: the cluster, the harness client, the
contenders (started once, lazily, and shared by P1, P3 and P2) and the per-namespace pod watches."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

from . import cluster as C
from .common import REPO, RESULTS, log

NS_TRAINYARD = "bench-trainyard"
NS_BASELINE = "bench-trainyard-base"
NS_KUBEFLOW = "bench-kubeflow"
NS_KUBEFLOW_QPS = "bench-kubeflow-qps"
NS_FLOOR = "bench-floor"
TRAINYARD = ("trainyard.dev", "distributedtrainingjobs")
KUBEFLOW = ("kubeflow.org", "pytorchjobs")
# Another source tree of Trainyard (e.g. `git archive main operator | tar -x -C DIR`): P1 and P2 then
# run its operator too, as the contender "trainyard-base", so a change is measured against the code
# before it in the same session, interleaved.
BASELINE = os.environ.get("BENCH_BASELINE") or None


class Session:
    def __init__(self, want_kubeflow: bool, keep_cluster: bool = False):
        self.want_kubeflow = want_kubeflow
        self.keep_cluster = keep_cluster
        self.log_dir = RESULTS / "logs"
        self._procs: dict[str, C.Process] = {}
        self._watches: dict[str, C.PodWatch] = {}
        self._names = itertools.count()
        self.kubeflow_error: str | None = None if want_kubeflow else "left out (BENCH_KUBEFLOW=0)"
        self.kubeflow_bin: tuple[str, str] | None = None
        self.last_stop_s = 0.0  # restart_trainyard: the old operator's stop

    # -- set-up and tear-down
    def __enter__(self) -> Session:
        t0 = time.monotonic()
        try:
            self.kubeflow_bin = C.build_tools(kubeflow=self.want_kubeflow)
        except RuntimeError as e:
            if not self.want_kubeflow:
                raise
            self.kubeflow_error = str(e)
            log(f"Kubeflow training-operator unavailable: {e}")
            C.build_tools(kubeflow=False)
        log(f"tools ready in {time.monotonic() - t0:.1f}s")
        self.kubeconfig = C.cluster_up()
        self.kube = C.Kube(self.kubeconfig)
        C.kubectl(self.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        if self.kubeflow_bin:
            crds = Path(self.kubeflow_bin[1]) / "manifests" / "base" / "crds"
            for f in sorted(crds.glob("kubeflow.org_*.yaml")):  # not kustomization.yaml
                C.kubectl(self.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(f))
        C.kubectl(self.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for ns in (NS_TRAINYARD, NS_FLOOR, *((NS_KUBEFLOW, NS_KUBEFLOW_QPS) if self.kubeflow_bin else ()),
                   *((NS_BASELINE,) if BASELINE else ())):
            self.kube.ensure_namespace(ns)
        return self

    def __exit__(self, *exc: Any) -> None:
        for w in self._watches.values():
            w.stop()
        for p in self._procs.values():
            p.stop()
        if not self.keep_cluster:
            C.cluster_down()

    # -- contenders
    def trainyard(self, baseline: bool = False) -> C.TrainyardOperator:
        """This tree's operator, or (baseline) BENCH_BASELINE's, each in its own namespace."""
        key = "trainyard-base" if baseline else "trainyard"
        if key not in self._procs:
            if baseline and not BASELINE:
                raise RuntimeError("BENCH_BASELINE is not set")
            self._procs[key] = C.TrainyardOperator(
                self.kubeconfig, NS_BASELINE if baseline else NS_TRAINYARD, self.log_dir,
                source=BASELINE if baseline else None, name=f"{key}-operator").start()
        return self._procs[key]  # type: ignore[return-value]

    def restart_trainyard(self, baseline: bool = False) -> C.TrainyardOperator:
        """A fresh operator process (P2 measures its peak RSS from a clean start)."""
        old = self._procs.pop("trainyard-base" if baseline else "trainyard", None)
        t0 = time.monotonic()
        if old:
            old.stop()
        self.last_stop_s = time.monotonic() - t0
        return self.trainyard(baseline)

    def kubeflow(self, qps: bool = False) -> C.KubeflowOperator:
        key = "kubeflow-qps" if qps else "kubeflow"
        if key not in self._procs:
            if not self.kubeflow_bin:
                raise RuntimeError(f"Kubeflow training-operator unavailable: {self.kubeflow_error}")
            extra = ["--kube-api-qps", "1000", "--kube-api-burst", "2000"] if qps else []
            ns = NS_KUBEFLOW_QPS if qps else NS_KUBEFLOW
            self._procs[key] = C.KubeflowOperator(self.kubeconfig, self.kubeflow_bin[0], ns, self.log_dir,
                                                  extra, name=f"training-operator-{key}").start(self.kube)
        return self._procs[key]  # type: ignore[return-value]

    def floor(self, threads: int = 64) -> C.Floor:
        key = f"floor-{threads}"
        if key not in self._procs:
            self._procs[key] = C.Floor(self.kubeconfig, self.log_dir, threads).start()
        return self._procs[key]  # type: ignore[return-value]

    def watch(self, ns: str) -> C.PodWatch:
        if ns not in self._watches:
            self._watches[ns] = C.PodWatch(self.kubeconfig, ns).start()
        w = self._watches[ns]
        w.reset()
        return w

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def clean(self, ns: str, kind: tuple[str, str] | None = None) -> None:
        for attempt in range(3):  # a failed clean-up must not lose the trial it follows
            try:
                self.kube.clean(ns, *(kind or (None, None)))
                break
            except Exception as e:
                if attempt == 2:
                    raise
                log(f"cleaning {ns} failed ({type(e).__name__}: {str(e)[:200]}); again")
        time.sleep(1.0)  # let the controllers' queues drain before the next trial

    # -- submitting jobs
    def submit_trainyard(self, name: str, workers: int, ns: str = NS_TRAINYARD,
                         startup_deadline: int | None = None) -> None:
        body = C.dtj(name, workers, startup_deadline)
        self.kube.custom.create_namespaced_custom_object(*TRAINYARD[:1], "v1alpha1", ns, TRAINYARD[1], body)

    def submit_kubeflow(self, name: str, workers: int, ns: str = NS_KUBEFLOW) -> None:
        body = C.pytorchjob(name, workers)
        self.kube.custom.create_namespaced_custom_object(KUBEFLOW[0], "v1", ns, KUBEFLOW[1], body)
