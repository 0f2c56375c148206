"""`tunesmith quickstart` and `tunesmith retrain` stopped by SIGTERM during training: they stop
there, say the run was stopped and how to continue it, evaluate, compare and register nothing
(there is no final model), and the command they print continues the run to its end.

The signal is real: a reporter sends SIGTERM to this process after the first step, and the
command's own handler (train/stopping.py) turns it into a stop at the next step boundary.
A separate, slow test SIGTERMs a quickstart running in its own process."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import colour_chats, write_jsonl
from tests.store.cli import run_cli
from tunesmith.store import open_registry
from tunesmith.train import checkpoint as ckpt

TINY_QUICKSTART = ("--set", "training.max_steps=6", "--set", "evaluation.max_examples=8",
                   "--set", "evaluation.max_train_examples=8")


@pytest.fixture
def sigterm_after_first_step(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """SIGTERM to this process once, when the terminal's progress shows the first step."""
    from tunesmith.commands.progress import ConsoleProgress

    sent: list[int] = []
    report = ConsoleProgress.report

    def and_stop(self: ConsoleProgress, record: dict) -> None:
        report(self, record)
        if record.get("type") == "train" and not sent:
            sent.append(record["step"])
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ConsoleProgress, "report", and_stop)
    return sent


def advised(out: str, command: str) -> list[str]:
    """The continue command the output names, as argv for tunesmith.cli.main."""
    found = re.search(rf"`(tunesmith {command} [^`]*)`", " ".join(out.split()))
    assert found, out[-2000:]
    return shlex.split(found.group(1))[1:]


def test_a_stopped_quickstart_says_so_and_evaluates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sigterm_after_first_step: list[int]) -> None:
    code, out = run_cli(capsys, "quickstart", "--tiny", "--out", str(tmp_path), *TINY_QUICKSTART)
    assert sigterm_after_first_step == [1]
    assert code == 128 + signal.SIGTERM, out[-2000:]
    said = " ".join(out.split())
    assert "stopped after 1 steps, before the end of training" in said
    assert "nothing was evaluated or registered" in said
    assert "did it help?" not in out and "verdict:" not in out and "where everything is" not in out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (run_dir / "report.json").exists() and not (run_dir / "final").exists()
    assert ckpt.latest_checkpoint(run_dir / "checkpoints").step == 1  # saved where it stopped
    argv = advised(out, "quickstart")
    assert argv[:4] == ["quickstart", "--tiny", "--out", str(tmp_path)]
    assert argv[-2:] == ["--set", f"output.name={run_dir.name}"]
    registry = open_registry()
    (job,) = registry.jobs()
    assert (job.status, job.steps) == ("cancelled", 1)
    assert registry.models() == []


def test_a_stopped_retrain_says_so_moves_nothing_and_its_advice_finishes_it(
        random_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        sigterm_after_first_step: list[int]) -> None:
    from tests.integration.test_training import recipe_for
    from tunesmith.store.tracking import train_tracked

    registry = open_registry()
    data = (write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(tmp_path / "val.jsonl", colour_chats(4, seed=2)))
    parent = train_tracked(registry, recipe_for(random_model_path, data, tmp_path / "runs",
                                                "training.max_steps=1")).model
    registry.set_alias("colours@production", parent.id)
    new_train = write_jsonl(tmp_path / "new.jsonl", colour_chats(16, seed=3))
    command = ("retrain", "colours@production", "--data", str(new_train), "--alias", "colours@production",
               "--force", "--set", "training.max_steps=3", "--set", "training.batch_size=4")

    code, out = run_cli(capsys, *command)
    assert sigterm_after_first_step == [1]
    assert code == 128 + signal.SIGTERM, out[-2000:]
    said = " ".join(out.split())
    assert "stopped after 1 steps" in said and "nothing was compared and no alias moved" in said
    assert "retrained from" not in out
    assert [m.id for m in registry.models()] == [parent.id]
    assert registry.model("colours@production").id == parent.id
    stopped = next(j for j in registry.jobs() if j.parent_model_id == parent.id)
    assert stopped.status == "cancelled"

    name = re.search(r"--set output\.name=(\S+?)`", said).group(1)
    code, out = run_cli(capsys, *command, "--set", f"output.name={name}")
    assert code == 0, out[-2000:]
    assert "resuming at step 1" in out and "retrained from" in out
    child = next(m for m in registry.models() if m.id != parent.id)
    assert child.job_id == stopped.id and registry.job(stopped.id).status == "succeeded"
    assert registry.model("colours@production").id == child.id
    assert [e.step for e in registry.events(stopped.id, ["train"])] == [1, 2, 3]


@pytest.mark.slow  # a quickstart in its own process, stopped, then continued with evaluation
def test_sigterm_to_a_quickstart_process_stops_it_and_its_advice_finishes_the_loop(tmp_path: Path) -> None:
    from tests.serve.server import environment
    from tunesmith.train.run import RunDir

    home, out_dir = tmp_path / "home", tmp_path / "runs"
    env = {**environment(home), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tunesmith", "quickstart", "--tiny", "--out", str(out_dir),
               "--set", "training.max_steps=60", "--set", "training.epochs=100",
               "--set", "training.batch_size=2", *TINY_QUICKSTART[2:]]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300  # a bound on a hang, not a timing assertion
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()[0][-3000:]
        runs = [p for p in out_dir.glob("*") if p.is_dir()] if out_dir.exists() else []
        if runs and any(r["type"] == "train" for r in RunDir(runs[0]).metrics()):
            break
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 128 + signal.SIGTERM, out[-3000:]
    said = " ".join(out.split())
    assert "SIGTERM: stopping at the next step" in said and "nothing was evaluated or registered" in said
    assert "verdict:" not in out
    (run_dir,) = runs
    registry = open_registry(home=home)
    (job,) = registry.jobs()
    assert job.status == "cancelled" and registry.models() == []
    stopped_at = job.steps

    argv = advised(out, "quickstart")
    done = subprocess.run([sys.executable, "-m", "tunesmith", *argv], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming at step {stopped_at}" in done.stdout and "verdict:" in done.stdout
    assert (run_dir / "report.json").exists() and (run_dir / "final" / "adapter_config.json").exists()
    (job,) = registry.jobs()
    assert job.status == "succeeded" and len(registry.models()) == 1
