"""The channel seam: one notification, already routed, grouped, localised and redacted,
and something that sends it to people on one platform, or says why it cannot.

Dispatch (routing, grouping, inhibition, silences, quiet hours, text) builds `Message`s
and keeps them durable in the outbox; a `Channel` only turns one into the platform's
request. A channel raises RetryableSinkError (timeout, 5xx, a platform's rate limit: try
again later, honouring `retry_after`) or PermanentSinkError (bad token, a body the
platform refuses: dead-letter, never retried); returning means the platform took it.
"""

from __future__ import annotations

from typing import Protocol

from sensord._types import Message, Recipient

__all__ = ["Channel", "Message", "Recipient"]


class Channel(Protocol):
    """A destination platform for messages (a chat robot, SMTP, an SMS gateway)."""

    name: str
    # True: one message per recipient (SMS: each phone is its own request, so a retry
    # never texts someone twice); False: one message reaches all recipients at once.
    per_recipient: bool

    async def send(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
