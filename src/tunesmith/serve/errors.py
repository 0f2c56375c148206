"""Errors in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, so the
official client raises its usual exception classes (NotFoundError, AuthenticationError...)."""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import TunesmithError

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
         404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
         413: "invalid_request_error", 429: "rate_limit_error"}
log = logging.getLogger("tunesmith.serve")
INTERNAL = "The server had an error while processing your request; its log has the details."
DISK_FULL = ("The server is out of disk space; nothing was stored. Try again once the operator has "
             "freed space.")
PARSE_FAILED = "There was an error parsing the body"
"""FastAPI's message for a body it cannot parse: too deep for the JSON reader, a number too long."""


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(status, "server_error")


def not_found(what: str, ref: str, param: str | None = None) -> APIError:
    code = f"{what.replace(' ', '_').replace('-', '_')}_not_found"
    return APIError(404, f"No {what} found with id '{ref}'.", param=param, code=code)


def body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(TunesmithError)
    async def tunesmith_error(_: Request, exc: TunesmithError) -> JSONResponse:
        from tunesmith.serve.redact import public_text

        return JSONResponse(body(public_text(str(exc)), "invalid_request_error", exc.where), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(body(message, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == PARSE_FAILED:
            return JSONResponse(body("the request body is not JSON this server can read (nested too deeply, "
                                     "or a number with too many digits)", "invalid_request_error", None,
                                     "invalid_json"), status_code=400)
        return JSONResponse(body(str(exc.detail), TYPES.get(exc.status_code, "server_error")),
                            status_code=exc.status_code)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        if is_disk_full(exc):
            log.error("disk full while serving %s %s: %s", request.method, request.url.path, exc)
            return disk_full()
        log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(body(INTERNAL, "server_error"), status_code=500)


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or a database saying so (SQLite: 'database or disk is full')."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "disk is full" in str(exc) or "No space left" in str(exc)


def disk_full() -> JSONResponse:
    return JSONResponse(body(DISK_FULL, "server_error", None, "insufficient_storage"), status_code=507)


class CatchAllMiddleware:
    """Anything a route or middleware did not expect becomes a 500 in the hosted shape with a
    generic message; the trace goes to the server's log, never to the caller. The connection
    stays usable (nothing is re-raised to the HTTP server)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("disk full while serving %s %s: %s", scope["method"], scope["path"], exc)
                response = disk_full()
            else:
                log.exception("error serving %s %s", scope["method"], scope["path"])
                response = JSONResponse(body(INTERNAL, "server_error"), status_code=500)
            if not started:
                await response(scope, receive, send)
