"""The /metrics and /healthz listener: a tiny asyncio HTTP/1.1 server.

Two read-only endpoints do not justify a web framework; prometheus_client renders the
metrics text and the health check is a callable passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sensord._metrics import Metrics

Health = Callable[[], tuple[bool, dict[str, object]]]


class HttpServer:
    """Serves `GET /metrics` and `GET /healthz` (200 healthy / 503 with the reasons)."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._health = health
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _route(self, path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST
        if path == "/healthz":
            ok, detail = self._health()
            return (200 if ok else 503), orjson.dumps(detail), "application/json"
        return 404, b"not found\n", "text/plain"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = head.split(b" ", 2)
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 1 else "/"
            status, body, ctype = self._route(path)
            writer.write(
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'ERR'}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()
