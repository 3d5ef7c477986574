"""Building a receiver's channels from the dispatch file: each `channels:` entry is
validated against its platform's settings (picked by `type`), its secrets are read, and
the channel gets the name of its outbox queue (`receiver/type`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, TypeAdapter, ValidationError

from sensord._errors import ConfigError
from sensord._settings import SecretRef
from sensord.channels._base import Channel, Message
from sensord.channels._dingtalk import DingTalkChannel
from sensord.channels._email import EmailChannel
from sensord.channels._feishu import FeishuChannel
from sensord.channels._mail_settings import EmailSettings, ReceiverWebhookSettings, SmsSettings
from sensord.channels._settings import DingTalkSettings, FeishuSettings, WeComSettings
from sensord.channels._sms import SmsChannel
from sensord.channels._webhook import WebhookChannel
from sensord.channels._wecom import WeComChannel

ChannelSettings = Annotated[
    WeComSettings | DingTalkSettings | FeishuSettings | EmailSettings | SmsSettings | ReceiverWebhookSettings,
    Field(discriminator="type"),
]
CHANNEL_TYPES = ("wecom", "dingtalk", "feishu", "email", "sms", "webhook")


class _Named:
    """A channel under its queue's name, so logs and metrics say which receiver's it is."""

    def __init__(self, name: str, channel: Channel) -> None:
        self.name = name
        self.per_recipient = channel.per_recipient
        self._channel = channel

    async def send(self, message: Message) -> None:
        await self._channel.send(message)

    async def aclose(self) -> None:
        await self._channel.aclose()


def channel_settings(raw: Mapping[str, Any], *, where: str) -> ChannelSettings:
    """One `channels:` entry validated; ConfigError names `where` (file:line) and the key."""
    try:
        return TypeAdapter(ChannelSettings).validate_python(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"][1:]) or "type"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            msg = f"unknown channel type {raw.get('type')!r}; one of {', '.join(CHANNEL_TYPES)}"
        raise ConfigError(msg, source=where, key=key) from None


def secret_refs(settings: ChannelSettings) -> dict[str, SecretRef]:
    """Every secret a channel entry names, by its key (`secret`, `headers.Authorization`)."""
    if isinstance(settings, SmsSettings):
        return settings.secret_refs()
    return {key: value for key, value in settings if isinstance(value, SecretRef)}


def build_channel(name: str, settings: ChannelSettings, *, config_dir: Path) -> Channel:
    """The channel for one validated entry, its secrets read (relative to `config_dir`)."""

    def read(ref: SecretRef | None) -> SecretStr | None:
        return ref.read(config_dir) if ref is not None else None

    try:
        if isinstance(settings, WeComSettings):
            channel: Channel = WeComChannel(settings)
        elif isinstance(settings, DingTalkSettings):
            channel = DingTalkChannel(settings, secret=read(settings.secret))
        elif isinstance(settings, FeishuSettings):
            channel = FeishuChannel(settings, secret=read(settings.secret))
        elif isinstance(settings, EmailSettings):
            channel = EmailChannel(settings, password=read(settings.password), name=name)
        elif isinstance(settings, SmsSettings):
            secrets = {k: ref.read(config_dir) for k, ref in settings.secret_refs().items()}
            channel = SmsChannel(settings, secrets=secrets, name=name)
        else:
            channel = WebhookChannel(settings, secret=settings.secret.read(config_dir), name=name)
    except ValueError as exc:  # a secret file that cannot be read
        raise ConfigError(str(exc), source=name, key="secret") from None
    return _Named(name, channel)
