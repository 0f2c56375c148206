"""Registry rows as plain JSON-able dicts, and comparisons between them.

Shared by the CLI (tables and --json) and the dashboard's JSON routes (serve/dashboard.py),
so both show the same fields under the same names.
"""

from __future__ import annotations

from typing import Any

from tunesmith.store.schema import Alias, DatasetVersion, Job, Model

MISSING = "<unset>"


def job_view(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "base_model": job.base_model, "method": job.method,
            "run_dir": job.run_dir, "error": job.error, "trained_tokens": job.trained_tokens,
            "steps": job.steps, "train_dataset": job.train_dataset_id,
            "validation_dataset": job.validation_dataset_id, "parent_model": job.parent_model_id,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at}


def model_view(model: Model, aliases: list[Alias] | None = None) -> dict[str, Any]:
    return {"id": model.id, "name": model.name, "base_model": model.base_model,
            "base_revision": model.base_revision, "kind": model.kind, "path": model.path,
            "job": model.job_id, "parent": model.parent_id, "evaluation": model.evaluation,
            "datasets": {d.role: d.dataset_id for d in model.datasets},
            "aliases": [a.name for a in aliases or []], "created_at": model.created_at,
            "deleted": model.deleted_at is not None}


def dataset_view(version: DatasetVersion) -> dict[str, Any]:
    return {"id": version.id, "content_hash": version.content_hash, "format": version.format,
            "examples": version.examples, "errors": version.errors, "warnings": version.warnings,
            "source_path": version.source_path, "token_stats": version.token_stats,
            "findings": version.findings, "created_at": version.created_at}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"training": {"epochs": 3}} -> {"training.epochs": 3}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def diff_recipes(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Recipe keys whose values differ, as (key, a's value, b's value); MISSING where absent."""
    left, right = flatten(a), flatten(b)
    keys = sorted(set(left) | set(right))
    return [(k, left.get(k, MISSING), right.get(k, MISSING)) for k in keys
            if left.get(k, MISSING) != right.get(k, MISSING)]


def final_metrics(job: Job, events: list[Any]) -> dict[str, Any]:
    """The numbers to set side by side: last train loss, baseline/final/best held-out loss."""
    from tunesmith.store.runs import summarise_metrics

    summary = summarise_metrics([e.data for e in events])
    summary["trained_tokens"] = job.trained_tokens if job.trained_tokens is not None else summary[
        "trained_tokens"]
    summary["status"] = job.status
    return summary
