"""validating_files: the job's uploaded files get the same checks as `tunesmith data check`;
the first error becomes the job's error {code, message, param}, naming the file and line."""

from __future__ import annotations

import re

from tunesmith.errors import ModelError, TunesmithError
from tunesmith.serve import queue
from tunesmith.store.registry import Registry
from tunesmith.store.schema import Job


def validate_job_files(registry: Registry, job: Job) -> bool:
    """True when the files can be trained on; otherwise the job is failed with a clear error."""
    from tunesmith.data.check import check_dataset
    from tunesmith.recipe import build_recipe

    queue.note(registry, job.id, f"Validating training file: {job.training_file}")
    data = job.recipe.get("data") or {}
    files = {data.get("train"): (job.training_file, "training_file")}
    if data.get("validation"):
        files[data["validation"]] = (job.validation_file, "validation_file")
    try:
        recipe = build_recipe(job.recipe)  # the job's own data and training settings, not defaults
        report = check_dataset(recipe.data, training=recipe.training, model=job.base_model)
    except ModelError as exc:  # the base model's tokenizer cannot be loaded
        queue.fail(registry, job.id, str(exc), "invalid_model", "model")
        return False
    except TunesmithError as exc:
        queue.fail(registry, job.id, _readable(str(exc), files), "invalid_training_file", "training_file")
        return False
    errors = [f for f in report.findings if f.severity == "error"]
    if not errors:
        return True
    first = errors[0]
    where_path = first.where or ""
    param = next((p for path, (_, p) in files.items() if path and where_path.startswith(path)),
                 "training_file")
    where = _readable(first.where or "", files)
    more = f" ({report.errors - 1} more errors)" if report.errors > 1 else ""
    fix = f" Fix: {first.fix}" if first.fix else ""
    code = "invalid_validation_file" if param == "validation_file" else "invalid_training_file"
    queue.fail(registry, job.id, f"{where}: {first.message}{more}.{fix}", code, param)
    return False


def _readable(text: str, files: dict[str | None, tuple[str | None, str]]) -> str:
    """Server paths become the client's file ids: '/home/.../ab/cd.jsonl:3' -> 'file-... line 3'."""
    for path, (file_id, _) in files.items():
        if path and file_id:
            text = re.sub(re.escape(path) + r":(\d+)", rf"{file_id} line \1", text)
            text = text.replace(path, file_id)
    return text


