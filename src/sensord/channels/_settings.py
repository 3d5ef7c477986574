"""Settings of the chat-robot channels: one frozen model per platform, each tagged by
`type` so the configured channels can become one discriminated union.

The webhook URL carries the robot's token (WeCom `key`, DingTalk `access_token`, Feishu
path): a `SecretUrl`, written as a plain string and shown redacted. The signing secret,
where the platform has one, is a `SecretRef` read at load time like every other secret.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef


class _ChannelSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The robot's token is in the URL: shown redacted everywhere, read only to send.
    url: SecretUrl
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # Written before the message id on the last line, so a person can quote the id and
    # tell a resend from a new alert. A label, not a translation: the channel does not
    # localise, the operator picks the word their people read.
    id_label: Annotated[str, Field(min_length=1, max_length=32)] = "编号"


class WeComSettings(_ChannelSettings):
    """A WeCom (企业微信) group robot: `url` is its webhook with `?key=`."""

    type: Literal["wecom"]


class DingTalkSettings(_ChannelSettings):
    """A DingTalk (钉钉) custom robot: `url` is its webhook with `?access_token=`.
    `secret` (the `SEC…` string) when the robot's security setting is 加签 (signed)."""

    type: Literal["dingtalk"]
    secret: SecretRef | None = None


class FeishuSettings(_ChannelSettings):
    """A Feishu/Lark (飞书) custom bot: `url` is its webhook `…/bot/v2/hook/<token>`.
    `secret` when the bot's security setting is 签名校验 (signature verification)."""

    type: Literal["feishu"]
    secret: SecretRef | None = None
    # The language key of the rich-text post; Feishu shows it to every reader.
    lang: Literal["zh_cn", "en_us", "ja_jp"] = "zh_cn"
