"""A server's worker whose child is killed (SIGKILL), and a worker killed itself: the job's state
as the registry, `tunesmith runs list` and the HTTP API (a `tunesmith serve --no-worker` over the
same home) report it. A dead child ends its job failed, saying it was killed; a dead worker's
job is handed back (queued to resume) by the first reader, with no other worker needed; a new
worker then resumes it from its last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from tests.conftest import colour_chats, write_jsonl
from tests.serve.server import Server, cli, environment, stop_process, wait_for
from tunesmith.store import open_registry

pytestmark = pytest.mark.slow  # a worker process and its children killed
STEPS = {"training.epochs": 100, "training.batch_size": 2, "training.save_every": 1,
         "training.eval_every": 1000}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def client(home: Path, tmp_path: Path) -> Iterator[openai.OpenAI]:
    server = Server(home, tmp_path / "server.log", args=("--no-worker",)).start(timeout=300)
    yield openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    server.stop()


class WorkerProcess:
    """`tunesmith worker` in its own process; a stale limit far above the test's length, so
    only a reader's liveness check (its dead pid) can hand its jobs back."""

    def __init__(self, home: Path, log: Path):
        command = [sys.executable, "-m", "tunesmith", "worker", "--poll-seconds", "0.2",
                   "--stale-seconds", "3600", "--grace-seconds", "20"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, env={**environment(home), "OMP_NUM_THREADS": "1"},
                                            stdout=out, stderr=subprocess.STDOUT)

    def training_children(self) -> list[psutil.Process]:
        """The job processes: forked by the fork server, so grandchildren of the worker."""
        me = psutil.Process(self.process.pid)
        return [p for p in me.children(recursive=True) if p.ppid() != me.pid]

    def stop(self) -> None:
        stop_process(self.process)


def training(client: openai.OpenAI, file_id: str, max_steps: int) -> str:
    job = client.fine_tuning.jobs.create(model="tunesmith/tiny-chat", training_file=file_id, extra_body={
        "tunesmith": {"set": {**STEPS, "training.max_steps": max_steps}}})
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running"
             and len(client.fine_tuning.jobs.checkpoints.list(job.id).data) >= 1, timeout=300)
    return job.id


def raw_status(home: Path, job_id: str) -> tuple[str, str | None]:
    """The job's row as stored, read without the liveness check: nobody has looked yet."""
    from sqlalchemy import select

    from tunesmith.store.schema import Job

    return open_registry(home=home).read_raw(lambda s: s.execute(
        select(Job.status, Job.worker_id).where(Job.id == job_id)).one()).tuple()


def listed_status(home: Path, job_id: str) -> str:
    rows = json.loads(cli(home, "runs", "list", "--json", "--limit", "100"))
    return next(row["status"] for row in rows if row["id"] == job_id)


def test_a_killed_child_fails_its_job_and_a_killed_worker_hands_its_job_back(
        home: Path, tmp_path: Path, client: openai.OpenAI) -> None:
    write_jsonl(tmp_path / "colours.jsonl", colour_chats(16))
    file_id = client.files.create(file=(tmp_path / "colours.jsonl").open("rb"), purpose="fine-tune").id
    worker = WorkerProcess(home, tmp_path / "worker.log")
    try:
        # 1. The child training the job is killed; its worker lives and reaps it.
        first = training(client, file_id, max_steps=400)
        (child,) = worker.training_children()
        child.kill()
        wait_for(lambda: open_registry(home=home).job(first).status != "running", timeout=120)
        job = open_registry(home=home).job(first)
        assert (job.status, job.error_code, job.worker_id) == ("failed", "training_process_failed", None)
        assert "killed by SIGKILL" in job.error
        seen = client.fine_tuning.jobs.retrieve(first)
        assert seen.status == "failed" and "killed by SIGKILL" in seen.error.message
        assert listed_status(home, first) == "failed"

        # 2. The worker itself is killed (its child dies with it): nothing records why.
        second = training(client, file_id, max_steps=60)
        children = worker.training_children()
        assert len(children) == 1
        worker.process.kill()
        worker.process.wait()
        wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
                 timeout=60)
        assert raw_status(home, second)[0] == "running"  # as stored: the worker could not say
        seen = client.fine_tuning.jobs.retrieve(second)  # the API is the first reader: it settles it
        assert seen.status == "queued"
        listed = [j.status for j in client.fine_tuning.jobs.list(limit=100).data if j.id == second]
        assert listed == ["queued"]
        messages = [e.message for e in client.fine_tuning.jobs.list_events(second, limit=100)]
        assert any(f"pid {worker.process.pid}" in m and "is no longer running" in m
                   and "queued to resume from its last checkpoint" in m for m in messages), messages
        job = open_registry(home=home).job(second)
        assert (job.status, job.worker_id, job.error) == ("queued", None, None)
        assert listed_status(home, second) == "queued"
        saved = max(c.step for c in open_registry(home=home).checkpoints(second))

        # 3. A new worker takes the job and resumes it from its last checkpoint.
        worker = WorkerProcess(home, tmp_path / "worker.log")
        done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(second)).status
                        in ("succeeded", "failed", "cancelled") and j, timeout=600)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(second, limit=100)]
        resumed = [m for m in messages if "resuming at step" in m]
        assert resumed and int(resumed[0].split("resuming at step ")[1].split(")")[0]) >= saved
    finally:
        worker.stop()
