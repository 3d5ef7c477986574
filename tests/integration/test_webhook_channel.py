"""The per-receiver webhook channel over HTTP, its signatures checked with an independent
Standard Webhooks implementation (the `standardwebhooks` package), not sensord's own."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import Message, ReceiverWebhookSettings, Recipient, WebhookChannel
from sensord.testing import WebhookReceiver

pytestmark = pytest.mark.integration


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "n-7f3a9c/2",
        "receiver": "family_contact",
        "severity": Severity.CRITICAL,
        "life_safety": True,
        "title": "SOS：3号楼402室",
        "text": '王秀英按下了"SOS"求救按钮。\n请立即前往。',
        "markdown": "**SOS** 3号楼402室",
        "recipients": (
            Recipient("王芳", phone="13800138000", email="wangfang@example.cn", chat={"wecom": "WangFang"}),
            Recipient("李军", phone="13900139000"),
        ),
        "ack": "https://ack.example.cn/a/7f3a9c",
    }
    return Message(**(fields | changes))


def channel(receiver: WebhookReceiver, secret: str | None = None) -> WebhookChannel:
    settings = ReceiverWebhookSettings(
        url=SecretUrl(receiver.url), secret=SecretRef(file=Path("family.whsec")), timeout_s=5
    )
    return WebhookChannel(settings, secret=SecretStr(secret or receiver.secret))


def send(ch: WebhookChannel, *messages: Message) -> None:
    async def go() -> None:
        try:
            for m in messages:
                await ch.send(m)
        finally:
            await ch.aclose()

    asyncio.run(go())


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(new_secret()) as r:
        yield r


class TestSigning:
    def test_signature_verifies_with_standardwebhooks(self, receiver: WebhookReceiver) -> None:
        """standardwebhooks' Webhook(secret).verify accepts the body and headers as sent."""
        send(channel(receiver), message())
        [got] = receiver.received
        payload = Webhook(receiver.secret).verify(got.raw, got.headers)
        assert payload["id"] == "n-7f3a9c/2"

    def test_webhook_id_is_the_message_id_on_every_send(self, receiver: WebhookReceiver) -> None:
        """A resend has the same webhook-id (the message id), and each copy verifies."""
        send(channel(receiver), message(), message())
        first, again = receiver.received
        assert first.headers["webhook-id"] == again.headers["webhook-id"] == "n-7f3a9c/2"
        for got in (first, again):
            Webhook(receiver.secret).verify(got.raw, got.headers)

    def test_each_receiver_has_its_own_secret(self, receiver: WebhookReceiver) -> None:
        """Signed with one receiver's secret, a message does not verify with another's."""
        send(channel(receiver), message())
        [got] = receiver.received
        with pytest.raises(WebhookVerificationError, match="No matching signature"):
            Webhook(new_secret()).verify(got.raw, got.headers)

    def test_a_changed_body_does_not_verify(self, receiver: WebhookReceiver) -> None:
        """The signature covers the body: one changed byte and verification fails."""
        send(channel(receiver), message())
        [got] = receiver.received
        tampered = got.raw.replace(b'"lifeSafety":true', b'"lifeSafety":false')
        assert tampered != got.raw
        with pytest.raises(WebhookVerificationError):
            Webhook(receiver.secret).verify(tampered, got.headers)

    def test_a_secret_that_is_not_whsec_is_a_config_error(self, receiver: WebhookReceiver) -> None:
        """A secret without the whsec_ base64 form is refused when the channel is built."""
        with pytest.raises(ConfigError, match="whsec_"):
            channel(receiver, secret="hunter2")


class TestBody:
    def test_body_is_the_message_as_documented(self, receiver: WebhookReceiver) -> None:
        """The JSON body carries id, receiver, severity, lifeSafety, title, text, markdown,
        recipients and ack, with Chinese text and quotes intact."""
        send(channel(receiver), message())
        [got] = receiver.received
        assert got.headers["content-type"] == "application/json"
        assert Webhook(receiver.secret).verify(got.raw, got.headers) == {
            "id": "n-7f3a9c/2",
            "receiver": "family_contact",
            "severity": "critical",
            "lifeSafety": True,
            "title": "SOS：3号楼402室",
            "text": '王秀英按下了"SOS"求救按钮。\n请立即前往。',
            "markdown": "**SOS** 3号楼402室",
            "recipients": [
                {
                    "name": "王芳",
                    "phone": "13800138000",
                    "email": "wangfang@example.cn",
                    "chat": {"wecom": "WangFang"},
                },
                {"name": "李军", "phone": "13900139000", "email": None, "chat": {}},
            ],
            "ack": "https://ack.example.cn/a/7f3a9c",
            "data": {},  # a work order's change, when the message is one
        }


class TestAnswers:
    def test_429_is_retryable_with_retry_after(self, receiver: WebhookReceiver) -> None:
        """429 is retryable and carries the receiver's Retry-After."""
        receiver.script(429)
        with pytest.raises(RetryableSinkError) as caught:
            send(channel(receiver), message())
        assert caught.value.retry_after == 1.0

    def test_5xx_is_retryable(self, receiver: WebhookReceiver) -> None:
        """500 is retryable."""
        receiver.script(500)
        with pytest.raises(RetryableSinkError, match="HTTP 500"):
            send(channel(receiver), message())

    def test_4xx_is_permanent(self, receiver: WebhookReceiver) -> None:
        """400 is permanent: the receiver will not take this body."""
        receiver.script(400)
        with pytest.raises(PermanentSinkError, match="HTTP 400"):
            send(channel(receiver), message())
