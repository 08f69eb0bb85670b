"""`trainyard operator --log-format json`: every line of a job's reconcile names the job."""

from __future__ import annotations

import json
import logging

import kopf

from trainyard.kube.loop import job_logger


def test_job_lines_carry_the_job_in_json(capsys):
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=True)
    try:
        job_logger("ml", "digits").warning("creating worker %s failed: %s", "digits-0-1", "quota")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["message"] == "creating worker digits-0-1 failed: quota"
        assert record["object"] == {"apiVersion": "trainyard.dev/v1alpha1", "kind": "DistributedTrainingJob",
                                    "name": "digits", "namespace": "ml"}
        assert record["severity"] == "warn"
    finally:
        logging.getLogger().handlers.clear()
