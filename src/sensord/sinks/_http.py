"""HTTP failure classification shared by the HTTP sinks and the dispatch channels.

The event sinks send with aiohttp (sinks/_client.py), the channels with httpx: both
answers and both clients' errors become the same sink errors here.

The reason of a sink error is logged and kept in dead-letter records, and both a
client's error and a response body may quote the request URL (platforms answer "no
route for POST /send?access_token=…"): every reason is scrubbed of the sink URL's
secrets here.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def check_answer(sink: str, code: int, text: str, retry_after_header: str | None, url: SecretUrl) -> None:
    """Raise the sink error an HTTP status means; return on 2xx."""
    if 200 <= code < 300:
        return
    # Scrubbed before it is cut short: a cut through a token would leave a piece of it.
    shown = url.scrub(text)[:300].strip()
    if code == 429 or code >= 500:
        raise RetryableSinkError(sink, f"HTTP {code}: {shown}", retry_after=retry_after(retry_after_header))
    raise PermanentSinkError(sink, f"HTTP {code}: {shown}")


def classify(sink: str, response: httpx.Response, url: SecretUrl) -> None:
    """Raise the sink error a non-2xx httpx answer means; return on success."""
    code = response.status_code
    if not 200 <= code < 300:  # the body is decoded only when it is quoted
        check_answer(sink, code, response.text, response.headers.get("retry-after"), url)


# What either client raises when the request did not get an answer: timeouts, refused or
# dropped connections, DNS failures (aiohttp's timeouts are TimeoutError, an OSError).
if TYPE_CHECKING:  # aiohttp is imported with the first request (start-up time)
    import aiohttp

    TransportError = httpx.HTTPError | aiohttp.ClientError | OSError


def transport_error(sink: str, exc: TransportError, url: SecretUrl) -> RetryableSinkError:
    """Timeouts and connection failures are worth retrying. The reason names the URL
    (redacted): a client's own text may name only a host and port, or nothing."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException | TimeoutError) else "connection failed"
    detail = url.scrub(str(exc))
    return RetryableSinkError(sink, f"{kind} ({url}): {detail}" if detail else f"{kind} ({url})")
