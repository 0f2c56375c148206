"""The child process that runs one claimed job: validate its files, then train.

The worker forks it from a fork server that has torch and transformers imported already
(so a job starts in a fraction of a second, not after seconds of imports); it can also be
run by hand: `python -m tunesmith.serve.job_runner JOB_ID`.

A child (never a thread) so a cancel or pause can always stop it, a crash cannot take
the server down, and memory is returned to the system when it ends. SIGTERM asks the
training loop to stop at the next step boundary (it saves a checkpoint first). The child
also dies at once with the worker's process (a watchdog thread waits on the parent's
sentinel), so a killed server leaves no orphan training: its job is re-queued once its
heartbeat goes stale, and resumes from the last complete checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.serve import queue
from tunesmith.serve.validation import validate_job_files
from tunesmith.store import open_registry


def die_with_parent() -> None:
    """Exit the moment the worker's process is gone, as if killed with it: nothing is marked
    failed, so the job's stale heartbeat sends it back to the queue."""
    parent = multiprocessing.parent_process()
    if parent is None:  # run by hand
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def run_child(job_id: str) -> None:
    """The fork server's entry point; the exit code tells the worker how it went."""
    sys.exit(run(job_id))


def main(argv: list[str]) -> int:
    return run(argv[0])


def run(job_id: str) -> int:
    die_with_parent()
    stop = {"requested": False}

    def on_term(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, on_term)
    registry = open_registry()
    job = registry.job(job_id)
    if job.status == "validating_files":
        if not validate_job_files(registry, job):
            return 0
        queue.note(registry, job.id, "Files validated; the job is queued", status="queued")
    if stop["requested"]:
        return 0
    from tunesmith.recipe import build_recipe
    from tunesmith.store.tracking import train_tracked

    try:
        recipe = build_recipe(dict(job.recipe), origin=f"job {job.id}")
        Path(recipe.output.dir).mkdir(parents=True, exist_ok=True)
        train_tracked(registry, recipe, job=registry.job(job.id), should_stop=lambda: stop["requested"])
    except TunesmithError as exc:  # the job is marked failed by train_tracked; add the API's code
        registry.update_job(job.id, status="failed", error=str(exc), error_code=_code(exc))
        return 1
    return 0


def _code(exc: TunesmithError) -> str:
    name = type(exc).__name__
    return {"RecipeError": "invalid_hyperparameters", "DataError": "invalid_training_file",
            "ModelError": "invalid_model"}.get(name, "training_failed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
