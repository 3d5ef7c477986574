"""Channels: the platforms notifications reach people on (chat robots, email, SMS)."""

from sensord.channels._base import Channel, Message, Recipient
from sensord.channels._dingtalk import DingTalkChannel, dingtalk_body, dingtalk_sign
from sensord.channels._factory import CHANNEL_TYPES, ChannelSettings, build_channel, channel_settings
from sensord.channels._feishu import FeishuChannel, feishu_sign
from sensord.channels._settings import DingTalkSettings, FeishuSettings, WeComSettings
from sensord.channels._wecom import WeComChannel, wecom_body

__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelSettings",
    "DingTalkChannel",
    "DingTalkSettings",
    "FeishuChannel",
    "FeishuSettings",
    "Message",
    "Recipient",
    "WeComChannel",
    "WeComSettings",
    "build_channel",
    "channel_settings",
    "dingtalk_body",
    "dingtalk_sign",
    "feishu_sign",
    "wecom_body",
]
