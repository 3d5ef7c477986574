"""A receiver's own webhook: each message POSTed to its URL, signed per Standard Webhooks
with its own `whsec_` secret (a family's app backend, a property company's system).

Body (`Content-Type: application/json`):

    {
      "id": "9c1f…",                  the message id: the same on every retry
      "receiver": "family_contact",
      "severity": "critical",         info | warning | critical
      "lifeSafety": true,
      "title": "SOS 3-402",
      "text": "…",                    plain, most important line first
      "markdown": "…",
      "recipients": [{"name": "王芳", "phone": "13800138000", "email": null, "chat": {}}],
      "ack": "https://…",             where to acknowledge ("" if nowhere)
      "data": {}                      a work order's state change: workOrder, action,
                                      state, by, note, at, rule, community, grid, …
    }

Headers: `webhook-id` (the message id, so the receiver can de-duplicate a resend),
`webhook-timestamp` (seconds at sending), `webhook-signature` (`v1,` + base64 HMAC-SHA256
over `{id}.{timestamp}.{body}`, keyed with the secret's decoded bytes).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from sensord._errors import ConfigError
from sensord._settings import signing_key
from sensord.channels._base import Message
from sensord.channels._mail_settings import ReceiverWebhookSettings
from sensord.sinks._webhook import post_signed


def message_body(message: Message) -> dict[str, Any]:
    """The documented JSON body of one message."""
    return {
        "id": message.id,
        "receiver": message.receiver,
        "severity": message.severity.value,
        "lifeSafety": message.life_safety,
        "title": message.title,
        "text": message.text,
        "markdown": message.markdown,
        "recipients": [
            {"name": r.name, "phone": r.phone, "email": r.email, "chat": dict(r.chat)}
            for r in message.recipients
        ],
        "ack": message.ack,
        "data": message.data,
    }


class WebhookChannel:
    """POSTs each message to one receiver's endpoint, signed with its secret."""

    per_recipient = False

    def __init__(
        self,
        settings: ReceiverWebhookSettings,
        *,
        secret: SecretStr,
        client: httpx.AsyncClient | None = None,
        name: str = "webhook",
    ) -> None:
        try:
            signing_key(secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(str(exc), key=name) from None
        self.name = name
        self._settings = settings
        self._secret = secret
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    async def send(self, message: Message) -> None:
        body = orjson.dumps(message_body(message))
        url, secret = self._settings.url, self._secret
        await post_signed(self._client, self.name, url, secret, msg_id=message.id, body=body)

    async def aclose(self) -> None:
        await self._client.aclose()
