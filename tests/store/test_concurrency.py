"""Two processes writing one registry at once (the server's worker and a CLI run):
nothing is lost and the database stays intact, on a fresh database too."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tunesmith.store import Registry
from tunesmith.store.schema import Event, Job

pytestmark = pytest.mark.slow  # several processes

EVENTS = 150
JOBS = 15


def writer(url: str, home: str, name: str, start: multiprocessing.synchronize.Event) -> None:
    from tunesmith.store import open_registry

    start.wait(30)
    registry = open_registry(url, home=Path(home))  # both migrate the empty database at once
    job = registry.create_job({"base_model": name}, status="running")
    for index in range(EVENTS):
        registry.add_event(job.id, "train", {"writer": name, "index": index}, step=index)
        if index % (EVENTS // JOBS) == 0:
            other = registry.create_job({"base_model": name}, status="queued")
            registry.update_job(other.id, status="cancelled")
    registry.update_job(job.id, status="succeeded")
    registry.close()


def test_two_processes_write_at_once(registry_url: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=writer, args=(registry_url, str(tmp_path / "home"), name, start))
               for name in ("worker", "cli")]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(120)
    assert [p.exitcode for p in workers] == [0, 0]

    from tunesmith.store import open_registry

    registry: Registry = open_registry(registry_url, home=tmp_path / "home")
    counts = registry.read(lambda s: dict(s.execute(
        select(Job.base_model, func.count()).group_by(Job.base_model)).all()))
    assert counts == {"worker": JOBS + 1, "cli": JOBS + 1}
    for job in registry.jobs(status="succeeded"):
        indices = [e.data["index"] for e in registry.events(job.id)]
        assert indices == list(range(EVENTS)), job.base_model
    assert registry.read(lambda s: s.scalar(select(func.count()).select_from(Event))) == 2 * EVENTS
    if registry.engine.dialect.name == "sqlite":
        with registry.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    registry.close()
