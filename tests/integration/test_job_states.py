"""A `tunesmith train` process stopped by SIGTERM or killed by SIGKILL: its job's state as the
registry, `tunesmith runs list` and the HTTP API (a real `tunesmith serve` over the same home)
report it, then `tunesmith train --resume` finishing it with each step in metrics.jsonl once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import colour_chats, write_jsonl
from tests.serve.server import Server, cli, environment
from tunesmith.store import open_registry
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.run import RunDir

pytestmark = pytest.mark.slow  # real processes killed and resumed
CHILD_TIMEOUT_S = 300  # a bound on a hang, not a timing assertion: each run takes seconds


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("states-home")


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    running = Server(home, home / "server.log").start(timeout=CHILD_TIMEOUT_S)  # a busy machine starts slowly
    yield running
    running.stop()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory, random_model_path: Path) -> Path:
    folder = tmp_path_factory.mktemp("states")
    write_jsonl(folder / "train.jsonl", colour_chats(24))
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(f"""
        base_model: {random_model_path}
        data: {{train: train.jsonl, validation_split: 0}}
        training: {{batch_size: 4, max_steps: 400, epochs: 100, learning_rate: 0.01, save_every: 2,
                   warmup_ratio: 0}}
        output: {{dir: {folder / "runs"}}}
    """))
    return path


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**environment(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in RunDir(run_dir).metrics() if r["type"] == "train"]


def wait_until_trained_past_a_checkpoint(child: subprocess.Popen[str], run_dir: Path) -> int:
    """Wait for a complete checkpoint at step >= 2 and a step logged after it; that checkpoint's step."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()[0][-3000:]
        latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
        if latest is not None and latest.step >= 2 and max(train_steps(run_dir), default=0) > latest.step:
            return latest.step
        time.sleep(0.05)
    child.kill()
    raise AssertionError("the training did not reach a checkpoint in time")


def api_job(server: Server, job_id: str) -> dict:
    one = httpx.get(f"{server.url}/fine_tuning/jobs/{job_id}", timeout=30).json()
    listed = httpx.get(f"{server.url}/fine_tuning/jobs", params={"limit": 100}, timeout=30).json()
    assert [j["status"] for j in listed["data"] if j["id"] == job_id] == [one["status"]]
    return one


def listed_status(home: Path, job_id: str) -> str:
    rows = json.loads(cli(home, "runs", "list", "--json", "--limit", "100"))
    return next(row["status"] for row in rows if row["id"] == job_id)


def resume_and_check(home: Path, run_dir: Path, job_id: str, steps: int) -> None:
    done = subprocess.run([sys.executable, "-m", "tunesmith", "train", "--resume", str(run_dir), "--set",
                           f"training.max_steps={steps}"], env=environment(home), capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert train_steps(run_dir) == list(range(1, steps + 1))  # the killed attempt's extra rows are gone
    job = open_registry(home=home).job(job_id)
    assert (job.status, job.steps, job.error) == ("succeeded", steps, None)
    assert [e.step for e in open_registry(home=home).events(job_id, ["train"])] == list(range(1, steps + 1))


def test_sigterm_stops_at_a_step_with_its_checkpoint_and_the_job_says_so(
        home: Path, server: Server, recipe: Path) -> None:
    run_dir = recipe.parent / "runs" / "term"
    child = start(home, str(recipe), "--set", "output.name=term")
    wait_until_trained_past_a_checkpoint(child, run_dir)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
    assert child.returncode == 128 + signal.SIGTERM, out[-3000:]
    said = " ".join(out.split())  # rich wraps long lines
    assert "SIGTERM: stopping at the next step" in said and f"--resume {run_dir}`" in said

    stopped_at = train_steps(run_dir)[-1]
    assert ckpt.latest_checkpoint(run_dir / "checkpoints").step == stopped_at  # saved where it stopped
    assert RunDir(run_dir).info()["status"] == "stopped"
    (job,) = [j for j in open_registry(home=home).jobs() if j.run_dir == str(run_dir.resolve())]
    assert (job.status, job.steps) == ("cancelled", stopped_at)
    assert listed_status(home, job.id) == "cancelled"
    assert api_job(server, job.id)["status"] == "cancelled"
    resume_and_check(home, run_dir, job.id, stopped_at + 2)


def test_sigkill_is_seen_as_failed_by_every_reader_and_resume_continues(
        home: Path, server: Server, recipe: Path) -> None:
    run_dir = recipe.parent / "runs" / "kill"
    child = start(home, str(recipe), "--set", "output.name=kill")
    saved = wait_until_trained_past_a_checkpoint(child, run_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=60)
    assert RunDir(run_dir).info()["status"] == "running"  # nothing could record the end

    from sqlalchemy import select

    from tunesmith.store.schema import Job

    registry = open_registry(home=home)
    job_id, status = registry.read_raw(lambda s: s.execute(  # the raw row: nobody has looked yet
        select(Job.id, Job.status).where(Job.run_dir == str(run_dir.resolve()))).one())
    assert status == "running"
    seen = api_job(server, job_id)  # the server is the first to read it: it settles the job itself
    assert seen["status"] == "failed" and seen["error"]["code"] == "process_lost"
    job = registry.job(job_id)
    assert (job.status, job.error_code) == ("failed", "process_lost")
    assert f"pid {child.pid}" in job.error and f"--resume {run_dir.resolve()}" in job.error
    assert listed_status(home, job.id) == "failed"
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints").step
    assert latest >= saved
    resume_and_check(home, run_dir, job.id, latest + 2)
