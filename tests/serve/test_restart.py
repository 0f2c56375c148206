"""API keys, and a server killed with SIGKILL mid-job: on restart the job resumes from its
last checkpoint and succeeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.serve.server import Server, cli, wait_for

pytestmark = pytest.mark.slow  # a server killed mid-job and restarted


def test_keys_are_required_and_a_killed_server_resumes_its_job(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    key = cli(home, "keys", "create", "--name", "tests").strip()
    assert key.startswith("tsk-")
    server = Server(home, tmp_path / "server.log").start()
    try:
        assert httpx.get(server.url.removesuffix("/v1") + "/health").status_code == 200
        for wrong in ("", "tsk-wrong"):
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=server.url, api_key=wrong or "x", max_retries=0).files.list()
        assert httpx.get(server.url + "/models").status_code == 401

        client = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)
        uploaded = client.files.create(file=(data_dir / "colours.jsonl").open("rb"), purpose="fine-tune")
        # Enough steps that the job is still running when the server is killed after two checkpoints.
        steps = {"training.max_steps": 40, "training.epochs": 10, "training.batch_size": 2,
                 "training.save_every": 1, "training.eval_every": 1000}
        job = client.fine_tuning.jobs.create(model="tunesmith/tiny-chat", training_file=uploaded.id,
                                             extra_body={"tunesmith": {"set": steps}})
        wait_for(lambda: len(client.fine_tuning.jobs.checkpoints.list(job.id).data) >= 2)
        children = psutil.Process(server.process.pid).children(recursive=True)
        assert children, "the job runs in a child process"
        server.kill()
        # The child dies with its server (no orphan keeps training on its own).
        wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
                 timeout=60)
        assert _raw_status(home, job.id) == "running", "the job finished before the server was killed"
        saved = max(c.step for c in _checkpoints(home, job.id))
        # That read saw the server's pid gone and handed the job back (store/liveness.py).
        assert _status(home, job.id) == "queued"

        server = Server(home, tmp_path / "server.log").start()
        client = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)
        done = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in
                        ("succeeded", "failed", "cancelled") and j)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any("worker running this job stopped" in m for m in messages)
        resumed = [m for m in messages if "resuming at step" in m]
        assert resumed and int(resumed[0].split("resuming at step ")[1].split(")")[0]) >= saved
        assert done.fine_tuned_model is not None
    finally:
        server.stop()


def _checkpoints(home: Path, job_id: str) -> list:
    return _read(home, lambda registry: registry.checkpoints(job_id))


def _status(home: Path, job_id: str) -> str:
    return _read(home, lambda registry: registry.job(job_id).status)


def _raw_status(home: Path, job_id: str) -> str:
    """The stored status, read without the liveness check."""
    from sqlalchemy import select

    from tunesmith.store.schema import Job

    return _read(home, lambda registry: registry.read_raw(
        lambda s: s.scalar(select(Job.status).where(Job.id == job_id))))


def _read(home: Path, read: Callable[[Any], Any]) -> Any:
    """Read the server's registry from the test process (while the server is down)."""
    from tunesmith.store import open_registry

    registry = open_registry(home=home)
    try:
        return read(registry)
    finally:
        registry.close()
