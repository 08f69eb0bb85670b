"""The env:// variables every worker gets (engine/env.py): exact where a plain process is one
rank, a sentence that stops a plain script at once where only torchrun can give ranks."""

from __future__ import annotations

import pytest

from trainyard.engine import Launch
from trainyard.engine.env import worker_env

from .conftest import make_job


def env(spec: dict, index: int = 1) -> dict[str, str]:
    job = make_job(spec)
    return {e["name"]: e["value"] for e in worker_env(job, Launch(f"demo-0-{index}", index, 0, 0), "demo-0-0.demo",
                                                      29400, None)}


def test_a_fixed_size_job_with_one_process_per_worker_gets_exact_values():
    e = env({"workers": 3}, index=2)
    assert {k: e[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")} == {
        "MASTER_ADDR": "demo-0-0.demo", "MASTER_PORT": "29400", "WORLD_SIZE": "3", "RANK": "2"}


@pytest.mark.parametrize(("spec", "why"), [
    ({"workers": 2, "procsPerWorker": 4}, "procsPerWorker=4 starts that many processes in each worker"),
    ({"workers": 2, "elastic": {"minWorkers": 1, "maxWorkers": 3}}, "this elastic job's ranks change"),
])
def test_where_only_torchrun_can_give_ranks_a_plain_script_stops_with_the_reason(spec, why):
    e = env(spec)
    assert (e["MASTER_ADDR"], e["MASTER_PORT"]) == ("demo-0-0.demo", "29400")
    for name in ("WORLD_SIZE", "RANK"):
        with pytest.raises(ValueError, match=why):  # what torch's env:// does with it: int(os.environ["RANK"])
            int(e[name])
        assert "start the script with torchrun or trainyard-launch" in e[name]
