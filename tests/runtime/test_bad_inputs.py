"""`trainyard run` passes the same bad-input table the apiserver does (tests/bad_inputs.py; the
cluster tier sends it to a real apiserver): each is refused with exit 2 and one line on stderr
naming the field, with the apiserver's message. And what only a workstation cannot run is refused
the same way. Real `trainyard run` processes; nothing is started for a refused job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..bad_inputs import BAD_INPUTS, TRAINER, Bad, manifest, merge

TRAINYARD = str(Path(sys.executable).with_name("trainyard"))


def trainyard_run(tmp: Path, body: dict | str, *flags: str) -> subprocess.CompletedProcess:
    (tmp / "job.yaml").write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return subprocess.run([TRAINYARD, "run", "job.yaml", *flags], cwd=tmp, capture_output=True, text=True, timeout=120)


def refused(out: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints: on stderr, nothing on stdout, exit 2, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == "" and "Traceback" not in out.stderr, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_trainyard_run_refuses_what_the_apiserver_refuses_with_the_same_message(tmp_path, bad: Bad):
    line = refused(trainyard_run(tmp_path, bad.body()))
    assert f"{bad.field}: " in line and bad.message in line, line
    assert not (tmp_path / ".trainyard").exists()  # refused before anything was created


def runnable(**trainer) -> dict:
    return merge(manifest("local"), {"spec": {"template": {"spec": {"containers": [{**TRAINER, **trainer}]}}}})


def script(tmp: Path, name: str, mode: int) -> str:
    path = tmp / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return f"./{name}"


@pytest.mark.parametrize(("case", "expected"), [
    ("no-command", "spec.template.spec.containers[trainer].command is required to run locally: there is no image "
                   "whose entrypoint would run anything"),
    ("args-only", "command is required to run locally: there is no image whose entrypoint would run its args"),
    ("not-on-path", "spec.template.spec.containers[trainer].command[0] 'no-such-trainer': not found on PATH"),
    ("no-such-file", "command[0] './missing.sh': no such file"),
    ("not-executable", "command[0] './train.sh': is not executable (chmod +x it, or name its interpreter first"),
    ("directory", "command[0] './sub/': is a directory"),
    ("value-from", "spec.template.spec.containers[trainer].env[POD]: valueFrom cannot be resolved locally"),
    ("env-from", "spec.template.spec.containers[trainer].envFrom cannot be resolved locally"),
    ("suspended", "spec.runPolicy.suspend is true: the job would wait for a resume that cannot come here"),
    ("no-such-file-given", "missing.yaml: no such file"),
    ("not-yaml", "job.yaml: not valid YAML"),
    ("workdir-a-file", "--workdir afile: exists and is not a directory"),
    ("checkpoint-dir-not-creatable", "--checkpoint-dir afile/ckpt: cannot create it"),
    ("inject-worker-7-of-2", "--inject-failure 'worker=7,after=1s': there is no worker 7: the job has 2 worker(s), "
                             "0 to 1"),
    ("inject-unknown-signal", "--inject-failure 'worker=1,at-step=3,signal=BOGUS': unknown signal 'BOGUS'"),
    ("inject-bad-after", "--inject-failure 'worker=1,after=soon': after must be seconds such as 30s"),
    ("inject-no-when", "--inject-failure 'worker=1': expected worker=N,after=30s or worker=N,at-step=N"),
])
def test_what_cannot_run_here_is_one_line_exit_2(tmp_path, case, expected):
    body: dict | str = runnable()
    flags: list[str] = []
    (tmp_path / "afile").write_text("x")
    (tmp_path / "sub").mkdir()
    if case == "no-command":
        body = runnable(command=None)
        body["spec"]["template"]["spec"]["containers"][0].pop("command")
    elif case == "args-only":
        body = runnable(args=["train.py"])
        body["spec"]["template"]["spec"]["containers"][0].pop("command")
    elif case == "not-on-path":
        body = runnable(command=["no-such-trainer"])
    elif case == "no-such-file":
        body = runnable(command=["./missing.sh"])
    elif case == "not-executable":
        body = runnable(command=[script(tmp_path, "train.sh", 0o644)])
    elif case == "directory":
        body = runnable(command=["./sub/"])
    elif case == "value-from":
        body = runnable(env=[{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    elif case == "env-from":
        body = runnable(envFrom=[{"configMapRef": {"name": "settings"}}])
    elif case == "suspended":
        body = merge(runnable(), {"spec": {"runPolicy": {"suspend": True}}})
    elif case == "no-such-file-given":
        out = subprocess.run([TRAINYARD, "run", "missing.yaml"], cwd=tmp_path, capture_output=True, text=True)
        assert expected in refused(out)
        return
    elif case == "not-yaml":
        body = "spec: [unclosed\n"
    elif case == "workdir-a-file":
        flags = ["--workdir", "afile"]
    elif case == "checkpoint-dir-not-creatable":
        flags = ["--workdir", "work", "--checkpoint-dir", "afile/ckpt"]
    elif case.startswith("inject"):
        flags = ["--inject-failure", expected.split("'")[1]]
    line = refused(trainyard_run(tmp_path, body, *flags))
    assert expected in line, line


def test_a_rich_markup_lookalike_in_a_message_is_printed_as_written(tmp_path):
    body = runnable(env=[{"name": "[trainer]", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    line = refused(trainyard_run(tmp_path, body))
    assert "env[[trainer]]: valueFrom cannot be resolved locally" in line, line
