"""spec.runtime tensorflow through `trainyard run`: 2 MultiWorkerMirroredStrategy workers as local
processes, each with the TF_CONFIG the engine's env gives it; a kill -9 of one worker is a gang
restart with new ports, and the new gang resumes from the checkpoint, not step 0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from trainyard.api import Phase
from trainyard.api import reasons as R
from trainyard.local.injection import Injection
from trainyard.local.runner import Runner, load_job

if importlib.util.find_spec("tensorflow") is None:  # make setup installs it (trainer-image[tensorflow])
    pytest.fail("tensorflow-cpu is not installed: run make setup", pytrace=False)

pytestmark = pytest.mark.torch


def tf_job(tmp: Path, *args: str) -> Path:
    body = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "metadata": {"name": "tf-digits"},
        "spec": {
            "runtime": "tensorflow", "workers": 2,
            "failurePolicy": {"restartPolicy": "OnFailure", "backoffLimit": 2},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": "trainyard/trainer:tf",
                "command": ["trainyard-launch", "-m", "trainyard_trainer.examples.train_tf_digits"],
                "args": list(args)}]}},
        },
    }
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_tensorflow_job_trains_survives_a_kill_and_resumes(tmp_path):
    path = tf_job(tmp_path, "--epochs", "4", "--checkpoint-every", "10", "--log-every", "5", "--step-delay", "0.05",
                  "--weights-out", str(tmp_path / "w"))
    (tmp_path / "ckpt").mkdir()
    runner = Runner(load_job(path), tmp_path / "work", tmp_path / "ckpt", Injection.parse("worker=1,at-step=25"),
                    tick=0.05)
    result = runner.run()
    st = result.job.status
    assert (st.phase, st.restarts, st.attempt) == (Phase.SUCCEEDED, 1, 1), st.message
    reasons = [e.reason for e in result.events]
    assert reasons[reasons.index("InjectedFailure") + 1] == R.WORKER_FAILED
    assert result.resumed_from is not None and result.resumed_from >= 20, result.resumed_from
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "w").glob("rank-*.json"))]
    assert len(ranks) == 2 and ranks[0]["sha256"] == ranks[1]["sha256"]  # one model, agreed
    # each gang had its own TF_CONFIG: a port per worker, new ones for the new gang
    ports = runner.backend.ports
    assert sorted(ports) == [0, 1] and all(len(p) == 2 for p in ports.values())
    assert not set(ports[0]) & set(ports[1])
