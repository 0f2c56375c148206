"""Caps that keep one server usable for everyone: request and upload sizes, generation
lengths and counts, concurrent generations, loaded models, list page sizes."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True, slots=True)
class Limits:
    max_upload_bytes: int = 512 * MIB
    max_request_bytes: int = 4 * MIB
    """Any request body but an upload (chat messages, job parameters)."""
    max_tokens: int = 1024
    max_n: int = 8
    max_concurrent_generations: int = 8
    """Requests generating at once; those on one base share a batch (serve/batcher.py)."""
    generation_wait_seconds: float = 60.0
    """How long a request waits for a free generation slot before a 429."""
    max_loaded_bases: int = 2
    engine_threads: int | None = None
    """The generation engine's torch threads; None: all cores but one (serve/engine.py)."""
    max_list_limit: int = 100


@dataclass(frozen=True, slots=True)
class Access:
    """What the operator opened up beyond the safe defaults (docs/server.md, "Security")."""

    allow_python_graders: bool = False
    """Python graders from API callers run (sandboxed) instead of being refused."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header names served besides the loopback names (localhost, 127.0.0.1, [::1])."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    poll_seconds: float = 1.0
    heartbeat_seconds: float = 2.0
    stale_seconds: float = 30.0
    """A claimed job whose heartbeat is older than this has lost its worker and is re-queued."""
    grace_seconds: float = 30.0
    """After SIGTERM (cancel, pause, shutdown), how long a child may take to reach a step boundary."""
    max_jobs: int = 1
    """Children one worker runs at once."""
