"""/dashboard/api/compare: N jobs' curves, metrics and recipe differences (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.serve.app import create_app
from tunesmith.store import open_registry

LOCAL = {"base_url": "http://127.0.0.1", "headers": {"Origin": "http://127.0.0.1"}}


@pytest.fixture
def setup(tmp_path: Path):
    registry = open_registry(home=tmp_path)
    ids = []
    for n, rate in enumerate((0.003, 0.0003)):
        recipe = {"base_model": "tunesmith/tiny-chat", "training": {"learning_rate": rate, "epochs": 2},
                  "output": {"name": f"run-{n}"}}
        job = registry.create_job(recipe, status="succeeded")
        registry.add_event(job.id, "start", {"type": "start", "step": 0, "total_steps": 4}, step=0)
        registry.add_event(job.id, "eval", {"type": "eval", "step": 0, "loss": 5.0, "baseline": True}, step=0)
        for step in range(1, 5):
            train = {"type": "train", "step": step, "loss": 4.0 - step * (n + 1) / 4}
            registry.add_event(job.id, "train", train, step=step)
            if step % 2 == 0:
                valid = {"type": "eval", "step": step, "loss": 4.5 - step * (n + 1) / 5}
                registry.add_event(job.id, "eval", valid, step=step)
        ids.append(job.id)
    yield TestClient(create_app(registry, tmp_path), **LOCAL), ids
    registry.close()


def test_runs_side_by_side_with_their_differences(setup) -> None:
    client, ids = setup
    result = client.get("/dashboard/api/compare", params={"jobs": ",".join(ids)}).json()
    assert [r["id"] for r in result["runs"]] == ids
    first, second = result["runs"]
    assert first["series"]["valid"] == [[2, 4.1], [4, 3.7]] and len(first["series"]["train"]) == 4
    assert second["metrics"]["best_validation_loss"] == pytest.approx(4.5 - 4 * 2 / 5)
    assert first["metrics"]["baseline_validation_loss"] == 5.0 and first["metrics"]["steps"] == 4
    assert result["differences"] == [{"key": "training.learning_rate", "values": [0.003, 0.0003]}]


@pytest.mark.parametrize("jobs", ["", "only-one", ",".join(f"j{n}" for n in range(9)), "x" * 10_000])
def test_two_to_eight_jobs_are_compared(setup, jobs: str) -> None:
    client, _ = setup
    response = client.get("/dashboard/api/compare", params={"jobs": jobs})
    assert 400 <= response.status_code < 500


def test_an_unknown_job_is_a_404(setup) -> None:
    client, ids = setup
    assert client.get("/dashboard/api/compare", params={"jobs": f"{ids[0]},ftjob-nothere"}).status_code == 404
