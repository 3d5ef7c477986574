"""From alert events to notices: route each event, resolve its people, write the words,
and make one message per channel (per person, for a channel that texts each phone).

Runs inside the batch, before the commit: the notices are stored in the same outbox
transaction as the events that caused them, so a notification is durable before the
MQTT message behind it is acknowledged, and a batch processed again after a crash makes
the same message ids (they are derived from the event id), which the outbox ignores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

from sensord._metrics import Metrics
from sensord._registry import Registry
from sensord._types import AlertEvent, AlertStatus
from sensord.channels import Message, Recipient
from sensord.dispatch._recipients import recipients
from sensord.dispatch._render import Text, render
from sensord.dispatch._routing import Router, alert_labels
from sensord.dispatch._spec import DispatchSpec
from sensord.outbox import Notice


def message_id(event_id: str, sink: str, person: str = "") -> str:
    """Stable per (event, channel, person): the same after a crash and on every retry."""
    return hashlib.sha256(f"{event_id}\x1f{sink}\x1f{person}".encode()).hexdigest()[:24]


class Dispatcher:
    """Routes a batch's events to notices for the receivers' channels."""

    def __init__(
        self,
        spec: DispatchSpec,
        registry: Registry,
        metrics: Metrics,
        *,
        per_recipient: Mapping[str, bool],
        builtin: tuple[str, ...] = (),
    ) -> None:
        """`per_recipient`: by channel queue name (Receiver.channel_sinks), whether that
        channel sends one message per person (SMS)."""
        self.router = Router(spec, builtin=builtin)
        self._receivers = {r.name: r for r in spec.receivers}
        self._sinks = {r.name: r.channel_sinks() for r in spec.receivers}
        self._per_recipient = per_recipient
        self._registry = registry
        self._metrics = metrics
        self._tz = ZoneInfo(spec.timezone)

    def notices(self, events: Sequence[AlertEvent]) -> list[Notice]:
        out: list[Notice] = []
        for e in events:
            if e.status not in (AlertStatus.FIRING, AlertStatus.RESOLVED):
                continue
            for routed in self.router.route(alert_labels(e), e.dispatch):
                receiver = self._receivers.get(routed.receiver)
                if receiver is None:  # a built-in receiver: sinks.webhook has every event
                    continue
                if e.status is AlertStatus.RESOLVED and not receiver.send_resolved:
                    continue
                out.extend(self._for_receiver(e, routed.receiver))
        return out

    def _for_receiver(self, e: AlertEvent, name: str) -> list[Notice]:
        receiver = self._receivers[name]
        people = recipients(
            receiver, device_id=e.device_id, community=e.community, grid=e.grid, registry=self._registry
        )
        words = render(
            e, locale=receiver.locale, tz=self._tz, sensitive=receiver.sensitive, answer_id=e.fingerprint
        )
        out: list[Notice] = []
        for sink in self._sinks[name]:
            if not self._per_recipient.get(sink, False):
                out.append(Notice(sink, self._message(e, (name, sink), words, people)))
                continue
            phones = [p for p in people if p.phone]
            if not phones:
                self._metrics.unreachable.labels(name).inc()
            out.extend(
                Notice(
                    sink,
                    self._message(e, (name, sink), words, (p,), p.phone or ""),
                )
                for p in phones
            )
        self._metrics.notices.labels(name).inc(len(out))
        return out

    @staticmethod
    def _message(
        e: AlertEvent, sink: tuple[str, str], words: Text, people: Sequence[Recipient], person: str = ""
    ) -> Message:
        receiver, sink_name = sink
        return Message(
            id=message_id(e.event_id, sink_name, person),
            receiver=receiver,
            severity=e.severity,
            life_safety=e.life_safety,
            title=words.title,
            text=words.text,
            markdown=words.markdown,
            recipients=tuple(people),
            ack=e.fingerprint,
        )
