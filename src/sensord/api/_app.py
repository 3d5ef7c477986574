"""The HTTP API and the operator console: one ASGI app (FastAPI), served by uvicorn
inside the daemon's event loop, so an action is applied between batches under the same
lock and committed in the same outbox as the alerts.

Every error is a JSON body `{"error": <short kind>, "reason": <what to do about it>}`
with its HTTP status: 400 a malformed call, 401 no or unknown token, 403 a role or link
that does not allow it, 404 no such work order, 409 not allowed in its state, 422 a
body or parameter of the wrong shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from sensord._errors import SensordError, WorkOrderError
from sensord._office import Caller, Office
from sensord.api._auth import COOKIE, Clients, bearer, require
from sensord.api._links import Links

log = logging.getLogger("sensord.api")


class ApiContext:
    """What the routes need, kept on `app.state.ctx`."""

    def __init__(self, office: Office, clients: Clients, links: Links | None) -> None:
        self.office = office
        self.clients = clients
        self.links = links

    def caller(self, request: Request, role: str = "read") -> Caller:
        """The authenticated caller with at least `role` (header first, then the cookie)."""
        token = bearer(request.headers.get("authorization")) or request.cookies.get(COOKIE)
        remote = request.client.host if request.client is not None else ""
        return require(self.clients.identify(token, remote), role)


# Declared for the OpenAPI document (and the docs page's log-in); ApiContext.caller reads both.
_BEARER = HTTPBearer(auto_error=False, description="a client's token (api.clients in sensord.yaml)")
_COOKIE = APIKeyCookie(name=COOKIE, auto_error=False, description="the console's log-in cookie")


def context(request: Request) -> ApiContext:
    """The ApiContext of the app serving this request."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def caller_with(role: str) -> Callable[..., Caller]:
    """A route dependency: the caller, with at least `role`. As a dependency it runs
    before the body is checked, so a call without a token is 401 whatever its body."""

    def caller(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
        _cookie: Annotated[str | None, Depends(_COOKIE)],
    ) -> Caller:
        return context(request).caller(request, role)

    return caller


def _error(status: int, kind: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": kind, "reason": reason}, status_code=status)


def create_app(ctx: ApiContext, routers: list[Callable[[FastAPI], None]] | None = None) -> FastAPI:
    """The app with its error handlers; each of `routers` adds its routes."""
    app = FastAPI(
        title="sensord", version="1", summary="Work orders, silences and the audit log of a sensord box",
        openapi_url="/api/v1/openapi.json", docs_url="/api/v1/docs", redoc_url=None,
    )  # fmt: skip
    app.state.ctx = ctx

    @app.exception_handler(WorkOrderError)
    async def _refused(_: Request, exc: WorkOrderError) -> JSONResponse:
        return _error(exc.status, type(exc).__name__.lower(), exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _shape(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http", str(exc.detail))

    @app.exception_handler(SensordError)
    async def _sensord(_: Request, exc: SensordError) -> JSONResponse:
        log.error("API call failed", extra={"fields": {"error": str(exc)}})
        return _error(503, "unavailable", f"sensord could not do this now: {exc}")

    @app.exception_handler(Exception)
    async def _defect(_: Request, exc: Exception) -> JSONResponse:
        log.error("API call failed unexpectedly", exc_info=exc)
        return _error(500, "internal", "sensord failed on this call; see its log")

    for add in routers or []:
        add(app)
    return app
