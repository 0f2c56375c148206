"""The child process that runs one claimed job: validate its files, then train.

    python -m tunesmith.serve.job_runner JOB_ID PARENT_PID

A child (never a thread) so a cancel or pause can always stop it, a crash cannot take
the server down, and memory is returned to the system when it ends. SIGTERM asks the
training loop to stop at the next step boundary (it saves a checkpoint first); on Linux
the child also dies with its worker (PR_SET_PDEATHSIG), so a killed server leaves no
orphan training: its job is re-queued once its heartbeat goes stale.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.serve import queue
from tunesmith.serve.validation import validate_job_files
from tunesmith.store import open_registry

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    job_id, parent_pid = argv[0], int(argv[1])
    die_with_parent(parent_pid)
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
