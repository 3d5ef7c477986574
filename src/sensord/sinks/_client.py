"""One keep-alive HTTP client per event sink, on aiohttp.

The event sinks send one request per alert event (up to eight at once), on the daemon's
event loop; httpx spent about 0.7 ms of CPU on each such request here, aiohttp about
0.08 ms (README, design notes). The dispatch channels, one message per group, stay on
httpx; both clients' answers and errors become the same sink errors (sinks/_http.py).

What httpx did by default and the sinks relied on is set here explicitly: redirects
are not followed (a 3xx is a refusal), idle connections are kept 5 s, at most 100
connections, proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) read once,
credentials in the URL sent as Basic auth (UTF-8), timeouts per step (connect, each
read) rather than for the whole request.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from yarl import URL

from sensord._errors import RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord.sinks._http import check_answer, transport_error

if TYPE_CHECKING:
    import aiohttp

_KEEPALIVE_S = 5.0  # as httpx: under the 5 s idle close of Node's and uvicorn's servers
_MAX_CONNECTIONS = 100  # as httpx; the delivery worker sends at most 8 at once


def _aiohttp() -> ModuleType:
    import aiohttp  # noqa: PLC0415 - see SinkClient._open

    return aiohttp


def basic_auth(username: str, password: str) -> str:
    """An `Authorization` value as httpx writes it (UTF-8; aiohttp's default is Latin-1)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class SinkClient:
    """POSTs to one URL for one sink: the session opens on the first request, inside the
    running loop (aiohttp binds it there), and every request reuses its connections."""

    def __init__(  # noqa: PLR0913 - the parts of one sink's requests
        self,
        sink: str,
        url: SecretUrl,
        *,
        timeout_s: float,
        target: str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        """`target` is the URL posted to (the sink's URL unless a path is added to it),
        `params` merge into its query, `auth` (user, password) overrides credentials in
        the URL, and those override an `authorization` in `headers` (as with httpx)."""
        self._sink, self._url, self._timeout_s = sink, url, timeout_s
        parsed = URL(target if target is not None else url.reveal())
        if params:
            parsed = parsed.update_query(params)
        self._headers = dict(headers or {})
        if auth is None and (parsed.user is not None or parsed.password is not None):
            auth = (parsed.user or "", parsed.password or "")
        if auth is not None:
            self._headers["authorization"] = basic_auth(*auth)
        # Sent without its userinfo, or aiohttp would add a second Authorization header.
        self._target = parsed.with_user(None)
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self._session: aiohttp.ClientSession | None = None
        self._errors: tuple[type[aiohttp.ClientError | OSError], ...] = (OSError,)
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RetryableSinkError(self._sink, "the sink is closed (sensord is stopping)")
        if self._session is None:
            # Imported here, with the first request: importing aiohttp took 90-150 ms of
            # the daemon's start-up, before it was ready to read the broker.
            aiohttp = _aiohttp()
            from aiohttp.helpers import get_env_proxy_for_url  # noqa: PLC0415

            with contextlib.suppress(LookupError):
                self._proxy, self._proxy_auth = get_env_proxy_for_url(self._target)
            self._errors = (aiohttp.ClientError, OSError)
            step = self._timeout_s
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, keepalive_timeout=_KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=None, connect=step, sock_connect=step, sock_read=step),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # kept as httpx keeps them, IP hosts too
            )
        return self._session

    async def post(self, body: bytes, headers: Mapping[str, str]) -> None:
        """POST `body`; raise the sink error a failure or a non-2xx answer means."""
        session = self._open()
        sent = {**self._headers, **headers} if self._headers else headers
        try:
            async with session.post(
                self._target,
                data=body,
                headers=sent,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            ) as response:
                raw = await response.read()  # read whole, so the connection goes back to the pool
                if 200 <= response.status < 300:
                    return
                text = raw.decode(response.get_encoding(), errors="replace")
                retry = response.headers.get("retry-after")
        except self._errors as exc:
            raise transport_error(self._sink, exc, self._url) from None
        check_answer(self._sink, response.status, text, retry, self._url)

    async def aclose(self) -> None:
        """Close the connections; a later request is refused as retryable, not reopened."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
