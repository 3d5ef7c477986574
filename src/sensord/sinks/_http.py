"""HTTP failure classification shared by the HTTP sinks.

The reason of a sink error is logged and kept in dead-letter records, and both an httpx
error and a response body may quote the request URL (platforms answer "no route for POST
/send?access_token=…"): every reason is scrubbed of the sink URL's secrets here.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

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


def classify(sink: str, response: httpx.Response, url: SecretUrl) -> None:
    """Raise the sink error a non-2xx answer means; return on success."""
    code = response.status_code
    if 200 <= code < 300:
        return
    # Scrubbed before it is cut short: a cut through a token would leave a piece of it.
    text = url.scrub(response.text)[:300].strip()
    if code == 429 or code >= 500:
        raise RetryableSinkError(
            sink, f"HTTP {code}: {text}", retry_after=retry_after(response.headers.get("retry-after"))
        )
    raise PermanentSinkError(sink, f"HTTP {code}: {text}")


def transport_error(sink: str, exc: httpx.HTTPError, url: SecretUrl) -> RetryableSinkError:
    """Timeouts and connection failures are worth retrying."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection failed"
    return RetryableSinkError(sink, f"{kind}: {url.scrub(str(exc))}" if str(exc) else kind)
