"""e2e/kind/digits-resume.sh only runs for real on kind (in .github/workflows/e2e-kind.yaml); here
it runs against a scripted kubectl (fake_kubectl.py), so its waiting and its verdicts are tested:
it passes on a job that resumes from its checkpoint, and fails, saying why, on one that does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

SCRIPT = REPO / "e2e" / "kind" / "digits-resume.sh"
FAKE = Path(__file__).with_name("fake_kubectl.py")


def run(tmp_path: Path, kubectl_bin: str, scenario: str) -> tuple[subprocess.CompletedProcess, dict]:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"scenario": scenario}))
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "KUBECTL": str(fake), "REAL_KUBECTL": kubectl_bin, "FAKE_KUBECTL_STATE": str(state),
           "POLL": "0.2", "RUNNING_TIMEOUT": "120", "KILL_TIMEOUT": "120", "SUCCESS_TIMEOUT": "120"}
    out = subprocess.run(["bash", str(SCRIPT)], text=True, capture_output=True, env=env, timeout=600)
    return out, json.loads(state.read_text())


def test_resumed_job_passes(tmp_path, kubectl_bin):
    out, state = run(tmp_path, kubectl_bin, "resume")
    assert out.returncode == 0, out.stderr
    assert ["delete", "pod", "digits-ddp-0-1", "-n", "digits-e2e", "--grace-period=0", "--force",
            "--wait=false"] in state["calls"]
    assert ["apply", "-n", "digits-e2e", "-f", "-"] in state["calls"]
    last = out.stderr.strip().splitlines()[-1]
    assert "OK in" in last and f"resumed from step {(state['killed_at'] // 50) * 50};" in last, last
    assert last.endswith("done step=460 accuracy=0.9639"), last
    assert state["killed_at"] >= 100  # not before a checkpoint at step >= 100 existed


@pytest.mark.parametrize(("scenario", "reason"), [
    ("from-zero", "attempt 1 did not resume from a checkpoint"),
    ("restart-counted", "expected 1 disruption, got 0"),
])
def test_a_wrong_outcome_fails_with_the_reason(tmp_path, kubectl_bin, scenario, reason):
    out, _ = run(tmp_path, kubectl_bin, scenario)
    assert out.returncode == 1
    assert f"ERROR: {reason}" in out.stderr, out.stderr
    assert "FAILED; the state of the cluster" in out.stderr


def test_the_kind_variant_of_the_example(kubectl_bin):
    """e2e/kind/digits-ddp: the example with 2 workers, a ReadWriteOnce claim and --step-delay."""
    rendered = subprocess.run([kubectl_bin, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                               str(REPO / "e2e" / "kind" / "digits-ddp")], text=True, capture_output=True, check=True)
    variant = yaml.safe_load(rendered.stdout)
    example = yaml.safe_load((REPO / "examples" / "digits-ddp.yaml").read_text())
    trainer = variant["spec"]["template"]["spec"]["containers"][0]
    assert variant["spec"]["workers"] == 2
    assert variant["spec"]["checkpoint"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in variant["spec"]["checkpoint"]
    assert "nodeSelector" not in variant["spec"]["template"]["spec"]
    assert trainer["args"] == [*example["spec"]["template"]["spec"]["containers"][0]["args"], "--step-delay", "0.1"]
    assert trainer["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    # everything else is the example's
    for key in ("rendezvous", "failurePolicy", "runPolicy", "procsPerWorker"):
        assert variant["spec"][key] == example["spec"][key]
    assert trainer["image"] == example["spec"]["template"]["spec"]["containers"][0]["image"]
