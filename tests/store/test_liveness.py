"""A running job whose own process is gone is settled as failed by the next read, whoever reads:
a dead pid on this host at once, a silent process elsewhere once its heartbeat is stale. A
worker's job whose worker is gone is handed back (queued to resume, or its requested stop
applied). A live process's job is left alone; a suspended process takes its job back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunesmith.store import Registry
from tunesmith.store.liveness import LOST, Heartbeat, process_running, stale_seconds, this_host
from tunesmith.store.runs import resume_job
from tunesmith.store.schema import now


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_job(registry: Registry, **fields) -> str:
    job = registry.create_job({"base_model": "m"}, status="running", run_dir="/runs/r", **fields)
    return job.id


def test_a_dead_pid_on_this_host_fails_the_job_for_every_reader(registry: Registry) -> None:
    job_id = running_job(registry, host=this_host(), pid=dead_pid(), heartbeat_at=now())
    assert [j.status for j in registry.jobs(status="running")] == []  # a filtered list is true too
    job = registry.job(job_id)
    assert (job.status, job.error_code) == ("failed", LOST)
    assert "is no longer running" in job.error and "tunesmith train --resume /runs/r" in job.error
    assert job.finished_at is not None
    assert [e.message for e in registry.events(job_id)] == [job.error]


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process_running(child.pid):
            time.sleep(0.05)
        assert not process_running(child.pid)  # exited, not yet reaped
    finally:
        child.wait()


def test_a_stale_heartbeat_from_another_host_fails_the_job(registry: Registry) -> None:
    fresh = running_job(registry, host="elsewhere", pid=1, heartbeat_at=now())
    stale = running_job(registry, host="elsewhere", pid=1, heartbeat_at=now() - stale_seconds() - 5)
    assert registry.job(fresh).status == "running"
    job = registry.job(stale)
    assert job.status == "failed" and "has not reported for" in job.error


def test_live_processes_workers_and_old_rows_are_left_alone(registry: Registry) -> None:
    import os

    mine = running_job(registry, host=this_host(), pid=os.getpid(), heartbeat_at=now())
    # A live worker on this host is judged by its pid, never by a late beat (its child may train).
    late = now() - stale_seconds() - 5
    worker = running_job(registry, host=this_host(), pid=os.getpid(), worker_id="w1", heartbeat_at=late)
    legacy = running_job(registry)  # recorded before jobs had a pid: nothing to judge by
    assert {registry.job(j).status for j in (mine, worker, legacy)} == {"running"}
    assert registry.job(worker).worker_id == "w1"


def test_a_gone_workers_jobs_are_handed_back_for_every_reader(registry: Registry) -> None:
    """A worker killed with its child (SIGKILL of the server): the next read re-queues the job
    it was training and applies a stop that was asked for, without waiting for another worker."""
    gone = {"host": this_host(), "pid": dead_pid(), "worker_id": "w-gone", "heartbeat_at": now()}
    training = running_job(registry, **gone)
    cancelling = running_job(registry, requested_action="cancel", **gone)
    validating = registry.create_job({"base_model": "m"}, status="validating_files", **gone).id
    elsewhere = running_job(registry, host="elsewhere", pid=1, worker_id="w-far",
                            heartbeat_at=now() - stale_seconds() - 5)

    assert [j.id for j in registry.jobs(status="running")] == []  # the first read settles them all
    job = registry.job(training)
    assert (job.status, job.worker_id, job.heartbeat_at, job.error) == ("queued", None, None, None)
    (event,) = [e.message for e in registry.events(training)]
    assert f"worker (pid {gone['pid']} on {this_host()}) is no longer running" in event
    assert "queued to resume from its last checkpoint" in event
    assert (registry.job(cancelling).status, registry.job(cancelling).requested_action) == ("cancelled", None)
    assert (registry.job(validating).status, registry.job(validating).worker_id) == ("validating_files", None)
    far = registry.job(elsewhere)
    assert far.status == "queued" and "has not reported for" in registry.events(elsewhere)[0].message


def test_a_claim_records_the_workers_process_and_a_dead_worker_is_seen(registry: Registry) -> None:
    import os

    from tunesmith.serve import queue

    job_id = registry.create_job({"base_model": "m"}, status="queued").id
    claimed = queue.claim(registry, "w")
    assert (claimed.id, claimed.host, claimed.pid) == (job_id, this_host(), os.getpid())
    registry.update_job(job_id, status="running")
    assert registry.job(job_id).status == "running"  # this process is the worker, and it lives
    registry.update_job(job_id, pid=dead_pid())  # as if the worker's process had been killed
    assert registry.job(job_id).status == "queued"


def test_a_suspended_process_takes_its_job_back(registry: Registry) -> None:
    job_id = running_job(registry)
    with Heartbeat(registry, job_id, every=3600) as beat:
        job = registry.job(job_id)
        assert (job.pid, job.host, job.status) == (beat.pid, this_host(), "running")
        registry.update_job(job_id, heartbeat_at=now() - stale_seconds() - 5)  # as if stopped a while
        assert registry.job(job_id).status == "failed"
        beat.beat()
        job = registry.job(job_id)
        assert (job.status, job.error, job.error_code) == ("running", None, None)
        assert now() - job.heartbeat_at < 60


def test_resuming_a_run_that_a_live_process_trains_is_refused(registry: Registry) -> None:
    from tunesmith.store.errors import RegistryError

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running_job(registry, host=this_host(), pid=other.pid, heartbeat_at=now())
        with pytest.raises(RegistryError, match=f"being trained by process {other.pid}"):
            resume_job(registry, "/runs/r", owned=True)
    finally:
        other.kill()
        other.wait()
    job = resume_job(registry, "/runs/r", owned=True)  # dead now: settled, then taken over
    assert job.status == "running" and job.error is None


def test_stale_limit_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.errors import TunesmithError

    monkeypatch.setenv("TUNESMITH_STALE_SECONDS", "soon")
    with pytest.raises(TunesmithError, match="not a number"):
        stale_seconds()
    monkeypatch.setenv("TUNESMITH_STALE_SECONDS", "1")
    with pytest.raises(TunesmithError, match="shorter than two heartbeats"):
        stale_seconds()
