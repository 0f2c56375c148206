"""The server's job queue transactions: exclusive claims, stale workers, cancel/pause/resume,
settling. On SQLite, and on PostgreSQL when TUNESMITH_TEST_POSTGRES_URL is set (the claim
there takes rows with FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tunesmith.serve import queue
from tunesmith.serve.errors import APIError
from tunesmith.store import Registry, open_registry


def queued(registry: Registry, count: int = 1) -> list[str]:
    recipe = {"base_model": "tunesmith/tiny-chat"}
    return [registry.create_job(recipe, status="queued").id for _ in range(count)]


def test_concurrent_workers_never_claim_the_same_job(registry: Registry, registry_url: str,
                                                     tmp_path: Path) -> None:
    jobs = set(queued(registry, 12))
    claims: dict[str, list[str]] = {}
    ready = threading.Barrier(3, timeout=60)  # all three claim from the same moment: a real race

    def work(name: str) -> None:
        own = open_registry(registry_url, home=tmp_path / "home")  # its own connections, like a process
        claims[name] = []
        own.jobs(limit=1)  # connected and migrated before the start
        ready.wait()
        while (job := queue.claim(own, name)) is not None:
            claims[name].append(job.id)
        own.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [job for ids in claims.values() for job in ids]
    assert sorted(taken) == sorted(jobs)  # every job once, none twice
    assert {registry.job(j).worker_id for j in jobs} == {n for n, ids in claims.items() if ids}


def test_a_dead_workers_jobs_are_requeued_or_get_their_requested_stop(registry: Registry) -> None:
    running, cancelling, fresh = queued(registry, 3)
    for job_id in (running, cancelling, fresh):
        assert queue.claim(registry, "dead" if job_id != fresh else "alive").id == job_id
    registry.update_job(running, status="running")
    registry.update_job(cancelling, status="running", requested_action="cancel")
    registry.update_job(running, heartbeat_at=time.time() - 60)
    registry.update_job(cancelling, heartbeat_at=time.time() - 60)

    assert queue.requeue_stale(registry, stale_seconds=30, own="dead") == []  # never its own
    assert sorted(queue.requeue_stale(registry, stale_seconds=30)) == sorted([running, cancelling])
    job = registry.job(running)
    assert (job.status, job.worker_id) == ("queued", None)
    assert any("stopped" in (e.message or "") for e in registry.events(running))
    assert registry.job(cancelling).status == "cancelled"
    assert registry.job(fresh).worker_id == "alive"
    assert queue.claim(registry, "next").id == running  # picked up again


def test_stop_requests_before_and_after_a_claim(registry: Registry) -> None:
    waiting, claimed = queued(registry, 2)
    assert queue.request_stop(registry, waiting, "pause").status == "paused"  # no child: at once
    assert queue.resume(registry, waiting).status == "validating_files"  # never trained: checked again
    assert queue.request_stop(registry, waiting, "cancel").status == "cancelled"
    with pytest.raises(APIError) as caught:
        queue.request_stop(registry, waiting, "pause")
    assert caught.value.status == 400

    queue.claim(registry, "w")  # takes `claimed` (the other one is cancelled)
    registry.update_job(claimed, status="running")
    job = queue.request_stop(registry, claimed, "pause")
    assert (job.status, job.requested_action) == ("running", "pause")  # the worker passes it on
    with pytest.raises(APIError):
        queue.resume(registry, claimed)  # not paused yet
    registry.update_job(claimed, status="cancelled")  # what the loop reports when it stops
    settled = queue.settle(registry, claimed, "w", 0, shutting_down=False)
    assert (settled.status, settled.worker_id, settled.finished_at) == ("paused", None, None)
    assert queue.resume(registry, claimed).status == "queued"


def test_settling_a_crashed_or_interrupted_child(registry: Registry) -> None:
    crashed, interrupted = queued(registry, 2)
    for job_id in (crashed, interrupted):
        queue.claim(registry, "w")
        registry.update_job(job_id, status="running")
    job = queue.settle(registry, crashed, "w", -9, shutting_down=False)
    assert (job.status, job.error_code) == ("failed", "training_process_failed")
    assert "-9" in job.error
    assert queue.settle(registry, interrupted, "w", 0, shutting_down=True).status == "queued"
    assert queue.settle(registry, interrupted, "other", 0, shutting_down=False).status == "queued"
