"""Starting and supervising the ranks of a multi-process run: `tunesmith train --nproc N` runs
them under torchrun's elastic agent in-process (`run_workers`); `launch` starts that command as a
child for a caller that watches it (the server's worker, scripts). A failed rank is named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.errors import RecipeError, TunesmithError


class WorkerFailed(TunesmithError):
    """A training process of a multi-process run failed; the others were stopped."""


def train_command(recipe_path_or_run_dir: str | Path, nproc: int,
                  extra_args: Sequence[str] = ()) -> list[str]:
    """The command line `launch` runs."""
    target = Path(recipe_path_or_run_dir)
    what = ["--resume", str(target)] if target.is_dir() else [str(target)]
    return [sys.executable, "-m", "tunesmith", "train", *what, "--nproc", str(nproc), *extra_args]


def launch(recipe_path_or_run_dir: str | Path, nproc: int, extra_args: Sequence[str] = (),
           **popen: Any) -> subprocess.Popen:
    """Start `tunesmith train RECIPE --nproc N` (or `--resume RUN_DIR` for a run folder) as a child
    process, for a caller that watches it (the server's worker). Its return code is 0 on success,
    non-zero with a message naming the failed rank on stderr otherwise; SIGTERM to it stops every
    rank (the run stays resumable from its last checkpoint). `extra_args` are more train arguments:
    `--set KEY=VALUE`, `--job JOB_ID` to run an existing queued registry job. `popen` goes to
    subprocess.Popen (stdout, env, cwd...)."""
    if nproc < 1:
        raise RecipeError(f"nproc must be at least 1, got {nproc}", where="--nproc")
    return subprocess.Popen(train_command(recipe_path_or_run_dir, nproc, extra_args), **popen)


def _stopped_by(code: int) -> int | None:
    """The signal behind an exit code: -N from the OS, 128+N from a rank that unwound on SIGTERM."""
    if code < 0:
        return -code
    return code - 128 if code - 128 in (signal.SIGTERM, signal.SIGINT) else None


def describe_exit(code: int) -> str:
    number = _stopped_by(code)
    if number is None:
        return f"exit code {code}"
    try:
        return f"stopped by {signal.Signals(number).name}"
    except ValueError:
        return f"stopped by signal {number}"


def run_workers(nproc: int, args: Sequence[str]) -> None:
    """Run `python ARGS` as `nproc` ranks on this machine under torchrun's elastic agent (what
    `torchrun --standalone --nproc-per-node N` does), in this process. When any rank fails the
    agent stops the others within a second, and this raises WorkerFailed naming the rank."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # One compute thread per core share, as torchrun sets it; oversubscribed cores crawl.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5)
    try:
        elastic_launch(config, sys.executable)(*args)
    except SignalException as exc:  # the agent passed the signal on to the ranks and stopped them
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise WorkerFailed(f"the training processes were stopped by {exc.sigval.name}",
                           fix="a checkpointed run continues with `tunesmith train --resume RUN_DIR`",
                           ) from None
    except ChildFailedError as exc:
        rank, failure = root_failure(exc.failures)
        others = ", ".join(f"rank {r} ({describe_exit(f.exitcode)})"
                           for r, f in sorted(exc.failures.items()) if r != rank)
        also = f"; then stopped: {others}" if others else ""
        raise WorkerFailed(
            f"training process rank {rank} failed ({describe_exit(failure.exitcode)}){also}",
            where=f"rank {rank}",
            fix="see that rank's error above; a checkpointed run continues with "
                "`tunesmith train --resume RUN_DIR --nproc N` (any N)") from None


def root_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The rank that failed first. torchrun's agent stamps failures in whole seconds, so ties are
    common; a rank it stopped with SIGTERM itself (after seeing another fail) is never the cause."""
    return min(failures.items(), key=lambda item: (item[1].timestamp,
                                                   _stopped_by(item[1].exitcode) == signal.SIGTERM, item[0]))
