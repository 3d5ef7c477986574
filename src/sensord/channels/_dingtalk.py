"""DingTalk (钉钉) custom robot.

One POST of JSON to the robot's webhook (`https://oapi.dingtalk.com/robot/send?access_token=…`),
as the custom-robot guide (自定义机器人接入) documents:

    {"msgtype": "markdown",
     "markdown": {"title": "…", "text": "…"},
     "at": {"atMobiles": [phone…], "atUserIds": [userid…], "isAtAll": false}}

The platform notifies only the mentions it also finds written in the text (`@138…`), so
the mention line is part of the tail that cutting never removes. `title` is what the
notification preview shows; the text itself carries the content.

Signed mode (安全设置 加签): `timestamp` (ms) and `sign` go in the query, sign =
urlencode(base64(HmacSHA256(key=secret, msg=f"{timestamp}\\n{secret}"))); the platform
refuses a timestamp more than an hour from its clock. httpx encodes the query value, which
is the urlencode step.

Answers are HTTP 200 with `errcode` 0 on success, another `errcode` otherwise (`_verdict`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from sensord._errors import ConfigError
from sensord.channels._base import Message
from sensord.channels._robot import Answer, Verdict, id_line, judge, mention_phone, post_json, with_tail
from sensord.channels._settings import DingTalkSettings

# The custom-robot guide states no length limit; DingTalk's global error table (34016)
# gives markdown ≤ 5000 and title ≤ 64. Bytes are the stricter reading of 5000.
MARKDOWN_LIMIT = 5000
TITLE_LIMIT = 64
# Over 20 messages a minute the robot is throttled for 10 minutes (the guide's 调用频率限制).
_THROTTLED_S = 600.0


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The `sign` query value before urlencoding: base64 HmacSHA256 keyed by the secret."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _verdict(code: int, _msg: str) -> Verdict | None:
    if code == 130101:
        return Verdict(
            retry=True,
            why="DingTalk rate limit (over 20 a minute: throttled 10 minutes)",
            retry_after=_THROTTLED_S,
        )
    if code == -1:
        return Verdict(retry=True, why="DingTalk system busy")
    if code == 310000:
        # One code for three security checks; the platform's message says which
        # (sign not match, keywords not in content, ip not in whitelist).
        return Verdict(retry=False, why="DingTalk security check failed")
    if code == 300001:
        return Verdict(retry=False, why="DingTalk: access_token invalid")
    return None


_ANSWER = Answer(code_fields=("errcode",), message_fields=("errmsg",), verdict=_verdict)


def _title(title: str) -> str:
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


def dingtalk_body(message: Message, id_label: str) -> dict[str, Any]:
    """The robot's markdown JSON for one message, mentions written into the text."""
    phones = [mention_phone(r.phone) for r in message.recipients if r.phone]
    user_ids = [r.chat["dingtalk"] for r in message.recipients if r.chat.get("dingtalk")]
    mentions = " ".join(f"@{who}" for who in (*phones, *user_ids))
    # Blank lines: DingTalk's markdown joins single newlines into one paragraph.
    tail = f"{mentions}\n\n{id_line(id_label, message.id)}" if mentions else id_line(id_label, message.id)
    text = with_tail(message.markdown, tail, MARKDOWN_LIMIT, "\n\n")
    return {
        "msgtype": "markdown",
        "markdown": {"title": _title(message.title), "text": text},
        "at": {"atMobiles": phones, "atUserIds": user_ids, "isAtAll": False},
    }


class DingTalkChannel:
    """Sends each message to one DingTalk group through its custom robot, signed if set."""

    name = "dingtalk"
    per_recipient = False

    def __init__(
        self,
        settings: DingTalkSettings,
        *,
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (settings.secret is None) != (secret is None):
            raise ConfigError("a DingTalk robot needs its secret given exactly when one is configured")
        self._settings = settings
        self._secret = secret
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    def _params(self) -> dict[str, str]:
        if self._secret is None:
            return {}
        ts = int(self._clock() * 1000)
        sign = dingtalk_sign(self._secret.get_secret_value(), ts)
        return {"timestamp": str(ts), "sign": sign}

    async def send(self, message: Message) -> None:
        body = dingtalk_body(message, self._settings.id_label)
        url = self._settings.url
        response = await post_json(self._client, self.name, url, body, params=self._params())
        judge(self.name, response, _ANSWER, url)

    async def aclose(self) -> None:
        await self._client.aclose()
