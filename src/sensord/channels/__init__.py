"""Channels: the platforms notifications reach people on (chat robots, email, SMS)."""

from sensord.channels._base import Channel, Message, Recipient

__all__ = ["Channel", "Message", "Recipient"]
