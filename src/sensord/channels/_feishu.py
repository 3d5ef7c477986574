"""Feishu/Lark (飞书) custom bot.

One POST of JSON to the bot's webhook (`https://open.feishu.cn/open-apis/bot/v2/hook/<token>`),
as the custom-bot guide (自定义机器人使用指南) documents, a rich-text post:

    {"msg_type": "post",
     "content": {"post": {"zh_cn": {"title": "…", "content": [
         [{"tag": "text", "text": "first line"}],
         [{"tag": "at", "user_id": "ou_…"}, …],
         [{"tag": "text", "text": "编号 …"}]]}}},
     "timestamp": "1599360473", "sign": "…"}                      whole body ≤ 20 KB

One paragraph per line of the plain text, then the mentions (`at` by the open id in a
recipient's `chat["feishu"]`: the custom bot cannot mention by phone), then the id line.

Signature verification (签名校验): `timestamp` (seconds, a string) and `sign` in the body,
sign = base64(HmacSHA256(key=f"{timestamp}\\n{secret}", msg=b"")); the key is the string,
the message is empty. A timestamp more than an hour off is refused like a wrong sign.

Success is `code` 0 (older answers: `StatusCode` 0); refusals are in `_verdict`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from sensord._errors import ConfigError, PermanentSinkError
from sensord.channels._base import Message
from sensord.channels._robot import Answer, Verdict, cut_utf8, id_line, judge, post_json
from sensord.channels._settings import FeishuSettings

# "请求体的数据大小不能超过 20 KB": 20,000 bytes is inside either reading of KB.
BODY_LIMIT = 20_000
TITLE_LIMIT = 200  # not documented; keeps a runaway title from eating the body
# 100 messages a minute per bot; 11232 is the platform shedding load around the hour.
_LOAD_SHED_S = 60.0
_PER_SECOND_S = 1.0


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """The `sign` body field: HmacSHA256 keyed by "timestamp\\nsecret" over nothing, base64."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


_REFUSALS = {
    19021: "Feishu signature check failed (wrong secret, or clock more than an hour off)",
    19022: "Feishu: this address is not in the bot's IP allow list",
    19024: "Feishu: none of the bot's keywords is in the message",
    19001: "Feishu: invalid webhook (wrong token, or the bot was removed)",
}


def _verdict(code: int, msg: str) -> Verdict | None:
    if code == 9499:
        # The guide answers 9499 "Bad Request" to a malformed or over-size body, and
        # the platform also answers 9499 "too many request" when throttling: only the
        # message tells them apart. A body we built that it calls bad will not pass later.
        if msg.strip().lower() == "bad request":
            return Verdict(retry=False, why="Feishu refused the body as malformed or over 20 KB")
        return Verdict(
            retry=True, why="Feishu rate limit (5 a second, 100 a minute per bot)", retry_after=_PER_SECOND_S
        )
    if code == 11232:
        return Verdict(retry=True, why="Feishu frequency limited", retry_after=_LOAD_SHED_S)
    return Verdict(retry=False, why=_REFUSALS[code]) if code in _REFUSALS else None


_ANSWER = Answer(
    code_fields=("code", "StatusCode"), message_fields=("msg", "StatusMessage"), verdict=_verdict
)


def _post(message: Message, text: str, lang: str, id_label: str) -> dict[str, Any]:
    paragraphs: list[list[dict[str, str]]] = [[{"tag": "text", "text": ln}] for ln in text.splitlines() if ln]
    ats = [{"tag": "at", "user_id": r.chat["feishu"]} for r in message.recipients if r.chat.get("feishu")]
    if ats:
        paragraphs.append(ats)
    paragraphs.append([{"tag": "text", "text": id_line(id_label, message.id)}])
    title = cut_utf8(message.title, TITLE_LIMIT)
    return {"msg_type": "post", "content": {"post": {lang: {"title": title, "content": paragraphs}}}}


class FeishuChannel:
    """Sends each message to one Feishu group through its custom bot, signed if set."""

    name = "feishu"
    per_recipient = False

    def __init__(
        self,
        settings: FeishuSettings,
        *,
        secret: SecretStr | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (settings.secret is None) != (secret is None):
            raise ConfigError("a Feishu bot needs its secret given exactly when one is configured")
        self._settings = settings
        self._secret = secret
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    def body(self, message: Message) -> dict[str, Any]:
        """The signed post, its text cut as little as needed for the JSON body to fit 20 KB."""
        ts = int(self._clock())

        def build(text: str) -> dict[str, Any]:
            return self._signed(_post(message, text, self._settings.lang, self._settings.id_label), ts)

        def fits(body: dict[str, Any]) -> bool:
            return len(orjson.dumps(body)) <= BODY_LIMIT

        if fits(whole := build(message.text)):
            return whole
        if not fits(build("")):
            raise PermanentSinkError(self.name, "message is over 20 KB without any text (title, mentions)")
        # JSON escapes and one paragraph per line make the body's size no simple function
        # of the text's: binary-search the largest cut that fits (log2 of the text's bytes rounds).
        low, high = 0, len(message.text.encode())
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(build(cut_utf8(message.text, mid))) else (low, mid - 1)
        return build(cut_utf8(message.text, low))

    def _signed(self, body: dict[str, Any], ts: int) -> dict[str, Any]:
        if self._secret is None:
            return body
        return {**body, "timestamp": str(ts), "sign": feishu_sign(self._secret.get_secret_value(), ts)}

    async def send(self, message: Message) -> None:
        response = await post_json(self._client, self.name, self._settings.url, self.body(message))
        judge(self.name, response, _ANSWER, self._settings.url)

    async def aclose(self) -> None:
        await self._client.aclose()
