"""Run folders and the loop's records become jobs, events, checkpoints and models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.conftest import chat, make_run, write_jsonl
from tunesmith.store import Registry
from tunesmith.store.errors import RegistryError
from tunesmith.store.reporter import RegistryReporter
from tunesmith.store.runs import register_run, resume_job, start_job


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    return (write_jsonl(tmp_path / "train.jsonl", [chat(f"Q{i}?", f"A{i}.") for i in range(6)]),
            write_jsonl(tmp_path / "val.jsonl", [chat("V?", "v.")]))


def test_register_run_records_job_model_and_lineage(registry: Registry, tmp_path: Path, data) -> None:
    run = make_run(tmp_path / "runs" / "support", *data)
    model = register_run(registry, run)
    assert model.name.startswith("ft:tiny-chat:support:") and model.path == str(run / "final")
    assert model.evaluation["best_validation_loss"] == 1.0
    assert model.evaluation["baseline_validation_loss"] == 3.0
    roles = {d.role: d.dataset_id for d in registry.model(model.id).datasets}
    assert roles == {"train": registry.add_dataset(data[0]).id,
                     "validation": registry.add_dataset(data[1]).id}
    job = registry.job(model.job_id)
    assert job.status == "succeeded" and job.trained_tokens == 300 and job.steps == 3
    assert job.run_dir == str(run.resolve()) and registry.job("support").id == job.id
    assert [c.step for c in registry.checkpoints(job.id)] == [3]
    assert len(registry.events(job.id, ["eval"])) == 4
    assert register_run(registry, run).id == model.id  # idempotent


def test_a_replay_file_is_part_of_the_lineage(registry: Registry, tmp_path: Path, data) -> None:
    replay = write_jsonl(tmp_path / "replay.jsonl", [chat("Hello?", "Hello!")])
    run = make_run(tmp_path / "runs" / "kept", *data, data__replay=str(replay))
    roles = {d.role: d.dataset_id for d in registry.model(register_run(registry, run).id).datasets}
    assert set(roles) == {"train", "validation", "replay"}
    assert roles["replay"] == registry.add_dataset(replay).id


def test_unfinished_run_is_refused(registry: Registry, tmp_path: Path, data) -> None:
    run = make_run(tmp_path / "runs" / "half", *data, status="interrupted")
    with pytest.raises(RegistryError, match="has not finished"):
        register_run(registry, run)


def test_reporter_follows_the_loop(registry: Registry, tmp_path: Path, data) -> None:
    run = make_run(tmp_path / "runs" / "live", *data)
    recipe = {"base_model": "tunesmith/tiny-chat", "data": {"train": str(data[0])},
              "output": {"dir": str(run.parent), "name": "live"}}
    job = start_job(registry, recipe)
    assert job.status == "queued" and job.train_dataset_id is not None
    reporter = RegistryReporter(registry, job.id)
    reporter.report({"type": "start", "step": 0, "run_dir": str(run)})
    assert registry.job(job.id).status == "running"
    reporter.report({"type": "train", "step": 1, "loss": 2.0, "trained_tokens": 10.0})
    reporter.report({"type": "eval", "step": 1, "loss": 1.5})
    reporter.report({"type": "checkpoint", "step": 1, "path": str(run / "checkpoints" / "step-00000001")})
    reporter.report({"type": "end", "step": 3, "status": "succeeded", "final_dir": str(run / "final")})
    reporter.close()
    done = registry.job(job.id)
    assert done.status == "succeeded" and done.finished_at is not None and not reporter.failures
    assert done.recipe["adapter"]["rank"] == 8  # the run folder's resolved recipe replaces the request
    assert reporter.model is not None and reporter.model.job_id == job.id
    checkpoint = registry.checkpoints(job.id)[0]
    assert checkpoint.metrics == {"train_loss": 2.0, "train_trained_tokens": 10.0, "eval_loss": 1.5}


def test_reporter_marks_crashed_and_resumed_runs(registry: Registry, tmp_path: Path) -> None:
    job = registry.create_job({"base_model": "m"}, status="queued")
    reporter = RegistryReporter(registry, job.id)
    reporter.report({"type": "start", "step": 0, "run_dir": str(tmp_path / "r")})
    reporter.report({"type": "event", "step": 4, "level": "error", "message": "loss became nan"})
    reporter.close()
    failed = registry.job(job.id)
    assert failed.status == "failed" and failed.error == "loss became nan"
    assert resume_job(registry, tmp_path / "r").id == job.id
    assert registry.job(job.id).status == "queued"


def test_preflight_failure_marks_the_job(registry: Registry, tmp_path: Path) -> None:
    job = start_job(registry, {"base_model": "m", "data": {"train": str(tmp_path / "missing.jsonl")}})
    assert job.train_dataset_id is None  # a missing file is left for the loop's pre-flight to report
    reporter = RegistryReporter(registry, job.id)
    reporter.fail("dataset not found")
    reporter.close()
    failed = registry.job(job.id)
    assert (failed.status, failed.error) == ("failed", "dataset not found") and failed.finished_at
