"""Channels: the platforms notifications reach people on (chat robots, email, SMS)."""

from sensord.channels._base import Channel, Message, Recipient
from sensord.channels._dingtalk import DingTalkChannel, dingtalk_body, dingtalk_sign
from sensord.channels._email import EmailChannel, compose, message_id_header
from sensord.channels._factory import (
    CHANNEL_TYPES,
    ChannelSettings,
    build_channel,
    channel_settings,
    secret_refs,
)
from sensord.channels._feishu import FeishuChannel, feishu_sign
from sensord.channels._mail_settings import EmailSettings, ReceiverWebhookSettings, SmsSettings
from sensord.channels._settings import DingTalkSettings, FeishuSettings, WeComSettings
from sensord.channels._sms import SmsChannel
from sensord.channels._sms_body import fit_text
from sensord.channels._webhook import WebhookChannel, message_body
from sensord.channels._wecom import WeComChannel, wecom_body

__all__ = [
    "CHANNEL_TYPES",
    "Channel",
    "ChannelSettings",
    "DingTalkChannel",
    "DingTalkSettings",
    "EmailChannel",
    "EmailSettings",
    "FeishuChannel",
    "FeishuSettings",
    "Message",
    "ReceiverWebhookSettings",
    "Recipient",
    "SmsChannel",
    "SmsSettings",
    "WeComChannel",
    "WeComSettings",
    "WebhookChannel",
    "build_channel",
    "channel_settings",
    "compose",
    "dingtalk_body",
    "dingtalk_sign",
    "feishu_sign",
    "fit_text",
    "message_body",
    "message_id_header",
    "secret_refs",
    "wecom_body",
]
