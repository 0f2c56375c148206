"""One real (tiny, random-weight) training run reported into the registry."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import colour_chats, write_jsonl
from tests.integration.test_training import recipe_for
from tunesmith.store import Registry
from tunesmith.store.reporter import RegistryReporter
from tunesmith.store.runs import start_job


def test_training_run_lands_in_the_registry(registry: Registry, random_model_path: Path,
                                            tmp_path: Path) -> None:
    from tunesmith.train.loop import train

    data = (write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(tmp_path / "val.jsonl", colour_chats(4, seed=2)))
    recipe = recipe_for(random_model_path, data, tmp_path / "runs", "training.max_steps=1")
    job = start_job(registry, recipe)
    reporter = RegistryReporter(registry, job.id)
    result = train(recipe, reporters=[reporter])
    assert result.status == "succeeded" and not reporter.failures
    done = registry.job(job.id)
    assert done.status == "succeeded" and done.trained_tokens
    assert done.run_dir == str(result.run_dir.resolve())
    assert len(registry.events(job.id, ["train"])) == result.steps
    model = reporter.model
    assert model is not None and Path(model.path, "adapter_config.json").exists()
    assert model.evaluation["best_validation_loss"] is not None
    assert {d.role for d in registry.model(model.id).datasets} == {"train", "validation"}


def test_retrain_cli_trains_compares_and_guards_the_alias(registry: Registry, registry_url: str,
                                                          random_model_path: Path, tmp_path: Path,
                                                          monkeypatch, capsys) -> None:
    from tests.store.cli import cli_json, run_cli
    from tunesmith.train.loop import train

    monkeypatch.setenv("TUNESMITH_DATABASE_URL", registry_url)
    data = (write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(tmp_path / "val.jsonl", colour_chats(4, seed=2)))
    recipe = recipe_for(random_model_path, data, tmp_path / "runs", "training.max_steps=1")
    reporter = RegistryReporter(registry, start_job(registry, recipe).id)
    train(recipe, reporters=[reporter])
    parent = reporter.model
    assert parent is not None
    registry.set_alias("colours@production", parent.id)
    new_train = write_jsonl(tmp_path / "new.jsonl", colour_chats(16, seed=3))
    new_val = write_jsonl(tmp_path / "new-val.jsonl", colour_chats(4, seed=4))
    # Every change counts as a regression at -100%: the guard must refuse.
    code, out = run_cli(capsys, "retrain", "colours@production", "--data", str(new_train),
                        "--validation", str(new_val), "--alias", "colours@production",
                        "--max-regression", "-1")
    assert code == 2 and "stays on its model" in out
    assert registry.model("colours@production").id == parent.id
    child = next(m for m in registry.models() if m.id != parent.id)
    assert child.parent_id == parent.id and registry.job(child.job_id).parent_model_id == parent.id
    comparisons = child.evaluation["retrain"]["comparisons"]
    assert [c["dataset"].split()[0] for c in comparisons] == ["previous", "new"]
    assert all(c["parent_loss"] > 0 and c["child_loss"] > 0 for c in comparisons)
    lineage = cli_json(capsys, "lineage", child.name)
    assert [m["id"] for m in lineage] == [child.id, parent.id]


def test_tracked_named_run_keeps_its_job_across_a_stop(registry: Registry, random_model_path: Path,
                                                       tmp_path: Path) -> None:
    from tunesmith.store.tracking import train_tracked

    data = (write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(tmp_path / "val.jsonl", colour_chats(4, seed=2)))
    recipe = recipe_for(random_model_path, data, tmp_path / "runs", "training.max_steps=3",
                        "training.batch_size=4")
    steps: list[int] = []

    class Count:
        def report(self, record):
            steps.extend([record["step"]] if record["type"] == "train" else [])

        def close(self):
            pass

    stopped = train_tracked(registry, recipe, reporters=[Count()], should_stop=lambda: len(steps) >= 1)
    assert stopped.result.status == "stopped" and stopped.job.status == "cancelled" and stopped.model is None
    finished = train_tracked(registry, recipe)
    assert finished.job.id == stopped.job.id and finished.job.status == "succeeded"
    assert finished.model is not None and finished.model.job_id == stopped.job.id
    assert [e.step for e in registry.events(stopped.job.id, ["train"])] == [1, 2, 3]
    assert [c.step for c in registry.checkpoints(stopped.job.id)][-1] == 3


def test_preflight_error_fails_the_tracked_job(registry: Registry, random_model_path: Path,
                                               tmp_path: Path) -> None:
    import pytest

    from tunesmith.errors import TunesmithError
    from tunesmith.store.tracking import train_tracked

    missing = tmp_path / "missing.jsonl"
    recipe = recipe_for(random_model_path, (missing, missing), tmp_path / "runs")
    with pytest.raises(TunesmithError):
        train_tracked(registry, recipe)
    (job,) = registry.jobs()
    assert job.status == "failed" and "missing.jsonl" in job.error


def test_train_runs_a_queued_job_given_by_id(random_model_path: Path, tmp_path: Path) -> None:
    """`tunesmith train RECIPE --job ID` (how the server hands a job to a launched process) runs
    that job instead of opening another."""
    from tunesmith.cli import main
    from tunesmith.recipe import load_recipe
    from tunesmith.store import open_registry

    data = (write_jsonl(tmp_path / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(tmp_path / "val.jsonl", colour_chats(4, seed=2)))
    overrides = [f"base_model={random_model_path}", f"data.train={data[0]}", f"data.validation={data[1]}",
                 f"output.dir={tmp_path / 'runs'}", "training.max_steps=1"]  # unnamed: no job found by folder
    registry = open_registry()
    job = start_job(registry, load_recipe(None, overrides))
    sets = [item for value in overrides for item in ("--set", value)]
    assert main(["train", *sets, "--job", job.id]) == 0
    assert [(j.id, j.status) for j in open_registry().jobs()] == [(job.id, "succeeded")]
