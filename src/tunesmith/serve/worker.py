"""The worker: claims waiting jobs and runs each in a child process (job_runner.py).

One loop, every `poll_seconds`: re-queue jobs whose worker died, reap children that
ended, keep this worker's heartbeat fresh and pass on requested cancels and pauses
(SIGTERM, then SIGKILL after `grace_seconds`), then claim more work if there is room.
`tunesmith serve` runs it on a thread beside the HTTP server; `tunesmith worker` alone.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from tunesmith.serve import queue
from tunesmith.serve.limits import WorkerSettings
from tunesmith.store.registry import Registry

PRELOAD = ["tunesmith.serve.job_runner", "torch", "transformers", "peft", "tunesmith.train.loop"]
"""Imported once by the fork server, so each job's child starts without seconds of imports."""


def child_context() -> multiprocessing.context.BaseContext:
    """Fork server where available (Linux): children fork from a clean single-threaded process
    with the heavy imports done, never from the threaded server; spawn elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


@dataclass(slots=True)
class Child:
    job_id: str
    process: multiprocessing.process.BaseProcess
    term_sent_at: float | None = None
    killed: bool = False


@dataclass(slots=True)
class Worker:
    registry: Registry
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    worker_id: str = field(default_factory=lambda: new_worker_id())
    children: dict[str, Child] = field(default_factory=dict)
    stop_event: threading.Event = field(default_factory=threading.Event)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=100))
    """The latest registry problems met by the loop (kept, not raised: the worker keeps going)."""
    context: multiprocessing.context.BaseContext = field(default_factory=child_context)

    def run(self) -> None:
        """Work until `stop()`; then stop the children at a step boundary and hand their jobs back.

        Heartbeats come from their own thread, so a loop that is slow for a while (starting
        the fork server, a busy database) never makes this worker's jobs look abandoned."""
        beating = threading.Event()
        beat = threading.Thread(target=self._beat, args=(beating,), name="tunesmith-heartbeat", daemon=True)
        beat.start()
        self.warm_up()
        while not self.stop_event.is_set():
            try:
                queue.requeue_stale(self.registry, self.settings.stale_seconds, own=self.worker_id)
                self.reap(shutting_down=False)
                if self.children:
                    self.pass_on_requests()
                while len(self.children) < self.settings.max_jobs and not self.stop_event.is_set():
                    job = queue.claim(self.registry, self.worker_id)
                    if job is None:
                        break
                    self.start(job.id)
            except Exception as exc:  # a database hiccup must not end the worker
                self.errors.append(repr(exc))
            self.stop_event.wait(self.settings.poll_seconds)
        self.shutdown()
        beating.set()
        beat.join()

    def _beat(self, done: threading.Event) -> None:
        while not done.is_set():
            try:
                queue.heartbeat(self.registry, self.worker_id)
            except Exception as exc:  # retried at the next beat
                self.errors.append(repr(exc))
            done.wait(self.settings.heartbeat_seconds)

    def warm_up(self) -> None:
        """Start the fork server now (it imports torch once), not when the first job arrives."""
        if self.context.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def stop(self) -> None:
        self.stop_event.set()

    def start(self, job_id: str) -> None:
        from tunesmith.serve.job_runner import run_child

        process = self.context.Process(target=run_child, args=(job_id,), name=f"tunesmith-job-{job_id}")
        process.start()
        self.children[job_id] = Child(job_id, process)

    def pass_on_requests(self) -> None:
        jobs = {job.id: job for job in queue.claimed(self.registry, self.worker_id)}
        for job_id, child in self.children.items():
            job = jobs.get(job_id)
            if job is not None and job.requested_action in ("cancel", "pause"):
                self.signal(child)

    def signal(self, child: Child) -> None:
        """SIGTERM once; SIGKILL when the grace period has passed."""
        if child.process.exitcode is not None:
            return
        if child.term_sent_at is None:
            child.process.terminate()
            child.term_sent_at = time.monotonic()
        elif not child.killed and time.monotonic() - child.term_sent_at > self.settings.grace_seconds:
            child.process.kill()
            child.killed = True

    def reap(self, shutting_down: bool) -> None:
        for job_id, child in list(self.children.items()):
            code = child.process.exitcode
            if code is None:
                continue
            child.process.join()
            del self.children[job_id]
            queue.settle(self.registry, job_id, self.worker_id, code, shutting_down)

    def shutdown(self) -> None:
        """Ask every child to stop at its next step; jobs go back to the queue to resume later."""
        deadline = time.monotonic() + self.settings.grace_seconds
        for child in self.children.values():
            self.signal(child)
        while self.children and time.monotonic() < deadline:
            self.reap(shutting_down=True)
            time.sleep(0.2)
        for child in self.children.values():
            child.process.kill()
            child.process.join()
        self.reap(shutting_down=True)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def start_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, name="tunesmith-worker", daemon=True)
    thread.start()
    return thread
