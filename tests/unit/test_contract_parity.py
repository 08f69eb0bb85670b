"""One contract per seam: the operator (trainyard.api.contract, trainyard.api.progress) and the
trainer library (trainyard_trainer.contract, trainyard_trainer.progress) each hold their own
definition, because the trainer must install without the operator. These tests keep them equal."""

from __future__ import annotations

import json
import math

import pytest
import trainyard_trainer
from trainyard_trainer import contract as trainer
from trainyard_trainer import heartbeat
from trainyard_trainer import progress as writer
from trainyard_trainer.launch import hung_message

from trainyard.api import contract as operator
from trainyard.api import progress as reader
from trainyard.engine.env import worker_env
from trainyard.sdk import parse_progress

from .conftest import make_job

ENV_NAMES = ("ENV_JOB_NAME", "ENV_JOB_UID", "ENV_WORKER_INDEX", "ENV_ATTEMPT", "ENV_CHECKPOINT_DIR", "ENV_HEARTBEAT_FILE",
             "ENV_PROGRESS_DEADLINE", "ENV_FIRST_PROGRESS_DEADLINE", "ENV_PROGRESS_LEASE", "ENV_PROGRESS_DIR",
             "ENV_PROGRESS_INTERVAL", "ENV_RUNTIME", "ENV_JOIN_TIMEOUT", "TF_CONFIG", "ENV_RESTART_MODE", "ENV_WARM_FD",
             "ENV_WARM_NICE", "ENV_WARM_TRACE", "WARM_ENV_NAMES", "ENV_POD_IP")
LEASE_NAMES = ("ANNOTATION_PROGRESS", "ANNOTATION_LAUNCHER", "ANNOTATION_RENDEZVOUS", "PROGRESS_FIELDS",
               "LAUNCHER_FIELDS", "RENDEZVOUS_FIELDS", "LOCAL_LEASE_FILES", "PROGRESS_INTERVAL_SECONDS",
               "MAX_PROGRESS_METRICS")


def test_env_names_agree():
    assert {n: getattr(trainer, n) for n in ENV_NAMES} == {n: getattr(operator, n) for n in ENV_NAMES}
    assert (heartbeat.ENV_FILE, heartbeat.ENV_DEADLINE, heartbeat.ENV_FIRST_DEADLINE) == (
        operator.ENV_HEARTBEAT_FILE, operator.ENV_PROGRESS_DEADLINE, operator.ENV_FIRST_PROGRESS_DEADLINE)


def test_the_lease_annotations_and_fields_agree():
    assert {n: getattr(trainer, n) for n in LEASE_NAMES} == {n: getattr(operator, n) for n in LEASE_NAMES}


def test_every_trainer_name_the_operator_sets_is_one_the_trainer_reads():
    from trainyard.engine import Launch

    ours = set()
    for runtime in ("torchrun", "tensorflow"):
        warm = {"failurePolicy": {"restartMode": "Warm"}} if runtime == "torchrun" else {}
        job = make_job({"runtime": runtime, "runPolicy": {"progressDeadlineSeconds": 60}, **warm})
        for where in ({"progress_lease": "ml/demo-progress"}, {"progress_dir": "/work/lease"}):
            env = worker_env(job, Launch("demo-0-0", 0, 0, 0), "h", 29400, "/ckpt", "/hb", ["h:29400", "g:29400"],
                             **where)
            ours |= {e["name"] for e in env if e["name"].startswith("TRAINYARD_")}
    assert ours == set(operator.TRAINER_ENV_NAMES)
    assert all(operator.is_reserved_env(n) for n in ours)


class _Recorder:
    """A Lease that keeps what is patched into it."""

    def __init__(self):
        self.notes: dict[str, str] = {}

    def patch(self, annotations, *, holder=None, renew=False):
        self.notes.update(annotations)

    def annotations(self):
        return dict(self.notes)

    def close(self):
        pass


def test_a_report_the_trainer_sends_is_the_report_the_operator_reads():
    from datetime import UTC, datetime

    lease = _Recorder()
    clock = iter([1000.0, 1010.0, 1020.0, 1021.0])
    r = writer.Reporter(lease, interval=0.01, attempt=3, worker=1, clock=lambda: next(clock))
    r.start(300, total_steps=460)
    assert r.flush(5)
    start = reader.parse_report(lease.notes[operator.ANNOTATION_PROGRESS])
    assert (start.attempt, start.worker, start.step, start.training, start.start_step, start.total_steps) == (
        3, 1, 300, False, 300, 460)
    r.report(310, loss=0.5, samples=640)
    assert r.flush(5)
    r.report(330, loss=0.25, samples=1280, accuracy=0.9)
    r.checkpointed(330)
    assert r.flush(5)
    r.close()
    got = reader.parse_report(lease.notes[operator.ANNOTATION_PROGRESS])
    assert set(json.loads(lease.notes[operator.ANNOTATION_PROGRESS])) <= set(operator.PROGRESS_FIELDS)
    assert got == reader.Report(
        attempt=3, time=datetime.fromtimestamp(1020.0, UTC), step=330, training=True, worker=1, total_steps=460,
        loss=0.25, samples_per_second=128.0, steps_per_second=2.0, start_step=300,
        start_time=datetime.fromtimestamp(1000.0, UTC), checkpoint_step=330,
        checkpoint_time=datetime.fromtimestamp(1021.0, UTC), metrics={"accuracy": 0.9})


def test_the_launchers_notes_and_the_operators_rendezvous_address_are_read_on_the_other_side(monkeypatch):
    from trainyard_trainer.launch import LaunchConfig, Launcher

    env = {"PET_RDZV_ENDPOINT": "demo-2-0.demo.ml.svc.cluster.local.:29400", "PET_RDZV_ID": "uid-x-2",
           "TRAINYARD_WORKER_INDEX": "0", "TRAINYARD_ATTEMPT": "3"}
    launcher = Launcher(LaunchConfig.from_env(["t.py"], env), env)
    lease = _Recorder()
    launcher._lease_obj = lease
    launcher._announce_start()
    start = reader.parse_launcher(lease.notes[operator.ANNOTATION_LAUNCHER])
    assert start is not None and start.attempt == 3
    assert set(json.loads(lease.notes[operator.ANNOTATION_LAUNCHER])) == set(operator.LAUNCHER_FIELDS)
    assert launcher._rendezvous_ip() is None  # nothing published yet
    lease.notes[operator.ANNOTATION_RENDEZVOUS] = reader.rendezvous_annotation(1, "10.244.0.9")  # an older gang's
    launcher._next_lease_read = 0.0
    assert launcher._rendezvous_ip() is None
    lease.notes[operator.ANNOTATION_RENDEZVOUS] = reader.rendezvous_annotation(2, "10.244.0.7")
    launcher._next_lease_read = 0.0
    assert launcher._rendezvous_ip() == "10.244.0.7"
    assert reader.parse_rendezvous(lease.notes[operator.ANNOTATION_RENDEZVOUS]) == (2, "10.244.0.7")
    assert set(json.loads(lease.notes[operator.ANNOTATION_RENDEZVOUS])) == set(operator.RENDEZVOUS_FIELDS)


def test_the_peer_lost_exit_code_agrees():
    assert trainer.PEER_LOST_EXIT_CODE == operator.PEER_LOST_EXIT_CODE


def test_the_hung_exit_code_and_message_agree():
    assert trainyard_trainer.HUNG_EXIT_CODE == trainer.HUNG_EXIT_CODE == operator.HUNG_EXIT_CODE
    assert hung_message(40).startswith(operator.HUNG_MESSAGE_PREFIX) and trainer.HUNG_MESSAGE_PREFIX == \
        operator.HUNG_MESSAGE_PREFIX
    assert hung_message(630, starting=True).startswith(operator.HUNG_MESSAGE_PREFIX)


@pytest.mark.parametrize(("line", "kind", "step", "fields"), [
    (writer.format_start(0), reader.START, 0, {}),
    (writer.format_start(100), reader.RESUMED, 100, {}),
    (writer.format_start(250, (3, 1280, 1797)), reader.RESUMED, 250, {"epoch": 3, "sample": "1280/1797"}),
    (writer.format_step(120, 3, 0.34123, 1534.24), reader.STEP, 120, {"epoch": 3, "loss": 0.3412, "samples_per_s": 1534.2}),
    (writer.format_checkpoint(120, 0.1234, True), reader.CHECKPOINT, 120, {"stall_s": 0.123, "async": True}),
    (writer.format_done(500, 0.97123), reader.DONE, 500, {"accuracy": 0.9712}),
    (writer.format_done(500), reader.DONE, 500, {}),
])
def test_every_line_the_trainer_writes_the_operator_reads(line, kind, step, fields):
    for prefix in ("", "w0| ", "2026-01-01T00:00:00.123456789Z ", "[default0]:"):  # the logs' own prefixes
        parsed = reader.parse_line(prefix + line)
        assert parsed is not None and (parsed.kind, parsed.step, parsed.fields) == (kind, step, fields)


def test_a_step_line_round_trips_through_the_sdk_parser():
    line = writer.format_step(7, 1, float("nan"), 0.0)
    [rec] = parse_progress([line], worker=1, attempt=2)
    assert rec["step"] == 7 and rec["epoch"] == 1 and math.isnan(rec["loss"]) and (rec["worker"], rec["attempt"]) == (1, 2)
    assert parse_progress([writer.format_start(5), writer.format_checkpoint(5, 0.1, False)]) == []


def test_the_strict_trainer_regexes_accept_what_the_trainer_writes():
    assert writer.STEP_RE.match(writer.format_step(1, 0, 1.0, 2.0))
    assert writer.RESUMED_RE.match(writer.format_start(3))
    assert writer.PREFIX == reader.PREFIX


def test_the_local_runtime_layout_is_what_the_sdk_reads(tmp_path):
    d = tmp_path / operator.ATTEMPT_DIR.format(attempt=2)
    d.mkdir()
    (d / operator.WORKER_LOG.format(index=3)).write_text(writer.format_step(10, 0, 0.5, 1.0) + "\n")
    assert parse_progress(tmp_path) == [{"step": 10, "epoch": 0, "loss": 0.5, "samples_per_s": 1.0, "worker": 3,
                                         "attempt": 2}]
