"""The HTTP API (`/api/v1`, OpenAPI at /api/v1/openapi.json) and the operator console."""

from collections.abc import Callable

from fastapi import FastAPI

from sensord.api import _console, _link_pages, _orders, _silences
from sensord.api._app import ApiContext, create_app
from sensord.api._auth import Clients, Forbidden, Unauthorized
from sensord.api._links import BadLink, Link, Links

# Each adds its routes to the app: the work-order API, silences and audit, the console.
ROUTERS: tuple[Callable[[FastAPI], None], ...] = (
    _orders.add_routes,
    _silences.add_routes,
    _link_pages.add_routes,
    _console.add_routes,
)

__all__ = [
    "ROUTERS",
    "ApiContext",
    "BadLink",
    "Clients",
    "Forbidden",
    "Link",
    "Links",
    "Unauthorized",
    "create_app",
]
