"""The FastAPI application: routes per resource, API-key auth, request size caps, and the
worker started alongside (unless it runs as `tunesmith worker` elsewhere)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tunesmith import __version__
from tunesmith.serve import advice, chat, compare, dashboard, files, jobs, models
from tunesmith.serve.auth import KeyChecker
from tunesmith.serve.errors import APIError, CatchAllMiddleware, body, install
from tunesmith.serve.guard import GuardMiddleware
from tunesmith.serve.limits import Access, Limits, WorkerSettings
from tunesmith.serve.state import ServerState
from tunesmith.store.registry import Registry

OPEN_PATHS = ("/health",)


def create_app(registry: Registry, home: Path, limits: Limits | None = None,
               worker: WorkerSettings | None = None, access: Access | None = None) -> FastAPI:
    """The app over `registry`; with `worker` settings a worker thread runs jobs beside it."""
    limits = limits or Limits()
    state = ServerState(registry, limits, home,
                        generations=threading.BoundedSemaphore(limits.max_concurrent_generations),
                        access=access or Access())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        thread = None
        if worker is not None:
            from tunesmith.serve.worker import Worker, start_thread

            state.worker = Worker(registry, worker)
            thread = start_thread(state.worker)
        yield
        for abandoned in list(state.running):  # SIGTERM: running generations stop at their next token
            abandoned.set()
        if state.cache is not None:
            state.cache.close()  # the engine process ends with the server
        if thread is not None:
            state.worker.stop()
            thread.join()

    app = FastAPI(title="tunesmith", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    install(app)
    for module in (files, jobs, models, chat, advice, compare, dashboard):
        app.include_router(module.router)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "worker": state.worker is not None,
                "generations": len(state.running)}

    checker = KeyChecker(registry)
    app.add_middleware(AuthMiddleware, checker=checker)
    app.add_middleware(BodyLimitMiddleware, limits=limits)
    app.add_middleware(GuardMiddleware, allowed_hosts=state.access.allowed_hosts)
    app.add_middleware(CatchAllMiddleware)  # outermost: whatever fails below is a JSON 500
    return app


class AuthMiddleware:
    """Every route but /health needs `Authorization: Bearer KEY` once any key exists."""

    def __init__(self, app: Any, checker: KeyChecker):
        self.app = app
        self.checker = checker

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or dashboard.is_open(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1") or None
        allowed = self.checker.allows_cached(authorization)
        if allowed is None:  # the key list is read again, off the event loop
            from fastapi.concurrency import run_in_threadpool

            allowed = await run_in_threadpool(self.checker.allows, authorization)
        if not allowed:
            response = JSONResponse(body("Incorrect or missing API key. Send 'Authorization: Bearer KEY' "
                                         "(create one with `tunesmith keys create`).",
                                         "invalid_request_error", None, "invalid_api_key"), status_code=401)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over the cap (uploads have their own, larger one) while they stream in,
    so an oversized request is never held in memory or written out in full."""

    def __init__(self, app: Any, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"] == "/v1/files"
        cap = self.limits.max_upload_bytes + 64 * 1024 if upload else self.limits.max_request_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            response = JSONResponse(body(f"request body is larger than the {cap} byte limit",
                                         "invalid_request_error", None, "request_too_large"), status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise APIError(413, f"request body is larger than the {cap} byte limit",
                                   code="request_too_large")
            return message
        return await self.app(scope, counted, send)
