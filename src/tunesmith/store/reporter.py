"""RegistryReporter: the training loop's records become the job's events, checkpoints,
status and, when the run succeeds, its model.

A registry problem (database down past the retries) must not kill a long training: it
is remembered in `failures` for the CLI to show, and the run folder stays the source
of truth that `register_run` can record later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from tunesmith.store.registry import Registry
from tunesmith.store.runs import register_run
from tunesmith.store.schema import Model


def resume_hint(run_dir: str | None) -> str:
    return f"`tunesmith train --resume {run_dir or 'RUN_DIR'}`"


def stopped_message(step: int | None, run_dir: str | None) -> str:
    saved = f"at step {step} with its checkpoint saved" if step else "before its first step"
    return f"stopped on request {saved}; continue it with {resume_hint(run_dir)}"


def interrupted_message(why: str, run_dir: str | None) -> str:
    return (f"{why} before it finished; its complete checkpoints are kept: continue it with "
            f"{resume_hint(run_dir)}")


class RegistryReporter:
    def __init__(self, registry: Registry, job_id: str):
        self.registry = registry
        self.job_id = job_id
        self.run_dir: str | None = None
        self.last_metrics: dict[str, Any] = {}
        self.error: str | None = None
        self.ended = False
        self.model: Model | None = None
        self.failures: list[str] = []

    def report(self, record: dict[str, Any]) -> None:
        try:
            self._report(record)
        except SQLAlchemyError as exc:
            self.failures.append(f"{record.get('type')} at step {record.get('step')}: {exc}")

    def _report(self, record: dict[str, Any]) -> None:
        kind = str(record.get("type", "event"))
        step = record.get("step")
        if kind == "checkpoint":
            metrics = record.get("metrics") or self.last_metrics
            self.registry.add_checkpoint(self.job_id, int(record["step"]), str(record["path"]), metrics)
            return
        level = str(record.get("level", "info"))
        self.registry.add_event(self.job_id, kind, record, step=step, level=level,
                                message=record.get("message"))
        if kind == "start":
            self.run_dir = record.get("run_dir")
            self.registry.forget_after(self.job_id, int(record.get("step") or 0))
            fields: dict[str, Any] = {"status": "running", "error": None, "error_code": None}
            if self.run_dir:
                fields["run_dir"] = str(Path(self.run_dir).resolve())
            self.registry.update_job(self.job_id, **fields)
        elif kind in ("train", "eval"):
            self.last_metrics = {**self.last_metrics, **{f"{kind}_{k}": v for k, v in record.items()
                                                         if isinstance(v, int | float) and k != "step"}}
        elif kind == "event" and level == "error":
            self.error = record.get("message")
        elif kind == "end":
            self._end(record)

    def _end(self, record: dict[str, Any]) -> None:
        self.ended = True
        status = record.get("status")
        if status in ("succeeded", "stopped_early") and record.get("final_dir") and self.run_dir:
            self.model = register_run(self.registry, self.run_dir, job_id=self.job_id)
        elif status == "stopped":
            step = record.get("step")
            self.registry.add_event(self.job_id, "status", {}, step=step, level="warn",
                                    message=stopped_message(step, self.run_dir))
            self.registry.update_job(self.job_id, status="cancelled", steps=step)
        else:
            self.registry.update_job(self.job_id, status="failed", error=f"run ended as {status}")

    def fail(self, error: str, status: str = "failed", code: str | None = None) -> None:
        """Settle the job when train() raised before or after reporting (a pre-flight error such
        as bad data ends a run before its first record; an interrupt ends it mid-way)."""
        if self.ended:
            return
        self.ended = True
        try:
            self.registry.update_job(self.job_id, status=status, error=error, error_code=code)
        except SQLAlchemyError as exc:
            self.failures.append(f"fail: {exc}")

    def close(self) -> None:
        """The loop is done with this reporter. Without an "end" record the run broke off: the job
        is marked failed at once (store/tracking.py then says why, with `fail`)."""
        if self.ended:
            return
        try:
            self.registry.update_job(self.job_id, status="failed",
                                     error=self.error or interrupted_message("stopped", self.run_dir))
        except SQLAlchemyError as exc:
            self.failures.append(f"close: {exc}")
