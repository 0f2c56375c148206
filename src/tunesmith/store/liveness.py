"""Whether a job's process is still there, so no reader shows a dead job as running.

Every job that a process holds records that process's host and pid, and the process
refreshes `heartbeat_at` from a thread: a CLI run (`tunesmith train`, quickstart, retrain)
through `Heartbeat`, a server's worker for each job it claimed (serve/queue.py claims and
beats; the worker's child trains and dies with it, serve/job_runner.py). Before every read the
registry settles the jobs whose process is gone, so the registry, `tunesmith runs list` and
`/v1/fine_tuning/jobs` all say the same true thing:

- a CLI run's job is failed (`process_lost`) when its pid on this host no longer runs
  (SIGKILL, out-of-memory kill, crash) or, from any host, its heartbeat is older than the
  stale limit; its checkpoints are kept and `tunesmith train --resume` continues it.
- a worker's job is handed back (`release`) when its worker's pid on this host no longer runs
  or, for a worker on another host, its heartbeat is stale: a requested cancel or pause is
  applied, a running job is queued to resume from its last checkpoint. A live worker on this
  host is never judged by its heartbeat: its child may still be training, and a second
  training of the same run folder must never start beside it.

A CLI process that was only suspended (Ctrl-Z) and comes back finds its job settled and takes
it back on its next beat: the registry then says again what is true.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from tunesmith.errors import TunesmithError
from tunesmith.store.schema import FINISHED, Event, Job, now

if TYPE_CHECKING:
    from tunesmith.store.registry import Registry

HEARTBEAT_SECONDS = 5.0
STALE_ENV = "TUNESMITH_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 120.0
"""A heartbeat this old means the process is gone even where its pid cannot be checked (another
host); many beats long, so a busy machine never makes a live run look dead."""
LOST = "process_lost"
"""The error code of a job whose process vanished without recording why."""
HELD = ("validating_files", "queued", "running")
"""The states in which a worker's claim means a process is working on the job."""
WORKER_STOPPED = "The worker running this job stopped"


def stale_seconds() -> float:
    raw = os.environ.get(STALE_ENV)
    if raw is None:
        return DEFAULT_STALE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise TunesmithError(f"{STALE_ENV}={raw!r} is not a number of seconds", where=STALE_ENV) from None
    if seconds < HEARTBEAT_SECONDS * 2:
        raise TunesmithError(f"{STALE_ENV}={raw} is shorter than two heartbeats "
                             f"({HEARTBEAT_SECONDS * 2:g} s)", where=STALE_ENV,
                             fix="set it to at least 10 seconds, or unset it")
    return seconds


def this_host() -> str:
    return socket.gethostname()


def process_running(pid: int) -> bool:
    """True while `pid` is a process on this machine that has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): the signal test is all there is
        return True
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


@dataclass(frozen=True, slots=True)
class _Owner:
    job_id: str
    host: str | None
    pid: int | None
    heartbeat_at: float | None
    run_dir: str | None
    worker_id: str | None = None


def lost_reason(owner: _Owner, at: float, limit: float, host: str) -> str | None:
    """Why the process holding a job is gone, or None while it may still be working on it."""
    who = "its worker" if owner.worker_id is not None else "its training process"
    here = owner.host == host and owner.pid is not None
    if here and not process_running(owner.pid):  # type: ignore[arg-type]
        return f"{who} (pid {owner.pid} on {host}) is no longer running"
    if owner.worker_id is not None and here:
        return None  # alive on this host: its child may be training, whatever its beat says
    if owner.heartbeat_at is not None and at - owner.heartbeat_at > limit:
        return f"{who} (pid {owner.pid} on {owner.host}) has not reported for {at - owner.heartbeat_at:.0f} s"
    return None


def release(session: Session, job: Job, why: str = WORKER_STOPPED) -> None:
    """Hand back a job whose worker is gone (one rule for the queue and for every reader): a
    requested cancel or pause is applied now, a running job is queued to resume from its last
    complete checkpoint (the run folder is named after the job), a waiting one waits again."""
    job.worker_id, job.heartbeat_at = None, None
    if job.status in FINISHED or job.status == "paused":
        job.requested_action = None
        return
    if job.requested_action == "cancel":
        job.status, job.finished_at = "cancelled", now()
        message, level = f"{why}; the requested cancel is applied", "info"
    elif job.requested_action == "pause":
        job.status = "paused"
        message, level = f"{why}; the requested pause is applied", "info"
    elif job.status == "running":
        job.status = "queued"
        message, level = f"{why}; the job is queued to resume from its last checkpoint", "warn"
    else:
        message, level = f"{why}; the job waits for a worker again", "info"
    job.requested_action = None
    session.add(Event(job_id=job.id, type="status", level=level, message=message, data={}))


def find_lost(session: Session) -> list[tuple[_Owner, str]]:
    """The jobs whose process is gone, each with why: one cheap indexed read, made in the
    reader's own snapshot so a read where nothing is lost costs no second transaction."""
    owners = _owners(session)
    if not owners:
        return []
    at, limit, host = now(), stale_seconds(), this_host()
    return [(owner, reason) for owner in owners if (reason := lost_reason(owner, at, limit, host))]


def settle(registry: Registry, lost: list[tuple[_Owner, str]]) -> list[str]:
    """Settle the jobs `find_lost` found (failed for a CLI run, handed back for a worker's
    job); their ids. Each write happens only if the row is unchanged since it was read (a beat
    in between keeps it running)."""
    at = now()

    def work(session: Session) -> list[str]:
        settled = []
        for owner, reason in lost:
            if owner.worker_id is not None:
                if _hand_back(session, owner, reason):
                    settled.append(owner.job_id)
                continue
            where = "`tunesmith train --resume " + (owner.run_dir or "RUN_DIR") + "`"
            message = (f"{reason}: it was stopped without recording why (killed?); its complete "
                       f"checkpoints are kept: continue it with {where}")
            changed = session.execute(
                update(Job).where(Job.id == owner.job_id, Job.status == "running", Job.worker_id.is_(None),
                                  Job.pid == owner.pid, _same(Job.heartbeat_at, owner.heartbeat_at))
                .values(status="failed", error=message, error_code=LOST, finished_at=at))
            if changed.rowcount == 1:
                session.add(Event(job_id=owner.job_id, type="status", level="error", message=message,
                                  data={}))
                settled.append(owner.job_id)
        return settled
    return registry.write(work)


def _hand_back(session: Session, owner: _Owner, reason: str) -> bool:
    """Release a gone worker's job, if it is still as read (claimed by that worker, no new beat)."""
    job = session.get(Job, owner.job_id, with_for_update=True)
    if job is None or (job.worker_id, job.heartbeat_at) != (owner.worker_id, owner.heartbeat_at):
        return False
    release(session, job, f"{WORKER_STOPPED}: {reason}")
    return True


_OWNED = select(Job.id, Job.host, Job.pid, Job.heartbeat_at, Job.run_dir, Job.worker_id).where(or_(
    and_(Job.status == "running", Job.worker_id.is_(None), Job.pid.is_not(None)),  # a CLI run's
    and_(Job.status.in_(HELD), Job.worker_id.is_not(None))))  # a worker's
"""Built once: every read runs it, and building it costs more than running it on SQLite."""


def _owners(session: Session) -> list[_Owner]:
    return [_Owner(*row) for row in session.execute(_OWNED)]


def worker_fields() -> dict[str, Any]:
    """The job fields a worker sets when it claims a job: its own host and pid (its child trains
    the job and dies with it), so a reader can tell when the worker is gone."""
    return {"host": this_host(), "pid": os.getpid(), "heartbeat_at": now()}


def _same(column: object, value: float | None) -> object:
    return column.is_(None) if value is None else column == value  # type: ignore[attr-defined]


def process_fields() -> dict[str, Any]:
    """The job fields that say this process is training it now."""
    return {"status": "running", "host": this_host(), "pid": os.getpid(), "heartbeat_at": now()}


class Heartbeat:
    """Owns a job for this process while it trains: records host and pid, beats from a thread.

    Use as a context manager around the training; the thread stops with it."""

    def __init__(self, registry: Registry, job_id: str, every: float = HEARTBEAT_SECONDS):
        self.registry = registry
        self.job_id = job_id
        self.every = every
        self.pid = os.getpid()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self.registry.update_job(self.job_id, **process_fields())
        self._thread = threading.Thread(target=self._run, name="tunesmith-job-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        while not self._done.wait(self.every):
            with contextlib.suppress(SQLAlchemyError):  # the database is away: the next beat tries again
                self.beat()

    def beat(self) -> None:
        mine = (Job.id == self.job_id, Job.pid == self.pid)
        at = now()

        def work(session: Session) -> None:
            session.execute(update(Job).where(*mine, Job.status == "running").values(heartbeat_at=at))
            # Settled as lost while this process was suspended: it is training again.
            back = session.execute(update(Job).where(*mine, Job.status == "failed", Job.error_code == LOST)
                                   .values(status="running", error=None, error_code=None, finished_at=None,
                                           heartbeat_at=at))
            if back.rowcount:
                session.add(Event(job_id=self.job_id, type="status", level="info", data={},
                                  message="The training process is reporting again; the job is running"))
        self.registry.write(work)
