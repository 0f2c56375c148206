"""Errors in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, so the
official client raises its usual exception classes (NotFoundError, AuthenticationError...)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import TunesmithError

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         409: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


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
        return JSONResponse(body(str(exc.detail), TYPES.get(exc.status_code, "server_error")),
                            status_code=exc.status_code)
