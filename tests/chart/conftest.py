"""The Helm chart tier: `helm lint`, the values schema, `helm template` snapshots, a real
`helm install`/`uninstall` on a kwok cluster of its own, and actionlint on the workflows.

helm and actionlint are the binaries e2e/cluster/build.sh builds from Go modules into
~/.cache/trainyard/bin/current/ (built on first use). Without Go the tier is skipped with one
loud line, except under CI=true, where a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import prebuild
from tests.support import tier_unavailable

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trainyard"
CLUSTER_SCRIPTS = REPO / "e2e" / "cluster"
CACHE = Path(os.environ.get("TRAINYARD_CACHE", Path.home() / ".cache" / "trainyard"))
BIN = CACHE / "bin" / "current"
# Not the cluster tier's "trainyard-test": the two tiers never share a cluster.
CLUSTER_NAME = os.environ.get("TRAINYARD_CHART_CLUSTER", "trainyard-chart")


def _unavailable(why: str) -> None:
    tier_unavailable("chart", why)


def _tool(name: str) -> str:
    """BIN/name, built by e2e/cluster/build.sh when missing (a no-op for tools already built)."""
    prebuild.wait("cluster/build.sh", 3600)  # a background build of it (tests/prebuild.py)
    path = BIN / name
    if path.exists():
        return str(path)
    if shutil.which("go") is None:
        _unavailable(f"{name} is not built and there is no Go toolchain to build it (install Go 1.26)")
    try:
        build = subprocess.run([str(CLUSTER_SCRIPTS / "build.sh")], text=True, capture_output=True, timeout=3600)
    except subprocess.TimeoutExpired:
        _unavailable("e2e/cluster/build.sh timed out")
    if build.returncode != 0 or not path.exists():
        _unavailable(f"e2e/cluster/build.sh did not build {name}:\n{build.stderr[-3000:]}")
    return str(path)


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def actionlint() -> str:
    return _tool("actionlint")


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return _tool("kubectl")


@dataclass
class Rendered:
    docs: list[dict[str, Any]]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name
                 and (namespace is None or d["metadata"].get("namespace") == namespace)]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found in {self.kinds()}"
        return found[0]

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)


def render(helm: str, values: dict[str, Any] | None = None, release: str = "trainyard",
           namespace: str = "trainyard-system", tmp: Path | None = None,
           extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """`helm template` with values given as a file (types exactly as written, unlike --set)."""
    args = [helm, "template", release, str(CHART), "--namespace", namespace, *(extra or [])]
    if values is not None:
        assert tmp is not None
        f = tmp / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["--values", str(f)]
    return subprocess.run(args, text=True, capture_output=True)


@pytest.fixture
def template(helm: str, tmp_path: Path):
    """template(values) -> Rendered (asserting helm succeeded)."""

    def run(values: dict[str, Any] | None = None, **kw: Any) -> Rendered:
        out = render(helm, values, tmp=tmp_path, **kw)
        assert out.returncode == 0, out.stderr
        return Rendered([d for d in yaml.safe_load_all(out.stdout) if d])

    return run


@dataclass
class KwokCluster:
    kubeconfig: str
    kubectl: str
    helm: str

    def kubectl_run(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        out = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], text=True, capture_output=True,
                             input=input)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}:\n{out.stderr}"
        return out

    def helm_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([self.helm, "--kubeconfig", self.kubeconfig, *args], text=True, capture_output=True)
        if check:
            assert out.returncode == 0, f"helm {' '.join(args)}:\n{out.stderr}"
        return out


@pytest.fixture(scope="package")
def kwok_cluster(helm: str, kubectl_bin: str) -> Iterator[KwokCluster]:
    """A kwok cluster of this tier's own (real apiserver, controller-manager and scheduler; kwok
    plays the kubelets, so the operator's pod is reported Running without running). Package
    scope: it is deleted as soon as the chart tests are done, before the cluster tier starts its own."""
    if not (BIN / "kube-apiserver").exists() and shutil.which("go") is None:
        _unavailable("no control plane built and no Go toolchain to build it")
    _tool("kwokctl")
    try:
        up = subprocess.run([str(CLUSTER_SCRIPTS / "up.sh"), CLUSTER_NAME], text=True, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        _unavailable("e2e/cluster/up.sh timed out")
    if up.returncode != 0:
        _unavailable(f"starting the cluster failed:\n{up.stderr[-3000:]}")
    try:
        yield KwokCluster(up.stdout.strip().splitlines()[-1], kubectl_bin, helm)
    finally:
        if os.environ.get("TRAINYARD_KEEP_CLUSTER") != "1":
            subprocess.run([str(CLUSTER_SCRIPTS / "down.sh"), CLUSTER_NAME], capture_output=True)
