"""The job queue's state changes, each one short transaction that is safe with many workers.

A worker claims a job by setting `worker_id` on a row that has none (PostgreSQL: the row is
picked with SELECT ... FOR UPDATE SKIP LOCKED; SQLite: the registry's BEGIN IMMEDIATE makes
the select-and-update one serialised step) and records its own host and pid on it, keeps
`heartbeat_at` fresh while its child runs, and hands the job back when the child ends. A job
whose heartbeat went stale lost its worker (killed, machine gone): any worker re-queues it, and
training resumes from the last complete checkpoint because the run folder is named after the
job. Every reader does the same at once when the worker's pid on this host is gone
(store/liveness.py, which holds the one rule for handing a job back).
"""

from __future__ import annotations

import signal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tunesmith.serve.errors import APIError, not_found
from tunesmith.store.liveness import release, worker_fields
from tunesmith.store.registry import Registry
from tunesmith.store.schema import FINISHED, Event, Job, now

CLAIMABLE = ("validating_files", "queued")
ACTIVE = ("validating_files", "queued", "running")


def _locked(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


def _event(session: Session, job_id: str, message: str, level: str = "info") -> None:
    session.add(Event(job_id=job_id, type="status", level=level, message=message, data={}))


def claim(registry: Registry, worker_id: str) -> Job | None:
    """The oldest unclaimed job that is waiting, now owned by `worker_id`; None when there is none."""
    def work(session: Session) -> Job | None:
        job = session.scalar(select(Job).where(Job.status.in_(CLAIMABLE), Job.worker_id.is_(None))
                             .order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True))
        if job is None:
            return None
        claimed = session.execute(update(Job).where(Job.id == job.id, Job.worker_id.is_(None))
                                  .values(worker_id=worker_id, requested_action=None, **worker_fields()))
        if claimed.rowcount != 1:  # taken in between (cannot happen under the locks; cheap to check)
            return None
        session.refresh(job)
        return job
    return registry.write(work)


def heartbeat(registry: Registry, worker_id: str) -> None:
    """Refresh this worker's claims."""
    beat = update(Job).where(Job.worker_id == worker_id).values(heartbeat_at=now())
    registry.write(lambda s: s.execute(beat))


def claimed(registry: Registry, worker_id: str) -> list[Job]:
    """This worker's jobs, to see requested cancels and pauses."""
    return registry.read(lambda s: list(s.scalars(select(Job).where(Job.worker_id == worker_id))))


def requeue_stale(registry: Registry, stale_seconds: float, own: str | None = None) -> list[str]:
    """Hand back jobs whose worker stopped beating; a requested pause or cancel is applied now.
    A worker never takes back its own jobs (`own`): while it runs, their children are its to reap."""
    def work(session: Session) -> list[str]:
        query = select(Job).where(Job.worker_id.is_not(None), Job.heartbeat_at < now() - stale_seconds)
        if own is not None:
            query = query.where(Job.worker_id != own)
        rows = list(session.scalars(query.with_for_update(skip_locked=True)))
        for job in rows:
            release(session, job)
        return [job.id for job in rows]
    return registry.write(work)


def settle(registry: Registry, job_id: str, worker_id: str, exit_code: int | None,
           shutting_down: bool) -> Job:
    """The job's final state after its child exited, and the claim released."""
    def work(session: Session) -> Job:
        job = _locked(session, job_id)
        if job.worker_id != worker_id:  # re-queued by another worker while we were away: not ours
            return job
        action = job.requested_action
        if job.status not in ("succeeded", "failed"):
            if action == "pause":
                job.status, job.finished_at = "paused", None
                _event(session, job.id, "Job paused; resume continues from the last checkpoint")
            elif action == "cancel":
                job.status, job.finished_at = "cancelled", job.finished_at or now()
                _event(session, job.id, "Job cancelled")
            elif shutting_down:
                job.status, job.finished_at = "queued", None
                _event(session, job.id, "The worker shut down; the job is queued to resume")
            elif job.status in ACTIVE or job.status == "cancelled":
                job.status, job.finished_at = "failed", now()
                job.error = job.error or exit_reason(exit_code)
                job.error_code = job.error_code or "training_process_failed"
        job.worker_id, job.heartbeat_at, job.requested_action = None, None, None
        return job
    return registry.write(work)


def exit_reason(code: int | None) -> str:
    """A child's exit code in words: a negative code is the signal that killed it."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the training process was killed by {name} (exit code {code})"
    return f"the training process exited with code {code}"


def request_stop(registry: Registry, job_id: str, action: str) -> Job:
    """Cancel or pause: at once when no worker holds the job, else at the child's next step."""
    def work(session: Session) -> Job:
        job = _locked(session, job_id)
        if job.status in FINISHED:
            raise APIError(400, f"job {job_id} has already {job.status}; it cannot be {action}ed",
                           param="fine_tuning_job_id", code="job_finished")
        if job.status == "paused":
            if action == "cancel":
                job.status, job.finished_at = "cancelled", now()
                _event(session, job.id, "Job cancelled")
            return job
        if job.worker_id is None:
            job.status = "cancelled" if action == "cancel" else "paused"
            if action == "cancel":
                job.finished_at = now()
            _event(session, job.id, f"Job {job.status}")
        else:
            job.requested_action = action
            _event(session, job.id, f"Job {action} requested; stopping at the next step")
        return job
    return registry.write(work)


def resume(registry: Registry, job_id: str) -> Job:
    def work(session: Session) -> Job:
        job = _locked(session, job_id)
        if job.status != "paused":
            hint = " (it is being paused: try again in a moment)" if job.requested_action == "pause" else ""
            raise APIError(400, f"job {job_id} is {job.status}, not paused{hint}",
                           param="fine_tuning_job_id", code="job_not_paused")
        # A job paused before it ever trained has its files checked again on the way back.
        job.status = "queued" if job.started_at is not None else "validating_files"
        job.error, job.finished_at = None, None
        _event(session, job.id, "Job resumed; it continues from its last checkpoint")
        return job
    return registry.write(work)


def fail(registry: Registry, job_id: str, message: str, code: str, param: str | None = None) -> None:
    def work(session: Session) -> None:
        job = _locked(session, job_id)
        job.status, job.finished_at = "failed", now()
        job.error, job.error_code, job.error_param = message, code, param
        _event(session, job.id, message, "error")
    registry.write(work)


def note(registry: Registry, job_id: str, message: str, **fields: Any) -> None:
    """A status message event, with optional job field changes in the same transaction."""
    def work(session: Session) -> None:
        job = _locked(session, job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        _event(session, job_id, message)
    registry.write(work)
