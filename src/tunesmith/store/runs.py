"""Run directories <-> registry: start a job for a recipe, and record a finished run
(run.json, recipe.yaml, metrics.jsonl, checkpoints/, final/) as a job and a model.

Reads the run folder only, never torch, so a run trained elsewhere can be registered
from its folder alone; through train/run.py and train/checkpoint.py, the run folder's one
reader (the recipe typed and complete, metrics, complete checkpoints).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunesmith.recipe import DATA_ROLES
from tunesmith.store.errors import RegistryError
from tunesmith.store.liveness import process_fields, this_host
from tunesmith.store.registry import Registry
from tunesmith.store.schema import Job, Model
from tunesmith.train.checkpoint import complete_checkpoints
from tunesmith.train.run import RunDir


def record_datasets(registry: Registry, recipe: dict[str, Any]) -> dict[str, str]:
    """Dataset versions of the recipe's data files (DATA_ROLES) that exist on disk: role -> id."""
    data = recipe.get("data") or {}
    found: dict[str, str] = {}
    for role in DATA_ROLES:
        path = data.get(role)
        if path and Path(path).exists():
            found[role] = registry.add_dataset(path, data.get("format") or "auto").id
    return found


def start_job(registry: Registry, recipe: Any, parent_model_id: str | None = None,
              suffix: str | None = None, owned: bool = False) -> Job:
    """A job for a recipe about to train: its datasets recorded, then queued, or, when `owned`,
    running in this process from the start (with its host and pid), so no worker sharing the
    registry can claim it in between.

    `recipe` is a tunesmith.recipe.Recipe or its JSON dict; `suffix` names the model
    (ft:BASE:SUFFIX:ID), by default the run's output.name.
    """
    raw = recipe if isinstance(recipe, dict) else recipe.model_dump(mode="json")
    output = raw.get("output") or {}
    run_dir = str(Path(output["dir"], output["name"]).resolve()) if output.get("name") else None
    first = process_fields() if owned else {"status": "validating_files"}
    job = registry.create_job(raw, run_dir=run_dir, suffix=suffix or output.get("name"),
                              parent_model_id=parent_model_id, **first)
    datasets = record_datasets(registry, raw)
    return registry.update_job(job.id, status="running" if owned else "queued",
                               train_dataset_id=datasets.get("train"),
                               validation_dataset_id=datasets.get("validation"))


def resume_job(registry: Registry, run_dir: str | Path, owned: bool = False) -> Job:
    """The job of an interrupted run being resumed (made from the run folder if none is recorded):
    queued again, or running in this process when `owned`. A run that another live process is
    training is refused: two trainings of one folder would overwrite each other's checkpoints."""
    found = registry.job_for_run_dir(run_dir)
    if found is not None:
        if found.status == "running" and found.pid is not None and found.worker_id is None \
                and (found.pid, found.host) != (os.getpid(), this_host()):
            raise RegistryError(f"job {found.id} is being trained by process {found.pid} on {found.host}",
                                where=str(run_dir), fix="wait for it to end, or stop it (SIGTERM or Ctrl-C)")
        fields = process_fields() if owned else {"status": "queued"}
        return registry.update_job(found.id, **{"error": None, "error_code": None, "finished_at": None,
                                                **fields})
    job = start_job(registry, read_recipe(Path(run_dir)), owned=owned)
    return registry.update_job(job.id, run_dir=str(Path(run_dir).resolve()))


def read_recipe(run_dir: Path) -> dict[str, Any]:
    """The run's recipe, checked and complete (every default stated), as the registry keeps it."""
    run = RunDir(run_dir)
    if not run.recipe_file.exists():
        raise RegistryError("not a run directory (no recipe.yaml)", where=str(run_dir))
    return run.read_recipe().model_dump(mode="json")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return RunDir(run_dir).metrics()


def summarise_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Final numbers of a run: last train loss, baseline/final/best held-out loss."""
    train = [r for r in records if r.get("type") == "train"]
    evals = [r for r in records if r.get("type") == "eval"]
    baseline = next((r for r in evals if r.get("baseline")), None)
    later = [r for r in evals if not r.get("baseline")]
    best = min(later, key=lambda r: r["loss"]) if later else None
    summary: dict[str, Any] = {
        "steps": train[-1]["step"] if train else 0,
        "train_loss": train[-1]["loss"] if train else None,
        "trained_tokens": int(sum(r.get("trained_tokens", 0) for r in train)),
        "baseline_validation_loss": baseline["loss"] if baseline else None,
        "final_validation_loss": later[-1]["loss"] if later else None,
        "best_validation_loss": best["loss"] if best else None,
        "best_step": best["step"] if best else None,
        "final_token_accuracy": later[-1].get("token_accuracy") if later else None,
    }
    return summary


def read_report_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of the run's evaluation report (tunesmith eval), when it has one."""
    file = run_dir / "report.json"
    try:
        summary = json.loads(file.read_text(encoding="utf-8")).get("summary") if file.exists() else None
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return summary if isinstance(summary, dict) else None


def model_for_job(registry: Registry, job_id: str) -> Model | None:
    return next((m for m in registry.models(include_deleted=True) if m.job_id == job_id), None)


def register_run(registry: Registry, run_dir: str | Path, *, job_id: str | None = None,
                 parent_id: str | None = None, suffix: str | None = None) -> Model:
    """Record a finished run as a job (created or completed) and its model, with lineage.

    Registering the same run again returns the model already recorded.
    """
    path = Path(run_dir).resolve()
    recipe = read_recipe(path)
    info = RunDir(path).info()
    if info.get("status") != "succeeded" or not (path / "final").is_dir():
        raise RegistryError(f"the run has not finished (status {info.get('status', 'unknown')!r}, "
                            "no final/ folder)", where=str(path),
                            fix="finish it with `tunesmith train --resume RUN_DIR` first")
    records = read_metrics(path)
    summary = summarise_metrics(records)
    report = read_report_summary(path)
    if report is not None:
        summary["report"] = report
    job = registry.job(job_id) if job_id else registry.job_for_run_dir(path)
    if job is not None:
        existing = model_for_job(registry, job.id)
        if existing is not None:
            return existing
    else:
        job = registry.create_job(recipe, status="queued", run_dir=str(path),
                                  suffix=(recipe.get("output") or {}).get("name"),
                                  parent_model_id=parent_id)
        registry.add_events(job.id, records)
    datasets = record_datasets(registry, recipe)
    for checkpoint in complete_checkpoints(RunDir(path).checkpoints):
        metrics = next((r for r in reversed(records) if r.get("type") in ("eval", "train")
                        and r.get("step") == checkpoint.step), {})
        registry.add_checkpoint(job.id, checkpoint.step, str(checkpoint.path), metrics)
    job = registry.update_job(  # the run folder's recipe is the resolved one ("auto" filled in)
        job.id, status="succeeded", error=None, recipe=recipe, run_dir=str(path), steps=summary["steps"],
        trained_tokens=summary["trained_tokens"], train_dataset_id=datasets.get("train"),
        validation_dataset_id=datasets.get("validation"),
        started_at=job.started_at or info.get("started"), finished_at=info.get("finished") or job.finished_at)
    adapter = (recipe.get("adapter") or {}).get("kind", "lora")
    return registry.add_model(
        base_model=recipe.get("base_model", ""), base_revision=recipe.get("revision"), kind=adapter,
        path=str(path / "final"), recipe=recipe, evaluation=summary, job_id=job.id,
        parent_id=parent_id or job.parent_model_id, suffix=suffix or job.suffix or path.name,
        datasets=datasets)
