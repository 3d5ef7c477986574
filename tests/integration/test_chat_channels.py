"""The chat-robot channels against local stand-ins of WeCom, DingTalk and Feishu over real
HTTP. Each stand-in checks the request as its platform documents it (token, signature,
fields, limits) and answers as the platform does; no part of httpx is replaced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import (
    Channel,
    DingTalkChannel,
    DingTalkSettings,
    FeishuChannel,
    FeishuSettings,
    Message,
    Recipient,
    WeComChannel,
    WeComSettings,
)
from sensord.testing import Accepted, DingTalkRobotServer, FeishuBotServer, WeComRobotServer

pytestmark = pytest.mark.integration

WANG = Recipient("王建国", phone="13800001111", chat={"feishu": "ou_wang", "wecom": "wangjg"})
# Registered as the registry writes phones; the robots want the bare mainland number.
LI = Recipient("李秀英", phone="+86 139 0000 2222", chat={"feishu": "ou_li"})
DING_SECRET = "SEC" + "5a3ecf88f2b3eb50db30ecfc00f53033ac909c99bf7f88fd612bda89d7f3a9dc"
FEISHU_SECRET = "nIMtb7r3N9pkXyXdtAbx6e"


def sos(text: str | None = None, markdown: str | None = None, **kw: Any) -> Message:
    """An SOS for two grid workers, in Chinese, most important line first."""
    fields: dict[str, Any] = {
        "id": "a1b2c3d4-0001",
        "receiver": "grid_worker",
        "severity": Severity.CRITICAL,
        "life_safety": True,
        "title": "紧急呼叫 枫林苑 3号楼 402",
        "text": text if text is not None else "紧急呼叫 枫林苑 3号楼 402 老人按下SOS\n请立即上门查看",
        "markdown": markdown if markdown is not None else "### 紧急呼叫\n**枫林苑 3号楼 402** 老人按下SOS",
        "recipients": (WANG, LI),
    }
    return Message(**{**fields, **kw})


def send(channel: Channel, message: Message) -> None:
    """Send one message, then close the channel's client (a leaked connection fails the run)."""

    async def go() -> None:
        try:
            await channel.send(message)
        finally:
            await channel.aclose()

    asyncio.run(go())


def client(timeout_s: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout_s)


@dataclass
class Platform:
    """One platform: its stand-in server and a channel pointed at it."""

    name: str
    server: WeComRobotServer | DingTalkRobotServer | FeishuBotServer
    channel: Callable[..., Channel]

    def only(self) -> Accepted:
        assert self.server.refused == []
        assert len(self.server.accepted) == 1
        return self.server.accepted[0]


def _wecom() -> Platform:
    server = WeComRobotServer(key="693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa")

    def channel(url: str | None = None, timeout_s: float = 5.0) -> Channel:
        settings = WeComSettings(type="wecom", url=SecretUrl(url or server.url))
        return WeComChannel(settings, client=client(timeout_s))

    return Platform("wecom", server, channel)


def _dingtalk() -> Platform:
    server = DingTalkRobotServer(access_token="566cc69da782ec", secret=DING_SECRET)

    def channel(
        secret: str = DING_SECRET, timeout_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> Channel:
        settings = DingTalkSettings(
            type="dingtalk", url=SecretUrl(server.url), secret=SecretRef(credential="ding")
        )
        return DingTalkChannel(settings, secret=SecretStr(secret), client=client(timeout_s), clock=clock)

    return Platform("dingtalk", server, channel)


def _feishu() -> Platform:
    server = FeishuBotServer(token="5e3d587e-d78e-4a07-bd07-265f269f86fd", secret=FEISHU_SECRET)

    def channel(
        secret: str = FEISHU_SECRET, timeout_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> Channel:
        settings = FeishuSettings(
            type="feishu", url=SecretUrl(server.url), secret=SecretRef(credential="feishu")
        )
        return FeishuChannel(settings, secret=SecretStr(secret), client=client(timeout_s), clock=clock)

    return Platform("feishu", server, channel)


MAKERS = {"wecom": _wecom, "dingtalk": _dingtalk, "feishu": _feishu}


@pytest.fixture(params=list(MAKERS))
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    p = MAKERS[request.param]()
    with p.server:
        yield p


@pytest.fixture
def dingtalk() -> Iterator[Platform]:
    p = _dingtalk()
    with p.server:
        yield p


@pytest.fixture
def feishu() -> Iterator[Platform]:
    p = _feishu()
    with p.server:
        yield p


@pytest.fixture
def wecom() -> Iterator[Platform]:
    p = _wecom()
    with p.server:
        yield p


class TestEveryPlatform:
    def test_chinese_message_reaches_the_group_with_both_mentions(self, platform: Platform) -> None:
        """A Chinese SOS for two people is accepted, and the platform would notify both."""
        send(platform.channel(), sos())
        got = platform.only()
        assert "老人按下SOS" in got.text
        expected = {"wecom": {"13800001111", "13900002222", "wangjg"}, "feishu": {"ou_wang", "ou_li"}}
        assert set(got.mentioned) == expected.get(platform.name, {"13800001111", "13900002222"})

    def test_message_id_is_the_last_line(self, platform: Platform) -> None:
        """The message id is the last line of what the group reads, so it can be quoted."""
        send(platform.channel(), sos())
        assert platform.only().text.splitlines()[-1] == "编号 a1b2c3d4-0001"

    def test_rate_limit_answer_is_retryable(self, platform: Platform) -> None:
        """The platform's rate-limit refusal (HTTP 200, its own code) is retryable, with a wait."""
        platform.server.script("rate_limit")
        with pytest.raises(RetryableSinkError) as caught:
            send(platform.channel(), sos())
        assert str(platform.server.rate_limit[0]) in caught.value.reason
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0

    def test_503_is_retryable(self, platform: Platform) -> None:
        """HTTP 503 from the platform is retryable."""
        platform.server.script("503")
        with pytest.raises(RetryableSinkError, match="HTTP 503"):
            send(platform.channel(), sos())

    def test_hang_is_a_retryable_timeout(self, platform: Platform) -> None:
        """A platform that does not answer within the timeout is a retryable timeout."""
        platform.server.script("hang")
        started = time.monotonic()
        with pytest.raises(RetryableSinkError, match="timeout"):
            send(platform.channel(timeout_s=0.3), sos())
        assert time.monotonic() - started < 3

    def test_delivered_after_a_failure(self, platform: Platform) -> None:
        """After a scripted failure the same message goes through on the next attempt."""
        platform.server.script("503")
        with pytest.raises(RetryableSinkError):
            send(platform.channel(), sos())
        send(platform.channel(), sos())
        assert platform.only().text.endswith("a1b2c3d4-0001")


class TestWeCom:
    def test_no_one_to_mention_goes_as_markdown(self, wecom: Platform) -> None:
        """Without recipients to mention the robot gets markdown, which reads better."""
        send(wecom.channel(), sos(recipients=()))
        got = wecom.only()
        assert got.msgtype == "markdown"
        assert got.text.startswith("### 紧急呼叫")

    def test_recipients_with_phones_go_as_text_with_mobile_mentions(self, wecom: Platform) -> None:
        """Recipients with phones make it text, their phones in mentioned_mobile_list."""
        send(wecom.channel(), sos())
        got = wecom.only()
        assert got.msgtype == "text"
        assert got.body["text"]["mentioned_mobile_list"] == ["13800001111", "13900002222"]

    def test_wrong_key_is_permanent(self, wecom: Platform) -> None:
        """A webhook key the robot does not have is refused for good (93000)."""
        wrong = wecom.server.url.replace("key=", "key=x")
        with pytest.raises(PermanentSinkError, match="invalid webhook url"):
            send(wecom.channel(url=wrong), sos())

    def test_over_long_text_is_cut_within_2048_bytes(self, wecom: Platform) -> None:
        """A text of 3,000 Chinese characters is cut to 2,048 bytes on a character boundary."""
        send(wecom.channel(), sos(text="老人按下SOS" + "请" * 3000))
        got = wecom.only()
        assert len(got.text.encode()) <= 2048
        assert got.text.startswith("老人按下SOS")
        assert got.text.endswith("…\n编号 a1b2c3d4-0001")

    def test_over_long_markdown_is_cut_within_4096_bytes(self, wecom: Platform) -> None:
        """Markdown of 3,000 Chinese characters is cut to 4,096 bytes, still valid UTF-8."""
        send(wecom.channel(), sos(markdown="**紧急**" + "急" * 3000, recipients=()))
        got = wecom.only()
        assert len(got.text.encode()) <= 4096
        assert got.text.endswith("…\n编号 a1b2c3d4-0001")


class TestDingTalk:
    def test_signed_request_is_verified_by_the_robot(self, dingtalk: Platform) -> None:
        """In signed mode the robot recomputes the sign from the query's timestamp and takes it."""
        send(dingtalk.channel(), sos())
        got = dingtalk.only()
        assert got.query["timestamp"].isdigit()
        assert got.query["sign"]

    def test_mentions_are_written_in_the_text(self, dingtalk: Platform) -> None:
        """atMobiles are also written as @phone in the text, which DingTalk needs to notify."""
        send(dingtalk.channel(), sos())
        got = dingtalk.only()
        assert got.body["at"] == {
            "atMobiles": ["13800001111", "13900002222"],
            "atUserIds": [],
            "isAtAll": False,
        }
        assert "@13800001111 @13900002222" in got.text

    def test_wrong_secret_is_permanent_with_the_platforms_reason(self, dingtalk: Platform) -> None:
        """A sign made with another secret is refused for good (310000 sign not match)."""
        with pytest.raises(PermanentSinkError, match="sign not match"):
            send(dingtalk.channel(secret="SECwrong"), sos())
        assert dingtalk.server.accepted == []

    def test_timestamp_over_an_hour_old_is_permanent(self, dingtalk: Platform) -> None:
        """A sign made with a clock two hours behind is refused (310000 invalid timestamp)."""
        with pytest.raises(PermanentSinkError, match="310000"):
            send(dingtalk.channel(clock=lambda: time.time() - 7200), sos())

    def test_over_long_markdown_is_cut_within_the_limit(self, dingtalk: Platform) -> None:
        """Markdown of 3,000 Chinese characters is cut to 5,000 bytes, the mentions kept."""
        send(dingtalk.channel(), sos(markdown="急" * 3000, title="紧" * 100))
        got = dingtalk.only()
        assert len(got.text.encode()) <= 5000
        assert len(got.title) <= 64
        assert set(got.mentioned) == {"13800001111", "13900002222"}
        assert got.text.endswith("编号 a1b2c3d4-0001")


class TestFeishu:
    def test_signed_request_is_verified_by_the_bot(self, feishu: Platform) -> None:
        """With signature verification on, the bot recomputes the body's sign and takes it."""
        send(feishu.channel(), sos())
        got = feishu.only()
        assert got.body["timestamp"].isdigit()
        assert got.title == "紧急呼叫 枫林苑 3号楼 402"

    def test_wrong_secret_is_permanent_with_the_platforms_reason(self, feishu: Platform) -> None:
        """A sign made with another secret is refused for good (19021 sign match fail)."""
        with pytest.raises(PermanentSinkError, match="sign match fail"):
            send(feishu.channel(secret="wrong"), sos())

    def test_timestamp_over_an_hour_old_is_permanent(self, feishu: Platform) -> None:
        """A sign made with a clock two hours behind is refused (19021)."""
        with pytest.raises(PermanentSinkError, match="19021"):
            send(feishu.channel(clock=lambda: time.time() - 7200), sos())

    def test_recipients_are_mentioned_by_open_id(self, feishu: Platform) -> None:
        """Each recipient with a Feishu open id gets an `at` element in the post."""
        send(feishu.channel(), sos())
        paragraphs = feishu.only().body["content"]["post"]["zh_cn"]["content"]
        assert [{"tag": "at", "user_id": "ou_wang"}, {"tag": "at", "user_id": "ou_li"}] in paragraphs

    def test_over_long_message_is_cut_within_20_kb(self, feishu: Platform) -> None:
        """A text of 30,000 Chinese characters is cut so the whole body fits 20 KB."""
        lines = "\n".join(f"第{i}行 老人按下SOS" for i in range(3000))
        send(feishu.channel(), sos(text=lines))
        got = feishu.only()
        assert 19_000 < got.size <= 20_000
        assert got.text.startswith("第0行 老人按下SOS")
        assert got.text.endswith("编号 a1b2c3d4-0001")

    def test_older_status_code_answer_is_success(self, feishu: Platform) -> None:
        """An answer in the older shape (StatusCode 0, no code) counts as delivered."""
        assert isinstance(feishu.server, FeishuBotServer)
        feishu.server.legacy_answer = True
        send(feishu.channel(), sos())
        assert len(feishu.server.accepted) == 1
