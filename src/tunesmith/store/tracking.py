"""Training recorded in the registry: every run, from the CLI or the server, is a job.

`train_tracked` wraps the one training loop: it opens (or finds) the job, reports the
loop's records into it, and settles the job's status whatever way the run ends,
including a pre-flight error raised before the loop reported anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.store.registry import Registry
from tunesmith.store.reporter import RegistryReporter
from tunesmith.store.runs import resume_job, start_job
from tunesmith.store.schema import Job, Model


@dataclass(slots=True)
class TrackedRun:
    result: Any  # tunesmith.train.loop.TrainResult
    job: Job
    model: Model | None
    registry_failures: list[str]


def train_tracked(registry: Registry, recipe: Any = None, *, resume_dir: str | Path | None = None,
                  reporters: Sequence[Any] = (), parent_model_id: str | None = None,
                  suffix: str | None = None, job: Job | None = None,
                  should_stop: Callable[[], bool] | None = None) -> TrackedRun:
    """Train `recipe` (or resume `resume_dir`) as a registry job; the model is registered on success.

    `job` is an existing queued job to run (the server's worker); otherwise one is created.
    """
    from tunesmith.train.loop import train

    if job is None and resume_dir is None and recipe is not None and recipe.output.name:
        # A named run that was interrupted continues automatically, and so does its job.
        earlier = registry.job_for_run_dir(Path(recipe.output.dir, recipe.output.name))
        if earlier is not None and earlier.status != "succeeded":
            job = resume_job(registry, earlier.run_dir)
    if job is None:
        job = resume_job(registry, resume_dir) if resume_dir is not None else \
            start_job(registry, recipe, parent_model_id=parent_model_id, suffix=suffix)
    tracker = RegistryReporter(registry, job.id)
    try:
        result = train(recipe, resume_dir=resume_dir, reporters=[*reporters, tracker],
                       should_stop=should_stop)
    except TunesmithError as exc:
        tracker.fail(str(exc))
        raise
    except BaseException:
        tracker.close()  # interrupted: the job says how to resume
        raise
    return TrackedRun(result, registry.job(job.id), tracker.model, tracker.failures)
