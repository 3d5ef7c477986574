"""Value types that cross the seams between pipeline stages.

The flow of one message: ingest (RawMessage in a RawBatch) → decode (FamilyBatch
columns) → rules (transitions) → alerts (AlertEvent) → outbox → sinks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec


class Family(enum.StrEnum):
    """The six device families sensord knows."""

    BIN = "bin"
    FIRE = "fire"
    LIFT = "lift"
    WATER = "water"
    CHARGER = "charger"
    WRISTBAND = "wristband"


class AlertStatus(enum.StrEnum):
    """One alert's lifecycle states; each transition is one AlertEvent."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


# The languages a receiver reads and a rule's text may be given in. A rule's `en` text
# (or the only one it gives) is what `AlertEvent.summary` carries, as before there were locales.
Locale = Literal["en", "zh-CN"]
LOCALES: tuple[Locale, ...] = ("en", "zh-CN")
DEFAULT_LOCALE: Locale = "en"


class Severity(enum.StrEnum):
    """How urgent an alert is. `critical` on a life-safety rule pages people now."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class RawMessage(msgspec.Struct, frozen=True, gc=False):
    """One MQTT message as received. `token` acknowledges it to the broker (None: QoS 0).

    A msgspec struct, not a frozen dataclass: one is built per message received, and a
    frozen dataclass's `__init__` (an `object.__setattr__` per field) took 0.6-0.7 us of
    the ~7 us a quiet message costs the whole pipeline; the struct is built in C. Its
    fields are text, bytes and numbers, never a cycle: the collector need not track it.
    """

    topic: str
    payload: bytes
    received_at: float
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """A message that could not be used, with a reason a person can act on."""

    topic: str
    payload: bytes
    received_at: float
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of one alert, as stored in the outbox and handed to sinks.

    `event_id` is fixed when the event is created and is the webhook id on every retry.
    `summary` and `description` are the rule's default text; `texts` holds (summary,
    description) per locale, rendered with the event, so a notification can be sent in
    its receiver's language without the rule at hand (it may have been reloaded since).
    """

    event_id: str
    fingerprint: str
    status: AlertStatus
    rule: str
    severity: Severity
    life_safety: bool
    family: str
    device_id: str
    community: str
    grid: str
    location: dict[str, Any]
    labels: dict[str, str]
    summary: str
    description: str
    readings: dict[str, Any]
    dispatch: tuple[str, ...]
    starts_at: float
    ends_at: float | None
    event_time: float
    repeat: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, tuple[str, str]] = field(default_factory=dict)

    def text(self, locale: str) -> tuple[str, str]:
        """(summary, description) in `locale`, or the default text when the event has none
        in it (an event queued by a sensord that did not render locales yet)."""
        return self.texts.get(locale, (self.summary, self.description))


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person a message is for: a grid worker, a family contact, a doctor.

    `chat` holds per-platform ids (`wecom`: user id, `feishu`: open id) for @mentions;
    chat robots mention by `phone` where the platform allows it (WeCom, DingTalk)."""

    name: str
    phone: str | None = None
    email: str | None = None
    chat: dict[str, str] = field(default_factory=dict)


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
    # Structured content beside the words: a work order's state change (workOrder, action,
    # state, by, at, …), for the webhook's body and InfluxDB's point.
    data: dict[str, Any] = field(default_factory=dict)
