"""What every route needs, kept on app.state and handed out as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from tunesmith.serve.limits import Access, Limits
from tunesmith.store.registry import Registry


@dataclass(slots=True)
class ServerState:
    registry: Registry
    limits: Limits
    home: Path
    cache: Any = None  # serve.engine.EngineClient, made on first chat so torch loads only then
    worker: Any = None  # serve.worker.Worker when the worker runs alongside
    generations: Any = None  # threading.BoundedSemaphore: the cap on concurrent generations
    access: Access = field(default_factory=Access)
    running: set[Any] = field(default_factory=set)
    """One threading.Event per generation in progress: set, it stops (client gone, shutdown)."""

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


async def server(request: Request) -> ServerState:
    """The server's state (async: FastAPI would run a plain function in its thread pool)."""
    return request.app.state.server
