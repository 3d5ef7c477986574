"""Unit tests for the chat channels' parts that need no platform: cutting text to a byte
limit, reading a platform's answer into the sink error tree (answers from an injected
httpx.MockTransport), and the settings models."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, SecretStr, TypeAdapter, ValidationError

from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import (
    DingTalkChannel,
    DingTalkSettings,
    FeishuChannel,
    FeishuSettings,
    Message,
    WeComChannel,
    WeComSettings,
)
from sensord.channels._robot import ELLIPSIS, cut_utf8, mention_phone, with_tail

MESSAGE = Message(
    id="m-1",
    receiver="grid_worker",
    severity=Severity.CRITICAL,
    life_safety=True,
    title="紧急呼叫",
    text="老人按下SOS",
    markdown="**老人按下SOS**",
)


class TestCutting:
    @given(st.text(), st.integers(min_value=0, max_value=64))
    def test_cut_fits_and_is_a_prefix(self, text: str, limit: int) -> None:
        """A cut text fits the byte limit, and is the text itself or a prefix of it plus …."""
        cut = cut_utf8(text, limit)
        assert len(cut.encode()) <= limit
        assert cut in (text, "") or text.startswith(cut.removesuffix(ELLIPSIS))

    @given(st.text(), st.text(min_size=1, max_size=20), st.integers(min_value=60, max_value=200))
    def test_tail_always_survives(self, body: str, tail: str, limit: int) -> None:
        """With room for it, the tail (mentions, id) is kept whole at the end, within the limit."""
        out = with_tail(body, tail, limit)
        assert len(out.encode()) <= limit
        assert out.endswith("\n" + tail)

    @pytest.mark.parametrize(
        ("phone", "mention"),
        [
            ("+86 138 0000 0001", "13800000001"),
            ("0086-139-0000-2222", "13900002222"),
            ("13700003333", "13700003333"),
            ("+852 6123 4567", "+85261234567"),
        ],
    )
    def test_phone_as_mentioned(self, phone: str, mention: str) -> None:
        """Phones are mentioned as digits, mainland numbers without +86, others with their code."""
        assert mention_phone(phone) == mention

    def test_cut_never_splits_a_character(self) -> None:
        """A limit in the middle of a three-byte character cuts before that character."""
        assert cut_utf8("警" * 10, 3 + 3 + 1 + 3) == "警警" + ELLIPSIS


def _channel(platform: str, answer: httpx.Response) -> Any:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _request: answer))
    if platform == "wecom":
        return WeComChannel(
            WeComSettings(type="wecom", url=SecretUrl("http://robot/send?key=k")), client=client
        )
    if platform == "dingtalk":
        return DingTalkChannel(
            DingTalkSettings(type="dingtalk", url=SecretUrl("http://robot/send?access_token=t")),
            client=client,
        )
    return FeishuChannel(FeishuSettings(type="feishu", url=SecretUrl("http://robot/hook/t")), client=client)


def _send(platform: str, answer: httpx.Response) -> None:
    channel = _channel(platform, answer)

    async def go() -> None:
        try:
            await channel.send(MESSAGE)
        finally:
            await channel.aclose()

    asyncio.run(go())


def _json(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(doc), headers=headers)


class TestAnswers:
    @pytest.mark.parametrize(
        ("platform", "doc"),
        [
            ("wecom", {"errcode": 0, "errmsg": "ok"}),
            ("dingtalk", {"errcode": 0, "errmsg": "ok"}),
            ("feishu", {"code": 0, "msg": "success", "data": {}}),
            ("feishu", {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}),
        ],
    )
    def test_zero_code_is_delivered(self, platform: str, doc: dict[str, Any]) -> None:
        """HTTP 200 with result code 0 (Feishu: `code`, or the older `StatusCode`) returns."""
        _send(platform, _json(200, doc))

    @pytest.mark.parametrize("platform", ["wecom", "dingtalk"])
    def test_unknown_code_is_retryable_and_says_so(self, platform: str) -> None:
        """A result code the channel does not know is retried, its code and message in the reason."""
        with pytest.raises(RetryableSinkError, match=r"unknown result code 987654.*something new"):
            _send(platform, _json(200, {"errcode": 987654, "errmsg": "something new"}))

    def test_feishu_9499_bad_request_is_permanent(self) -> None:
        """Feishu's 9499 "Bad Request" (malformed or over-size body) is never retried."""
        with pytest.raises(PermanentSinkError, match="9499"):
            _send("feishu", _json(200, {"code": 9499, "msg": "Bad Request", "data": {}}))

    def test_feishu_9499_too_many_requests_is_retryable(self) -> None:
        """Feishu's 9499 "too many request" (throttled) is retried."""
        with pytest.raises(RetryableSinkError, match="rate limit"):
            _send("feishu", _json(200, {"code": 9499, "msg": "too many request", "data": {}}))

    def test_retry_after_header_wins_over_the_table(self) -> None:
        """A Retry-After header on a rate-limit answer sets the wait, not the code's default."""
        with pytest.raises(RetryableSinkError) as caught:
            _send(
                "wecom",
                _json(200, {"errcode": 45009, "errmsg": "api freq out of limit"}, {"retry-after": "7"}),
            )
        assert caught.value.retry_after == 7.0

    def test_wecom_40xxx_is_permanent(self) -> None:
        """WeCom's 40xxx family (invalid key, parameter, type) is never retried."""
        with pytest.raises(PermanentSinkError, match="40058"):
            _send(
                "wecom", _json(200, {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"})
            )

    def test_200_that_is_not_the_robot_is_retryable(self) -> None:
        """HTTP 200 without a result code (a proxy page) is not a delivery; retried."""
        with pytest.raises(RetryableSinkError, match="without a result code"):
            _send("dingtalk", httpx.Response(200, text="<html>portal</html>"))

    def test_4xx_without_code_is_permanent(self) -> None:
        """HTTP 404 without a platform code (wrong URL) is never retried."""
        with pytest.raises(PermanentSinkError, match="HTTP 404"):
            _send("feishu", httpx.Response(404, text="not found"))


Chat = Annotated[WeComSettings | DingTalkSettings | FeishuSettings, Field(discriminator="type")]


class TestSettings:
    def test_type_picks_the_model(self) -> None:
        """`type` selects the platform's model in a union of the three."""
        parsed = TypeAdapter(list[Chat]).validate_python(
            [
                {"type": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"},
                {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t"},
                {
                    "type": "feishu",
                    "url": "https://open.feishu.cn/open-apis/bot/v2/hook/t",
                    "secret": {"file": "f"},
                },
            ]
        )
        assert [type(p) for p in parsed] == [WeComSettings, DingTalkSettings, FeishuSettings]

    def test_unknown_key_is_refused(self) -> None:
        """A misspelt key is an error, not silently ignored."""
        with pytest.raises(ValidationError, match="secrett"):
            DingTalkSettings.model_validate({"type": "dingtalk", "url": "u", "secrett": {"file": "f"}})

    def test_secret_given_without_being_configured_is_a_config_error(self) -> None:
        """A channel refuses a secret its settings do not name (or the reverse)."""
        with pytest.raises(ConfigError):
            FeishuChannel(
                FeishuSettings(type="feishu", url=SecretUrl("http://robot/u")), secret=SecretStr("s")
            )
        with pytest.raises(ConfigError):
            DingTalkChannel(
                DingTalkSettings(
                    type="dingtalk", url=SecretUrl("http://robot/u"), secret=SecretRef(credential="f")
                )
            )
