"""Building a receiver's channels from the dispatch file: each `channels:` entry is
validated against its platform's settings (picked by `type`), its secrets are read, and
the channel gets the name of its outbox queue (`receiver/type`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from sensord._errors import ConfigError
from sensord.channels._base import Channel, Message
from sensord.channels._dingtalk import DingTalkChannel
from sensord.channels._feishu import FeishuChannel
from sensord.channels._settings import DingTalkSettings, FeishuSettings, WeComSettings
from sensord.channels._wecom import WeComChannel

ChannelSettings = Annotated[WeComSettings | DingTalkSettings | FeishuSettings, Field(discriminator="type")]
CHANNEL_TYPES = ("wecom", "dingtalk", "feishu")


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


def build_channel(name: str, settings: ChannelSettings, *, config_dir: Path) -> Channel:
    """The channel for one validated entry, its secret read (relative to `config_dir`)."""
    try:
        if isinstance(settings, WeComSettings):
            channel: Channel = WeComChannel(settings)
        elif isinstance(settings, DingTalkSettings):
            secret = settings.secret.read(config_dir) if settings.secret else None
            channel = DingTalkChannel(settings, secret=secret)
        else:
            secret = settings.secret.read(config_dir) if settings.secret else None
            channel = FeishuChannel(settings, secret=secret)
    except ValueError as exc:  # a secret file that cannot be read
        raise ConfigError(str(exc), source=name, key="secret") from None
    return _Named(name, channel)
