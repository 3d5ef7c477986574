"""WeCom (企业微信) group robot.

One POST of JSON to the robot's webhook (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`),
as the robot guide (群机器人配置说明) documents:

    {"msgtype": "text", "text": {"content": "…", "mentioned_list": [userid…],
                                 "mentioned_mobile_list": [phone…]}}     content ≤ 2048 bytes
    {"msgtype": "markdown", "markdown": {"content": "…"}}                content ≤ 4096 bytes

Text or markdown, per message: markdown cannot mention anyone by phone, so a message
with recipients to mention (a phone, or a WeCom user id in `chat["wecom"]`) goes as
text, whose mention pings the person's phone; one with no one to mention goes as
markdown, which reads better. For an alert that needs a person, the ping matters more
than the formatting.

The robot answers HTTP 200 with `errcode` 0 when it took the message, and HTTP 200
with another `errcode` when it did not (table in `_verdict`).
"""

from __future__ import annotations

from typing import Any

import httpx

from sensord.channels._base import Message
from sensord.channels._robot import Answer, Verdict, id_line, judge, mention_phone, post_json, with_tail
from sensord.channels._settings import WeComSettings

TEXT_LIMIT = 2048
MARKDOWN_LIMIT = 4096
# The robot takes at most 20 messages a minute; a minute is when the window has passed.
_RATE_WINDOW_S = 60.0


def _verdict(code: int, _msg: str) -> Verdict | None:
    if code == 45009:
        return Verdict(
            retry=True, why="WeCom rate limit (20 messages a minute per robot)", retry_after=_RATE_WINDOW_S
        )
    if code == -1:
        return Verdict(retry=True, why="WeCom system busy")
    if code == 93000:
        return Verdict(retry=False, why="WeCom: invalid webhook url (wrong key, or the robot was removed)")
    if code == 44004:
        return Verdict(retry=False, why="WeCom refused an empty message")
    if 40000 <= code < 41000:
        # The 40xxx family is WeCom's "invalid …" (key, credential, message type,
        # parameter such as a too long content): the same request will never pass.
        return Verdict(retry=False, why="WeCom refused the request as invalid")
    return None


_ANSWER = Answer(code_fields=("errcode",), message_fields=("errmsg",), verdict=_verdict)


def wecom_body(message: Message, id_label: str) -> dict[str, Any]:
    """The robot's JSON for one message: text with mentions, or markdown."""
    tail = id_line(id_label, message.id)
    phones = [mention_phone(r.phone) for r in message.recipients if r.phone]
    user_ids = [r.chat["wecom"] for r in message.recipients if r.chat.get("wecom")]
    if not phones and not user_ids:
        content = with_tail(message.markdown, tail, MARKDOWN_LIMIT)
        return {"msgtype": "markdown", "markdown": {"content": content}}
    text: dict[str, Any] = {"content": with_tail(message.text, tail, TEXT_LIMIT)}
    if phones:
        text["mentioned_mobile_list"] = phones
    if user_ids:
        text["mentioned_list"] = user_ids
    return {"msgtype": "text", "text": text}


class WeComChannel:
    """Sends each message to one WeCom group through its robot."""

    name = "wecom"
    per_recipient = False

    def __init__(self, settings: WeComSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    async def send(self, message: Message) -> None:
        body = wecom_body(message, self._settings.id_label)
        response = await post_json(self._client, self.name, self._settings.url, body)
        judge(self.name, response, _ANSWER, self._settings.url)

    async def aclose(self) -> None:
        await self._client.aclose()
