"""Channels: the platforms notifications reach people on (chat robots, email, SMS)."""

from sensord.channels._base import Channel, Message, Recipient
from sensord.channels._email import EmailChannel, compose, message_id_header
from sensord.channels._mail_settings import EmailSettings, ReceiverWebhookSettings, SmsSettings
from sensord.channels._sms import SmsChannel
from sensord.channels._sms_body import fit_text
from sensord.channels._webhook import WebhookChannel, message_body

__all__ = [
    "Channel",
    "EmailChannel",
    "EmailSettings",
    "Message",
    "ReceiverWebhookSettings",
    "Recipient",
    "SmsChannel",
    "SmsSettings",
    "WebhookChannel",
    "compose",
    "fit_text",
    "message_body",
    "message_id_header",
]
