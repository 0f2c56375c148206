"""Training recorded in the registry: every run, from the CLI or the server, is a job.

`train_tracked` wraps the one training loop: it opens (or finds) the job, reports the
loop's records into it, and settles the job's status whatever way the run ends: a
pre-flight error raised before the loop reported anything, a stop on request (cancelled,
resumable), an interrupt or a lost peer (failed, resumable). A job this process owns (no
worker handed it over) carries this process's host and pid and a heartbeat, so a reader
can tell when the process was killed without a word (store/liveness.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.store.liveness import Heartbeat
from tunesmith.store.registry import Registry
from tunesmith.store.reporter import RegistryReporter, interrupted_message
from tunesmith.store.runs import resume_job, start_job
from tunesmith.store.schema import Job, Model


@dataclass(slots=True)
class TrackedRun:
    result: Any  # tunesmith.train.loop.TrainResult
    job: Job
    model: Model | None
    registry_failures: list[str]
    stopped_by: int | None = None  # the signal that asked a CLI training to stop, if one did


def train_tracked(registry: Registry, recipe: Any = None, *, resume_dir: str | Path | None = None,
                  overrides: Sequence[str] = (), reporters: Sequence[Any] = (),
                  parent_model_id: str | None = None, suffix: str | None = None, job: Job | None = None,
                  should_stop: Callable[[], bool] | None = None) -> TrackedRun:
    """Train `recipe` (or resume `resume_dir`, with `overrides` of the settings a resume may
    change) as a registry job; the model is registered on success.

    `job` is an existing job a worker holds (the server's); otherwise this process owns one:
    created, or the earlier job of the run being resumed.
    """
    from tunesmith.train.loop import train
    from tunesmith.train.stopping import unwinding

    owned = job is None
    if job is None and resume_dir is None and recipe is not None and recipe.output.name:
        # A named run that was interrupted continues automatically, and so does its job.
        earlier = registry.job_for_run_dir(Path(recipe.output.dir, recipe.output.name))
        if earlier is not None and earlier.status != "succeeded":
            job = resume_job(registry, earlier.run_dir, owned=True)
    if job is None:
        job = resume_job(registry, resume_dir, owned=True) if resume_dir is not None else \
            start_job(registry, recipe, parent_model_id=parent_model_id, suffix=suffix, owned=True)
    tracker = RegistryReporter(registry, job.id)
    alive: AbstractContextManager[Any] = Heartbeat(registry, job.id) if owned else nullcontext()
    try:
        with alive:
            result = train(recipe, resume_dir=resume_dir, overrides=overrides,
                           reporters=[*reporters, tracker], should_stop=should_stop)
    except TunesmithError as exc:
        with unwinding():
            tracker.fail(str(exc))
        raise
    except KeyboardInterrupt:
        with unwinding():
            tracker.fail(interrupted_message("interrupted (Ctrl-C)", tracker.run_dir or job.run_dir),
                         status="cancelled", code="interrupted")
        raise
    except BaseException as exc:
        why = f"stopped ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
        with unwinding():
            tracker.fail(interrupted_message(why, tracker.run_dir or job.run_dir), code="interrupted")
        raise
    return TrackedRun(result, registry.job(job.id), tracker.model, tracker.failures)
