"""What the three chat robots share: cutting text to a platform's byte limit without
breaking UTF-8, one JSON POST, and reading the answer into the sink error tree.

The robots answer HTTP 200 for most refusals and put the reason in the body (`errcode`
on WeCom and DingTalk, `code` on Feishu), so the HTTP status alone says little; each
platform module gives the code table it documents, and `judge` applies it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord.sinks._http import classify, retry_after, transport_error

ELLIPSIS = "…"


def cut_utf8(text: str, limit: int) -> str:
    """`text` in at most `limit` bytes of UTF-8, ending in … when it was cut.

    Cut on a character boundary: a platform that counts bytes refuses a body with half a
    character in it, and a person cannot read one."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = limit - len(ELLIPSIS.encode())
    if room <= 0:
        return ""
    # The slice of valid UTF-8 can end only in an incomplete sequence, which "ignore" drops.
    return raw[:room].decode("utf-8", errors="ignore").rstrip() + ELLIPSIS


def with_tail(body: str, tail: str, limit: int, sep: str = "\n") -> str:
    """`body` cut so that `body + sep + tail` fits in `limit` bytes.

    The tail (the mentions, the message id) always survives: a person reads the first
    lines, the platform notifies only mentions it finds, and the id is what they quote."""
    room = limit - len((sep + tail).encode())
    if room < 0:
        return cut_utf8(tail, limit)
    return cut_utf8(body, room) + sep + tail


def mention_phone(phone: str) -> str:
    """A phone as the robots mention it: digits only, a mainland number without +86.

    People are registered as "+86 138 0000 0001"; WeCom's mentioned_mobile_list and
    DingTalk's atMobiles (and the `@138…` DingTalk needs in the text) take the bare
    11-digit number. Other countries keep their + and code."""
    compact = re.sub(r"[\s\-()]", "", phone)
    for prefix in ("+86", "0086"):
        if compact.startswith(prefix):
            return compact.removeprefix(prefix)
    return compact


def id_line(label: str, message_id: str) -> str:
    """The last line of every chat message: the id a person quotes, the same on a resend."""
    return f"{label} {message_id}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a platform's error code means for delivery."""

    retry: bool
    why: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """Where a platform puts its result code and message in the JSON answer (first found wins)."""

    code_fields: Sequence[str]
    message_fields: Sequence[str]
    verdict: Callable[[int, str], Verdict | None]

    def read(self, doc: Mapping[str, Any]) -> tuple[int | None, str]:
        code = next((doc[f] for f in self.code_fields if isinstance(doc.get(f), int)), None)
        msg = next((str(doc[f]) for f in self.message_fields if doc.get(f)), "")
        return code, msg


async def post_json(
    client: httpx.AsyncClient,
    channel: str,
    url: SecretUrl,
    payload: Mapping[str, Any],
    *,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST `payload` as UTF-8 JSON; a timeout or a refused connection is retryable.
    The robot's token is in `url`: only the request sees it, every reason is scrubbed."""
    try:
        return await client.post(
            httpx.URL(url.reveal()).copy_merge_params(dict(params or {})),
            content=orjson.dumps(payload),
            headers={"content-type": "application/json; charset=utf-8"},
        )
    except httpx.HTTPError as exc:
        raise transport_error(channel, exc, url) from None


def _json(response: httpx.Response) -> Mapping[str, Any] | None:
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def judge(channel: str, response: httpx.Response, answer: Answer, url: SecretUrl) -> None:
    """Return if the platform took the message; raise the sink error its answer means."""
    status = response.status_code
    if status == 429 or status >= 500:
        classify(channel, response, url)
    doc = _json(response)
    code, msg = answer.read(doc) if doc is not None else (None, "")
    if code is None:
        classify(channel, response, url)  # a 4xx refusal without a platform code
        # HTTP 200 without the platform's code is not the robot answering (a proxy, a
        # captive portal): not a delivery, and nothing says it will stay that way.
        text = url.scrub(response.text)[:200]
        raise RetryableSinkError(channel, f"HTTP {status} without a result code: {text!r}")
    if code == 0:
        classify(channel, response, url)  # 0 under a 4xx status is still a refusal
        return
    verdict = answer.verdict(code, msg) or _unknown(code)
    reason = f"{verdict.why} (code {code}: {msg})" if msg else f"{verdict.why} (code {code})"
    if not verdict.retry:
        raise PermanentSinkError(channel, reason)
    wait = retry_after(response.headers.get("retry-after"))
    raise RetryableSinkError(channel, reason, retry_after=wait if wait is not None else verdict.retry_after)


def _unknown(code: int) -> Verdict:
    # A code we do not know is retried, not dead-lettered: the platforms add codes (new
    # throttles, maintenance) without notice, and dropping a life-safety alert on a guess
    # is the worse mistake. The reason carries code and message, so the sink's "still
    # failing" log shows an operator what the platform said.
    return Verdict(retry=True, why=f"unknown result code {code}, retrying")
