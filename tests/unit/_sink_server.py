"""A real HTTP server for the HTTP sinks' tests: aiohttp's test server on a free loopback
port, in the test's own event loop, answering every POST with a handler the test gives
and recording what it received."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import test_utils, web

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Post:
    """One request as the server got it."""

    path_qs: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    peer: tuple[str, int]  # the client's address and port: one per connection


@dataclass
class SinkServer:
    """The running server: where to send, and what it received."""

    server: test_utils.TestServer
    posts: list[Post] = field(default_factory=list)

    def url(self, path: str = "/alerts") -> str:
        return str(self.server.make_url(path))

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


async def ok(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


@contextlib.asynccontextmanager
async def serving(answer: Answer = ok) -> AsyncIterator[SinkServer]:
    """Serve POSTs to any path with `answer` until the block ends."""
    holder: list[SinkServer] = []

    async def record(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        headers = {k.lower(): v for k, v in request.headers.items()}
        holder[0].posts.append(Post(request.path_qs, headers, await request.read(), tuple(peer[:2])))
        return await answer(request)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", record)
    server = test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server(access_log=None)  # no access log: the tests read stderr
    holder.append(SinkServer(server))
    try:
        yield holder[0]
    finally:
        await server.close()
