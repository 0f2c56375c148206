"""The dashboard's routes in-process: the shell and static files are open, its JSON routes need
the key like /v1 does, nothing outside the static folder can be read, and a job's events
become loss series."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.serve import auth
from tunesmith.serve.app import create_app
from tunesmith.store import Registry, open_registry

LOCAL = {"base_url": "http://127.0.0.1", "headers": {"Origin": "http://127.0.0.1"}}
"""In-process clients look like the dashboard: a loopback host and its own Origin."""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    opened = open_registry(home=tmp_path)
    yield opened
    opened.close()


def test_shell_is_open_and_data_needs_the_key(registry: Registry, tmp_path: Path) -> None:
    client = TestClient(create_app(registry, tmp_path), **LOCAL)
    _, secret = auth.create_key(registry, "browser")
    shell = client.get("/")
    assert shell.status_code == 200 and '<script type="module" src="/dashboard/static/app.js">' in shell.text
    script = client.get("/dashboard/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/dashboard/api/jobs").status_code == 401
    signed = client.get("/dashboard/api/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert signed.status_code == 200 and signed.json() == {"data": []}


@pytest.mark.parametrize("name", ["..%2Fdashboard.py", "%2E%2E%2Fapp.py", ".hidden", "missing.js"])
def test_static_files_come_only_from_the_static_folder(registry: Registry, tmp_path: Path, name: str) -> None:
    client = TestClient(create_app(registry, tmp_path), **LOCAL)
    assert client.get(f"/dashboard/static/{name}").status_code == 404
    assert client.get("/dashboard/static/../dashboard.py").status_code == 404


def test_job_events_become_loss_series_and_progress(registry: Registry, tmp_path: Path) -> None:
    client = TestClient(create_app(registry, tmp_path), **LOCAL)
    job = registry.create_job({"base_model": "tunesmith/tiny-chat", "method": "sft",
                               "training": {"epochs": 2, "max_steps": 4}}, status="running",
                              run_dir=str(tmp_path / "runs" / "a"))
    registry.add_event(job.id, "start", {"total_steps": 4}, step=0)
    registry.add_event(job.id, "eval", {"step": 0, "loss": 3.0, "baseline": True}, step=0)
    for step, loss in ((1, 2.5), (2, 2.0)):
        registry.add_event(job.id, "train", {"step": step, "loss": loss}, step=step)
    first = registry.add_event(job.id, "eval", {"step": 2, "loss": 2.2}, step=2)
    detail = client.get(f"/dashboard/api/jobs/{job.id}").json()
    assert detail["series"] == {"train": [[1, 2.5], [2, 2.0]], "valid": [[2, 2.2]], "baseline": [[0, 3.0]]}
    assert detail["total_steps"] == 4 and detail["last_event"] == first.id
    assert detail["recipe"]["training.max_steps"] == 4 and detail["report"] == []

    registry.add_event(job.id, "train", {"step": 3, "loss": 1.5}, step=3)
    newer = client.get(f"/dashboard/api/jobs/{job.id}", params={"after": first.id}).json()
    assert newer["series"]["train"] == [[3, 1.5]] and newer["series"]["valid"] == []

    listed = client.get("/dashboard/api/jobs", params={"status": "running", "model": "tiny"}).json()["data"]
    assert [(j["id"], j["step"], j["total_steps"]) for j in listed] == [(job.id, 3, 4)]
    assert client.get("/dashboard/api/jobs", params={"status": "failed"}).json()["data"] == []
    assert client.get("/dashboard/api/jobs", params={"model": "llama"}).json()["data"] == []

    assert client.get(f"/dashboard/api/jobs/{job.id}/report.json").status_code == 404
    assert "run_dir" not in detail and str(tmp_path) not in json.dumps(detail)
    run = Path(registry.job(job.id).run_dir)
    run.mkdir(parents=True)
    (run / "report.json").write_text('{"forgetting": {"general_loss_change": 0.01}}')
    assert client.get(f"/dashboard/api/jobs/{job.id}").json()["report"] == ["report.json"]
    assert client.get(f"/dashboard/api/jobs/{job.id}/report.json").json()["forgetting"] == {
        "general_loss_change": 0.01}
