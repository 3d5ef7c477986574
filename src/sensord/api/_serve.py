"""uvicorn inside the daemon's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from sensord._settings import ApiSettings


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, settings: ApiSettings) -> None:
    """Serve until cancelled. TLS when the settings name a certificate and key."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="off",
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )  # fmt: skip
    server = _Server(config)
    try:
        await server.serve()
    finally:
        server.should_exit = True
