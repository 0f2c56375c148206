"""Registry rows in the hosted API's JSON shapes (the `openai` package's types are the
reference). tunesmith's own extras go under clearly named keys (`tunesmith`)."""

from __future__ import annotations

from typing import Any

from tunesmith.serve.redact import job_names, public_text, public_value
from tunesmith.store.schema import Checkpoint, Event, File, Job, Model

OWNER = "tunesmith"


def file_object(row: File) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": int(row.created_at),
            "filename": row.filename, "purpose": row.purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def job_object(job: Job, fine_tuned_model: str | None) -> dict[str, Any]:
    hyper = dict(job.hyperparameters or {})
    method_type = {"sft": "supervised", "dpo": "dpo", "grpo": "reinforcement"}.get(job.method, job.method)
    error = None
    if job.status == "failed":
        error = {"code": job.error_code or "training_failed",
                 "message": public_text(job.error or "the job failed", job_names(job)),
                 "param": job.error_param}
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": int(job.created_at),
        "model": job.base_model, "status": job.status, "error": error,
        "fine_tuned_model": fine_tuned_model,
        "finished_at": int(job.finished_at) if job.finished_at else None,
        "hyperparameters": hyper, "method": {"type": method_type, method_type: {"hyperparameters": hyper}},
        "organization_id": OWNER, "result_files": [], "seed": job.seed if job.seed is not None else 42,
        "trained_tokens": job.trained_tokens, "training_file": job.training_file,
        "validation_file": job.validation_file, "estimated_finish": None, "integrations": [],
        "metadata": job.user_metadata, "suffix": job.suffix,
        "tunesmith": {"steps": job.steps, "requested_action": job.requested_action,
                      "started_at": int(job.started_at) if job.started_at else None},
    }


def event_object(event: Event) -> dict[str, Any]:
    data = dict(event.data or {})
    message, kind = describe(event.type, data, event.message)
    level = {"warning": "warn"}.get(event.level, event.level)
    if level not in ("info", "warn", "error"):
        level = "info"
    return {"id": f"ftevent-{event.id}", "object": "fine_tuning.job.event",
            "created_at": int(event.created_at), "level": level, "message": public_text(message),
            "type": kind,
            "data": public_value(metrics_data(event.type, data))}


def describe(kind: str, data: dict[str, Any], message: str | None) -> tuple[str, str]:
    """A person's sentence for a training record, and the hosted API's event type."""
    step = data.get("step")
    if kind == "train":
        return f"Step {step}: training loss={_num(data.get('loss'))}", "metrics"
    if kind == "eval":
        label = "baseline validation" if data.get("baseline") else "validation"
        return f"Step {step}: {label} loss={_num(data.get('loss'))}", "metrics"
    if kind == "start":
        resumed = f" (resuming at step {step})" if step else ""
        return f"Fine-tuning job started{resumed}: {data.get('total_steps')} steps", "message"
    if kind == "end":
        status = data.get("status")
        text = {"succeeded": "The job has successfully completed", "stopped": "Training stopped",
                "stopped_early": "The job has successfully completed (early stopping)"}
        return text.get(str(status), f"Training ended: {status}"), "message"
    return message or str(data.get("message") or kind), "message"


def metrics_data(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    if kind == "train":
        return {"step": data.get("step"), "train_loss": data.get("loss"),
                "train_mean_token_accuracy": data.get("token_accuracy"),
                "learning_rate": data.get("learning_rate"),
                "tokens_per_second": data.get("tokens_per_second")}
    if kind == "eval":
        return {"step": data.get("step"), "valid_loss": data.get("loss"),
                "valid_mean_token_accuracy": data.get("token_accuracy"),
                "baseline": bool(data.get("baseline"))}
    return data


def checkpoint_object(row: Checkpoint, model_name: str) -> dict[str, Any]:
    m = _checkpoint_metrics(row.metrics or {})
    return {"id": row.id, "object": "fine_tuning.job.checkpoint", "created_at": int(row.created_at),
            "fine_tuned_model_checkpoint": f"{model_name}:ckpt-step-{row.step}",
            "fine_tuning_job_id": row.job_id, "step_number": row.step,
            "metrics": {"step": row.step, "train_loss": m.get("train_loss"),
                        "train_mean_token_accuracy": m.get("train_token_accuracy"),
                        "valid_loss": m.get("eval_loss"),
                        "valid_mean_token_accuracy": m.get("eval_token_accuracy"),
                        "full_valid_loss": m.get("eval_loss"),
                        "full_valid_mean_token_accuracy": m.get("eval_token_accuracy")}}


def _checkpoint_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint metrics are prefixed (train_loss, eval_loss) when recorded during training, and
    a raw loop record ({"type": "eval", "loss": ...}) when recorded from the run folder afterwards."""
    kind = metrics.get("type")
    if kind in ("train", "eval"):
        return {f"{kind}_{k}": v for k, v in metrics.items()}
    return metrics


def model_object(model_id: str, created: float, owned_by: str = OWNER) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": int(created), "owned_by": owned_by}


def tuned_model_object(model: Model) -> dict[str, Any]:
    return {**model_object(model.name, model.created_at), "tunesmith": {
        "base_model": model.base_model, "kind": model.kind, "job": model.job_id,
        "best_validation_loss": (model.evaluation or {}).get("best_validation_loss")}}


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page: the client asks for the next one with after=<last id>."""
    return {"object": "list", "data": items, "has_more": has_more,
            "first_id": items[0]["id"] if items else None, "last_id": items[-1]["id"] if items else None}


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)
