"""The operator image on the real node: the chart installed with the real helm, its Deployment
running in a real pod from the real image (read-only root, non-root), reconciling real jobs
whose workers train in the trainer image."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from ..support import ALL_REDUCE
from .conftest import OPERATOR_NS, REPO, Node, operator_pod, wait_for


def test_operator_deployment_runs_read_only_and_non_root_from_the_real_image(chart: Node):
    pod = operator_pod(chart)
    name = pod["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == chart.operator_image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] is True and status["containerID"].startswith("containerd://")
    ids = chart.kubectl("exec", "-n", OPERATOR_NS, name, "--", "id").stdout
    assert ids.startswith("uid=10001(trainyard) gid=10001(trainyard)"), ids
    touch = chart.kubectl("exec", "-n", OPERATOR_NS, name, "--", "sh", "-c", "touch /opt/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch
    # The operator talks to the apiserver through the kubernetes Service (10.0.0.1), and lives.
    logs = chart.logs(OPERATOR_NS, name)
    assert "Traceback" not in logs, logs[-3000:]


def test_a_job_is_reconciled_to_succeeded_by_theoperator_pod(chart: Node, ns: str):
    """A 2-worker DistributedTrainingJob with a checkpoint claim (bound to a local PV of the node):
    the operator in its pod creates the Service, the claim and the gang; the workers rendezvous
    through the headless Service and end; the job ends Succeeded."""
    name = f"ar-{uuid.uuid4().hex[:4]}"
    job = {
        "apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "workers": 2,
            "rendezvous": {"joinTimeoutSeconds": 300},
            "checkpoint": {"size": "1Gi", "accessModes": ["ReadWriteOnce"]},
            "template": {"spec": {"containers": [{
                "name": "trainer", "image": chart.trainer_image,
                "command": ["sh", "-c", f"cat > /tmp/t.py <<'PY'\n{ALL_REDUCE}\nPY\n"
                            "echo ok > $TRAINYARD_CHECKPOINT_DIR/written-by-$(id -u) && exec trainyard-launch /tmp/t.py"],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}},
        },
    }
    chart.apply(job)

    def finished():
        status = (chart.get("dtj", name, ns) or {}).get("status", {})
        return status.get("phase") in ("Succeeded", "Failed") and status
    try:
        status = wait_for(finished, 900, f"job {name} to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{chart.diagnostics(ns)}\n{chart.logs(OPERATOR_NS, operator_pod(chart)['metadata']['name'])[-4000:]}") from None
    assert status["phase"] == "Succeeded", f"{status}\n{chart.diagnostics(ns)}"


@pytest.mark.skipif(os.environ.get("TRAINYARD_NODE_DIGITS", "1") == "0", reason="TRAINYARD_NODE_DIGITS=0")
def test_digits_example_trains_resumes_after_a_kill_and_succeeds(chart: Node):
    """examples/digits-ddp.yaml as the e2e-kind workflow runs it (e2e/kind/digits-ddp: 2 workers,
    ReadWriteOnce): e2e/kind/digits-resume.sh waits for a checkpoint, force-deletes a worker,
    and requires the new gang to resume from the checkpoint and the job to end Succeeded."""
    env = {**os.environ, "KUBECTL": chart.kubectl_bin, "KUBECONFIG": chart.kubeconfig, "NS": f"digits-{uuid.uuid4().hex[:4]}"}
    r = subprocess.run([str(REPO / "e2e" / "kind" / "digits-resume.sh")], env=env, text=True, capture_output=True,
                       timeout=2400)
    print(r.stderr[-4000:])
    assert r.returncode == 0, r.stderr[-12000:]
    assert re.search(r"resumed from step \d+", r.stderr), r.stderr[-4000:]
    chart.kubectl("delete", "namespace", env["NS"], "--wait=false", check=False)


def test_the_example_file_is_what_digits_resume_applies():
    """The kustomization starts from the example file (a rename would make the test above vacuous)."""
    kust = yaml.safe_load((REPO / "e2e" / "kind" / "digits-ddp" / "kustomization.yaml").read_text())
    assert (Path(REPO / "e2e" / "kind" / "digits-ddp") / kust["resources"][0]).resolve() == REPO / "examples" / "digits-ddp.yaml"
