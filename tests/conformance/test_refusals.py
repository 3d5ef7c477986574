"""What each broker refuses, and how sensord takes it: a wrong password, a publish to a
topic the user may not write, a subscription to one it may not read. MQTT 3.1.1 has a
refusal code only for CONNECT (and SUBACK 0x80); the brokers differ on the rest, and
each test states what its broker does."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sensord._errors import IngestError, PublishRefused
from tests.conformance.conftest import Restricted, running, take

pytestmark = pytest.mark.integration

# The CONNACK code each broker answers a wrong password with (sensord's words for it).
WRONG_PASSWORD = {
    "mosquitto": "not authorised",  # 5: Mosquitto 2.0 for any failed login
    "nats": "not authorised",  # 5
    "rabbitmq": "bad username or password",  # 4
}


class TestPassword:
    def test_wrong_password_is_refused_with_the_reason_and_retried(
        self, restricted: Restricted, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A wrong password: the broker's refusal is logged at ERROR in words (never the
        password), sensord keeps retrying with backoff and stays up, never connected;
        the right password then connects (so the refusal was the password's)."""
        wrong = "wrong-" + restricted.password

        async def body() -> tuple[int, bool, bool]:
            src = restricted.source(password=wrong)
            async with running(src, connected=False) as task:
                await asyncio.sleep(1.0)
                attempts, alive = src._generation, not task.done()
                assert not src.connected.is_set()
                assert src._metrics.connected._value.get() == 0
            good = restricted.source()
            async with running(good):
                return attempts, alive, good.connected.is_set()

        with caplog.at_level(logging.INFO, "sensord.ingest"):
            attempts, alive, connected = asyncio.run(body())
        refusals = [r for r in caplog.records if r.getMessage() == "broker refused the connection"]
        reasons = {r.fields["reason"] for r in refusals}  # type: ignore[attr-defined]
        assert reasons == {WRONG_PASSWORD[restricted.name]}
        assert all(r.levelno == logging.ERROR for r in refusals)
        assert attempts >= 2
        assert alive
        assert connected
        text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
        assert restricted.password not in text


# What four QoS 1 publishes in a row to a denied topic come to. MQTT 3.1.1 has no refusal
# for PUBLISH: a broker acknowledges or closes the connection (MQTT-3.3.5-2).
DENIED_PUBLISHES = {
    # PUBACK, then a close (Mosquitto 2.0.x; eclipse-mosquitto issue 2579): each returns,
    # and after three closes sensord refuses the topic.
    "mosquitto": ["returned", "returned", "returned", "refused"],
    # PUBACK, message dropped, connection kept.
    "nats": ["returned", "returned", "returned", "returned"],
    # A close, no PUBACK ("access refused" in its log): the first publish is resent until
    # the third close makes it PublishRefused, the rest fail at once.
    "rabbitmq": ["refused", "refused", "refused", "refused"],
}


class TestRefusedPublish:
    def test_publishes_to_a_denied_topic(
        self, restricted: Restricted, caplog: pytest.LogCaptureFixture
    ) -> None:
        """QoS 1 publishes to a topic the user may not write come out as each broker
        handles them (DENIED_PUBLISHES). Where the broker closes the connection on them,
        sensord refuses the topic (ERROR) instead of reconnecting for ever; on all three
        the connection then stays up and a message on an allowed topic makes the round
        trip."""

        async def body() -> tuple[list[str], int, list[bytes]]:
            src = restricted.source()
            async with running(src):
                outcomes = []
                for _ in range(4):
                    await asyncio.wait_for(src.connected.wait(), 20)
                    try:
                        await asyncio.wait_for(src.publish(restricted.topic("deny/x"), b"no"), 20)
                        outcomes.append("returned")
                    except PublishRefused:
                        outcomes.append("refused")
                    await asyncio.sleep(0.2)  # a close after the PUBACK comes now
                await asyncio.wait_for(src.connected.wait(), 20)
                generation = src._generation
                await asyncio.wait_for(src.publish(restricted.topic("conf/x"), b"yes"), 10)
                got = [m.payload for m in await take(src, 1)]
                await asyncio.sleep(0.5)
                return outcomes, src._generation - generation, got

        with caplog.at_level(logging.ERROR, "sensord.ingest"):
            outcomes, reconnects, got = asyncio.run(body())
        assert outcomes == DENIED_PUBLISHES[restricted.name]
        refused = "refused" in outcomes
        assert any("refuses a topic" in r.getMessage() for r in caplog.records) == refused
        assert reconnects == 0
        assert got == [b"yes"]


class TestRefusedSubscription:
    def test_subscription_to_a_denied_filter(self, restricted: Restricted) -> None:
        """A filter the user may not read. nats-server answers SUBACK 0x80 and RabbitMQ
        closes the connection instead of answering: both give SubscribeRefused naming
        the filter, rather than running deaf to it. Mosquitto 2.0 grants the filter and
        delivers nothing on it (its documented ACL behaviour): nothing to see."""

        async def body() -> str:
            src = restricted.source(subscriptions=("conf/#", "secret/#"))
            try:
                await asyncio.wait_for(src._connect(), 20)
            except IngestError as exc:
                return f"{type(exc).__name__}: {exc}"
            finally:
                await src.aclose()
            return "connected"

        outcome = asyncio.run(body())
        if restricted.name == "mosquitto":
            assert outcome == "connected"
        else:
            assert outcome.startswith("SubscribeRefused")
            assert repr(restricted.topic("secret/#")) in outcome
