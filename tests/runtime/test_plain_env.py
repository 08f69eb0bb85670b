"""A script started without torchrun (plain `python train.py`, as a PyTorchJob user writes it)
that initialises torch.distributed from env://: on a fixed-size job its workers form ONE group;
where only torchrun can give ranks (elastic, procsPerWorker > 1) it stops at once, saying why,
instead of training alone while the job "succeeds". Real `trainyard run`, real torch, gloo."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.torch
TRAINYARD = str(Path(sys.executable).with_name("trainyard"))

SCRIPT = """
    import json, os
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # 1 + 2 only if both workers are in one group
    out = os.path.join(os.environ["TRAINYARD_CHECKPOINT_DIR"], f"rank-{rank}.json")
    json.dump({"rank": rank, "world": world, "sum": total.item(), "index": os.environ["TRAINYARD_WORKER_INDEX"]},
              open(out, "w"))
    dist.destroy_process_group()
"""


def run(tmp: Path, **spec) -> subprocess.CompletedProcess:
    (tmp / "train.py").write_text(textwrap.dedent(SCRIPT))
    body = {"apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob", "metadata": {"name": "plain"},
            "spec": {"workers": 2, "failurePolicy": {"restartPolicy": "Never"}, **spec,
                     "template": {"spec": {"containers": [{"name": "trainer", "image": "local",
                                                           "command": [sys.executable, str(tmp / "train.py")]}]}}}}
    (tmp / "job.yaml").write_text(yaml.safe_dump(body))
    return subprocess.run([TRAINYARD, "run", "job.yaml", "--workdir", "work", "--checkpoint-dir", "ckpt"],
                          cwd=tmp, capture_output=True, text=True, timeout=300)


def test_a_plain_env_script_on_two_workers_forms_one_group_of_two(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    ranks = [json.loads((tmp_path / "ckpt" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"rank": 0, "world": 2, "sum": 3.0, "index": "0"}, {"rank": 1, "world": 2, "sum": 3.0, "index": "1"}]


@pytest.mark.parametrize(("spec", "why"), [
    ({"workers": None, "elastic": {"minWorkers": 1, "maxWorkers": 2}}, "this elastic job's ranks change as workers come and go"),
    ({"procsPerWorker": 2}, "procsPerWorker=2 starts that many processes in each worker"),
])
def test_where_only_torchrun_gives_ranks_a_plain_script_fails_at_once_saying_why(tmp_path, spec, why):
    out = run(tmp_path, **{k: v for k, v in spec.items() if v is not None})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "plain: Failed" in out.stdout
    log = (tmp_path / "work" / "attempt-0" / "worker-0.log").read_text()
    assert f"set by torchrun for each process it starts: {why}; start the script with torchrun" in log, log
    assert not list((tmp_path / "ckpt").glob("rank-*.json"))  # nobody trained alone
