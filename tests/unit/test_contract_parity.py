"""One contract per seam: the operator (trainyard.api.contract, trainyard.api.progress) and the
trainer library (trainyard_trainer.contract, trainyard_trainer.progress) each hold their own
definition, because the trainer must install without the operator. These tests keep them equal."""

from __future__ import annotations

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


def test_env_names_agree():
    names = ("ENV_JOB_NAME", "ENV_WORKER_INDEX", "ENV_ATTEMPT", "ENV_CHECKPOINT_DIR", "ENV_HEARTBEAT_FILE",
             "ENV_PROGRESS_DEADLINE", "ENV_RUNTIME", "ENV_JOIN_TIMEOUT", "TF_CONFIG", "ENV_RESTART_MODE", "ENV_WARM_FD",
             "ENV_WARM_NICE", "ENV_WARM_TRACE", "WARM_ENV_NAMES")
    assert {n: getattr(trainer, n) for n in names} == {n: getattr(operator, n) for n in names}
    assert (heartbeat.ENV_FILE, heartbeat.ENV_DEADLINE) == (operator.ENV_HEARTBEAT_FILE, operator.ENV_PROGRESS_DEADLINE)


def test_every_trainer_name_the_operator_sets_is_one_the_trainer_reads():
    from trainyard.engine import Launch

    seen: set[str] = set()
    for runtime in ("torchrun", "tensorflow"):
        warm = {"failurePolicy": {"restartMode": "Warm"}} if runtime == "torchrun" else {}
        job = make_job({"runtime": runtime, "runPolicy": {"progressDeadlineSeconds": 60}, **warm})
        env = worker_env(job, Launch("demo-0-0", 0, 0, 0), "h", 29400, "/ckpt", "/hb", ["h:29400", "g:29400"])
        seen |= {e["name"] for e in env if e["name"].startswith("TRAINYARD_")}
        assert all(operator.is_reserved_env(e["name"]) for e in env)
    assert seen == set(operator.TRAINER_ENV_NAMES)


def test_the_peer_lost_exit_code_agrees():
    assert trainer.PEER_LOST_EXIT_CODE == operator.PEER_LOST_EXIT_CODE


def test_the_hung_exit_code_and_message_agree():
    assert trainyard_trainer.HUNG_EXIT_CODE == trainer.HUNG_EXIT_CODE == operator.HUNG_EXIT_CODE
    assert hung_message(40).startswith(operator.HUNG_MESSAGE_PREFIX) and trainer.HUNG_MESSAGE_PREFIX == \
        operator.HUNG_MESSAGE_PREFIX


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
