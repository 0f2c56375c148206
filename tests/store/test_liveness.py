"""A running job whose own process is gone is settled as failed by the next read, whoever reads:
a dead pid on this host at once, a silent process elsewhere once its heartbeat is stale. A
worker's job and a live process's job are left alone; a suspended process takes its job back."""

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
    worker = running_job(registry, host=this_host(), pid=dead_pid(), worker_id="w1", heartbeat_at=now())
    legacy = running_job(registry)  # recorded before jobs had a pid: nothing to judge by
    assert {registry.job(j).status for j in (mine, worker, legacy)} == {"running"}


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
