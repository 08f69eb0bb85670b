"""restartMode Warm on the real node: trainyard-launch restarts the ranks of both pods in place from
warm spares (trainyard_trainer.inplace), the pods stay, the job never hangs and never resumes
before its newest completed checkpoint. bench/node_warm.py is the harness (and measures the same
against a cold pod restart); TRAINYARD_NODE_WARM_KILLS kills in a row (default 3 in make test; the
recorded proof of 10 in a row is bench/results/node_warm.json, `python -m bench.node_warm`)."""

from __future__ import annotations

import os

from bench.node_warm import run_job

KILLS = int(os.environ.get("TRAINYARD_NODE_WARM_KILLS", "3"))


def test_warm_in_place_restarts_on_the_real_node_never_hang_nor_lose_a_checkpoint(chart, ns):
    rows = run_job(chart.kubeconfig, ns, chart.trainer_image, "Warm", KILLS, print)
    *recoveries, final = rows
    assert len(recoveries) == KILLS, rows
    for r in recoveries:
        assert not r["hung"], rows
        assert r["resumed_from"] >= r["last_checkpoint"] and r["resumed_from"] <= r["killed_at_step"], r
        assert "detected_s" in r, r  # the launchers restarted in place (their log line), no new pods
        assert "new_pods_seen_s" not in r, r
    assert final["status"]["attempt"] == 0 and final["status"]["restarts"] == 0, final
