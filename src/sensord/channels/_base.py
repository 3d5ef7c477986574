"""The channel seam: one notification, already routed, grouped, localised and redacted,
and something that sends it to people on one platform, or says why it cannot.

Dispatch (routing, grouping, inhibition, silences, quiet hours, text) builds `Message`s
and keeps them durable in the outbox; a `Channel` only turns one into the platform's
request. A channel raises RetryableSinkError (timeout, 5xx, a platform's rate limit: try
again later, honouring `retry_after`) or PermanentSinkError (bad token, a body the
platform refuses: dead-letter, never retried); returning means the platform took it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sensord._types import Severity


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person a message is for: a grid worker, a family contact, a doctor.

    `chat` holds per-platform ids (`wecom`: user id, `feishu`: open id) for @mentions;
    chat robots mention by `phone` where the platform allows it (WeCom, DingTalk)."""

    name: str
    phone: str | None = None
    email: str | None = None
    chat: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    """One notification to one receiver's channel.

    `id` is stable: the same on every retry and after a restart, so a platform (or the
    person) can tell a resend from a new job; channels pass it where the platform has a
    place for it (a header, a message id, the email Message-ID) and show it in the text.
    `text` is plain and short, with the most important line first (SMS cuts it);
    `markdown` is the same content for chat bots that render it.
    """

    id: str
    receiver: str
    severity: Severity
    life_safety: bool
    title: str
    text: str
    markdown: str
    recipients: tuple[Recipient, ...] = ()
    # Where to acknowledge: a one-tap link, or the id to quote (work orders).
    ack: str = ""


class Channel(Protocol):
    """A destination platform for messages (a chat robot, SMTP, an SMS gateway)."""

    name: str
    # True: one message per recipient (SMS: each phone is its own request, so a retry
    # never texts someone twice); False: one message reaches all recipients at once.
    per_recipient: bool

    async def send(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
