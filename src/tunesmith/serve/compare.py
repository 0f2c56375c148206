"""/dashboard/api/compare?jobs=A,B,...: N runs side by side for the dashboard's comparison page:
each run's loss curves, its metrics (validation loss, held-out report) and the recipe keys
whose values differ between the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from tunesmith.serve.dashboard import job_detail
from tunesmith.serve.errors import APIError
from tunesmith.serve.state import ServerState, server

router = APIRouter()
MAX_RUNS = 8
IGNORED = ("output.name",)
"""Recipe keys that differ between any two runs by construction, so they are no difference."""


@router.get("/dashboard/api/compare")
def compare_runs(state: Annotated[ServerState, Depends(server)],
                 jobs: Annotated[str, Query(max_length=MAX_RUNS * 65)]) -> dict[str, Any]:
    ids = list(dict.fromkeys(j.strip() for j in jobs.split(",") if j.strip()))
    if not 2 <= len(ids) <= MAX_RUNS:
        raise APIError(400, f"compare 2 to {MAX_RUNS} jobs, as jobs=ID,ID,...", param="jobs",
                       code="invalid_value")
    runs = [_run(state, job_id) for job_id in ids]
    keys = sorted({k for r in runs for k in r["_recipe"]})
    differing = [k for k in keys if k not in IGNORED and len({repr(r["_recipe"].get(k)) for r in runs}) > 1]
    differences = [{"key": k, "values": [r["_recipe"].get(k) for r in runs]} for k in differing]
    for r in runs:
        del r["_recipe"]
    return {"runs": runs, "differences": differences}


def _run(state: ServerState, job_id: str) -> dict[str, Any]:
    detail = job_detail(job_id[:64], state, 0)
    valid, train = detail["series"]["valid"], detail["series"]["train"]
    metrics: dict[str, Any] = {
        "steps": train[-1][0] if train else 0,
        "final_train_loss": train[-1][1] if train else None,
        "best_validation_loss": min((p[1] for p in valid), default=None),
    }
    baseline = detail["series"]["baseline"]
    metrics["baseline_validation_loss"] = baseline[0][1] if baseline else None
    if "report.json" in detail["report"]:
        metrics["heldout"] = _heldout(state, job_id)
    return {"id": detail["id"], "status": detail["status"], "model": detail["model"],
            "series": {"train": train, "valid": valid}, "metrics": metrics,
            "_recipe": detail["recipe"]}


def _heldout(state: ServerState, job_id: str) -> dict[str, Any] | None:
    """The tuned model's held-out loss and grader scores, with intervals, from its report."""
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluate.report import read_report
    from tunesmith.serve.dashboard import _job

    job = _job(state, job_id)
    try:
        report = read_report(Path(str(job.run_dir)))
    except (TunesmithError, ValueError, OSError):
        return None
    loss = (report.get("loss") or {}).get("tuned") or {}
    return {"examples": report.get("examples"), "loss": loss.get("loss"), "low": loss.get("low"),
            "high": loss.get("high"),
            "scores": {g: by.get("tuned") for g, by in (report.get("scores") or {}).items()}}
