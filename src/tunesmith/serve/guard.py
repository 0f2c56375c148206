"""Host allow-list and cross-site request refusal, before any route runs.

- Host: only the loopback names (and names the operator adds with --allowed-host) are
  served. A web page cannot then reach a keyless server through DNS rebinding: its
  requests carry the attacker's host name, which is refused.
- State-changing requests (POST, PUT, PATCH, DELETE) from a browser on another site are
  refused. A browser sends `Origin` (or at least `Referer`) with them; when either names
  another origin than the request's own host the request is refused. Without either, a
  request is refused only when it could be a cross-site "simple" request, which a browser
  sends without asking the server first: a form content type (urlencoded, multipart,
  text/plain) or none, and no `Authorization` header. A page cannot add `Authorization`
  or a JSON content type to a cross-site request without a CORS preflight, which this
  server never approves, so the official `openai` client (no Origin, always an
  Authorization header) and the dashboard (same-origin fetches) keep working. A browser's
  own `Sec-Fetch-Site: cross-site` (or `same-site`: another port of the same host) is
  refused too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse

from tunesmith.serve.errors import body

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def host_name(host: str) -> str:
    """'Example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class GuardMiddleware:
    """Written here rather than Starlette's TrustedHostMiddleware, which answers in plain text
    and knows nothing of Origin: every refusal here is in the hosted error shape."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...] = ()):
        self.app = app
        self.added = {host_name(h) for h in allowed_hosts}
        self.allowed = {*LOOPBACK_HOSTS, *self.added}
        self.any_host = "*" in allowed_hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refusal = self.refusal(scope["method"], headers)
        if refusal is not None:
            status, message, code = refusal
            response = JSONResponse(body(message, "invalid_request_error", None, code), status_code=status)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host")
        if host is not None and not self.any_host and host_name(host) not in self.allowed:
            return (400, f"host {host[:100]!r} is not served here; the operator can add it with "
                         "`tunesmith serve --allowed-host NAME`", "host_not_allowed")
        if method not in STATE_CHANGING:
            return None
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):  # the browser says so itself
            return (403, "cross-site request refused: the browser marked it as coming from another site",
                    "cross_site_request")
        source = headers.get("origin") or headers.get("referer")
        if source is not None:
            origin = urlsplit(source).netloc.lower()
            same = origin == (host or "").lower() or host_name(origin) in self.added  # behind a proxy
            if source == "null" or not same:
                return (403, "cross-site request refused: its Origin is not this server",
                        "cross_site_request")
            return None
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if (kind in SIMPLE_TYPES or not kind) and "authorization" not in headers:
            return (403, "a form or untyped request without an Origin header could come from another site "
                         "and is refused; send an Authorization header (any API client does) or the "
                         "Origin header of this server", "cross_site_request")
        return None
