""".github/workflows: actionlint (built from Go modules by e2e/cluster/build.sh) finds nothing, and
the e2e workflow stays in step with the repository (pins, test ids, scripts)."""

from __future__ import annotations

import re
import subprocess

import yaml

from .conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def test_actionlint_finds_nothing(actionlint):
    files = sorted(p.name for p in WORKFLOWS.glob("*.y*ml"))
    assert files == ["e2e-kind.yaml", "test.yaml"]
    # actionlint also runs shellcheck on every `run:` script when shellcheck is on PATH.
    out = subprocess.run([actionlint, "-no-color"], cwd=REPO, text=True, capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def _versions() -> dict[str, str]:
    text = (REPO / "e2e" / "cluster" / "versions.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, re.M))


def test_e2e_pins_match_the_local_tool_chain():
    env = yaml.safe_load((WORKFLOWS / "e2e-kind.yaml").read_text())["env"]
    versions = _versions()
    assert env["KUBECTL_VERSION"] == versions["KUBE_VERSION"]
    assert env["HELM_VERSION"] == versions["HELM_VERSION"]
    assert re.fullmatch(r"kindest/node:v[0-9.]+@sha256:[0-9a-f]{64}", env["KIND_NODE_IMAGE"])


def test_e2e_steps_refer_to_things_that_exist():
    workflow = yaml.safe_load((WORKFLOWS / "e2e-kind.yaml").read_text())
    script = "\n".join(s.get("run", "") for s in workflow["jobs"]["e2e-kind"]["steps"])
    for deselected in re.findall(r"--deselect (\S+)", script):
        path, _, name = deselected.partition("::")
        assert f"def {name}(" in (REPO / path).read_text(), deselected
    for named, needed in [("e2e/images/build.sh --base public --with-stand-in", "e2e/images/build.sh"),
                          ("e2e/images/check.sh", "e2e/images/check.sh"),
                          ("--config e2e/kind/kind-config.yaml", "e2e/kind/kind-config.yaml"),
                          ("e2e/kind/digits-resume.sh", "e2e/kind/digits-resume.sh"),
                          ("helm install trainyard charts/trainyard", "charts/trainyard/Chart.yaml")]:
        assert named in script, named
        assert (REPO / needed).exists(), needed
    # The workflow builds the images with the script `make images` runs: every Dockerfile is in it.
    build = (REPO / "e2e" / "images" / "build.sh").read_text()
    for dockerfile in ("operator/Dockerfile", "trainer-image/Dockerfile", "e2e/kind/stand-in-trainer/Dockerfile"):
        assert dockerfile in build and (REPO / dockerfile).exists(), dockerfile
