"""Without Kueue (the cluster tier has none; tests/kueue has a real one): a job that asks for a
queue never runs outside it, and says why."""

from __future__ import annotations

from trainyard.api import reasons as R

from .helpers import job_manifest, wait_for


def test_a_queued_job_without_kueue_waits_and_says_why(kube, ns, operator):
    body = job_manifest("q")
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "lq"}
    kube.create_job(ns, body)
    cond = wait_for(lambda: kube.condition(ns, "q", R.ADMITTED), 30, "the Admitted condition")
    assert (cond["status"], cond["reason"]) == ("False", R.KUEUE_UNAVAILABLE)
    assert "install Kueue, or remove the label" in cond["message"]
    assert kube.status(ns, "q")["phase"] == "Pending" and kube.pods(ns, "q") == []
    assert (R.KUEUE_UNAVAILABLE, cond["message"]) in kube.events(ns, "q")
