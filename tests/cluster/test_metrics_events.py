"""Prometheus metrics and Kubernetes events from the real operator, for each kind of decision."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .helpers import held_node, job_manifest, wait_for


def scrape(operator) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_outcomes_and_measure_fan_out_and_recovery(kube, ns, operator):
    before = scrape(operator)
    kube.create_job(ns, job_manifest("m", workers=3))
    kube.wait_phase(ns, "m", "Running")
    kube.finish_pod(ns, "m-0-1", 143)
    wait_for(lambda: kube.running(ns, "m", 1, 3), 30, "the replacement gang")
    kube.wait_phase(ns, "m", "Running")
    for i in range(3):
        kube.finish_pod(ns, f"m-1-{i}", 0)
    kube.wait_phase(ns, "m", "Succeeded")

    def settled():
        after = scrape(operator)
        return after if value(after, "trainyard_jobs_succeeded_total", namespace=ns) == 1 else None

    after = wait_for(settled, 10, "the success counted")
    assert value(after, "trainyard_jobs_created_total", namespace=ns) == 1
    assert value(after, "trainyard_jobs_restarted_total", namespace=ns, reason="WorkerFailed") == 1
    assert value(after, "trainyard_jobs_disruptions_total", namespace=ns, reason="WorkerFailed") == 0

    def grew(name):
        return value(after, name) - value(before, name)

    assert grew("trainyard_job_workers_created_seconds_count") == 1
    assert grew("trainyard_job_workers_running_seconds_count") == 1
    assert grew("trainyard_recovery_seconds_count") == 1
    assert grew("trainyard_reconcile_duration_seconds_count") >= 4
    assert value(after, "trainyard_api_requests_total", verb="create", resource="pods", code="201") \
        - value(before, "trainyard_api_requests_total", verb="create", resource="pods", code="201") == 6
    assert value(after, "trainyard_jobs", phase="Succeeded") >= 1


def test_events_for_every_decision(kube, ns, operator):
    kube.create_job(ns, job_manifest("ev", workers=2, failurePolicy={"backoffLimit": 1},
                                     runPolicy={"startupDeadlineSeconds": 2}))
    kube.wait_phase(ns, "ev", "Running")
    def running_at(attempt):  # the operator has seen the gang run, not only kwok
        return (s := kube.status(ns, "ev")).get("attempt") == attempt and s.get("phase") == "Running"

    kube.evict(ns, "ev-0-0")
    wait_for(lambda: running_at(1), 30, "gang after the eviction")
    kube.finish_pod(ns, "ev-1-1", 1)
    wait_for(lambda: running_at(2), 30, "gang after the failure")
    kube.finish_pod(ns, "ev-2-0", 1)
    kube.wait_phase(ns, "ev", "Failed")
    reasons = wait_for(lambda: (r := [r for r, _ in kube.events(ns, "ev")]) and r[-1] == "BackoffLimitExceeded" and r,
                       10, "the final event")
    assert reasons == ["AllWorkersRunning", "Evicted", "AllWorkersRunning", "WorkerFailed",
                       "AllWorkersRunning", "BackoffLimitExceeded"]

    with held_node(kube, f"held-{ns}") as node:  # only this test writes the pod's status
        template = {"spec": {"nodeName": node, "containers": [{"name": "trainer", "image": "x"}]}}
        kube.create_job(ns, job_manifest("stuck", workers=1, template=template,
                                         runPolicy={"startupDeadlineSeconds": 3}))
        wait_for(lambda: kube.pods(ns, "stuck"), 30, "the pod")
        kube.set_waiting(ns, "stuck-0-0", "ErrImagePull", "not found")
        kube.wait_phase(ns, "stuck", "Failed")
        events = wait_for(lambda: (e := kube.events(ns, "stuck")) and e[-1][0] == "ErrImagePull" and len(e) >= 2
                          and e, 10, "stuck events")
    assert [r for r, _ in events] == ["ErrImagePull", "ErrImagePull"]
    assert "cannot start" in events[0][1] and "could not start" in events[1][1]

    kube.create_job(ns, job_manifest("dl", workers=1, runPolicy={"activeDeadlineSeconds": 1}))
    kube.wait_phase(ns, "dl", "Failed")
    assert wait_for(lambda: [r for r, _ in kube.events(ns, "dl")][-1:] == ["DeadlineExceeded"], 10, "deadline event")
