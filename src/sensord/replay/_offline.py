"""Offline replay: a stream of recorded messages through decode and the rule set, with
no broker and no sinks. The same Pipeline as the daemon runs it, in event time, so the
alert events (and their ids) are the ones the live daemon would produce."""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import Registry
from sensord._settings import Settings
from sensord._types import AlertEvent, AlertStatus, RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.dispatch import Dispatcher
from sensord.dispatch._group import Group
from sensord.outbox import Notice
from sensord.rules import RuleSet
from sensord.sinks import DeadLetter


@dataclass
class ReplayResult:
    """What a replay produced: the alert events in order, and counts."""

    events: list[AlertEvent] = field(default_factory=list)
    messages: int = 0
    accepted: int = 0
    rejects: collections.Counter[str] = field(default_factory=collections.Counter)
    # With a dispatcher: each message for a receiver's channel (`at`: the event time it
    # was made at), and the groups still waiting at the end.
    notices: list[Notice] = field(default_factory=list)
    waiting: list[Group] = field(default_factory=list)

    def notifications(self) -> list[AlertEvent]:
        """The events a dispatch webhook would get by default (firing and resolved)."""
        return [e for e in self.events if e.status is not AlertStatus.PENDING]


def replay(  # noqa: PLR0913 - the inputs of a replay are these
    messages: Iterable[RawMessage],
    *,
    registry: Registry,
    rules: RuleSet,
    settings: Settings,
    deadletter: Path | None = None,
    on_batch: Callable[[int], None] | None = None,
    dispatcher: Dispatcher | None = None,
) -> ReplayResult:
    """Run messages through the pipeline in batches of `settings.batch.max_size`."""
    result = ReplayResult()

    def count(record: dict[str, Any]) -> None:
        result.rejects[str(record.get("reason"))] += 1

    dead = DeadLetter(deadletter or Path(os.devnull), on_record=count)
    pipeline = Pipeline(
        decoder=Decoder(registry, settings.decode, settings.broker.topic_template),
        engine=Engine(rules, registry, settings.alerts),
        ack_topic_template=settings.broker.ack_topic_template,
        ack_slack_s=settings.alerts.ack_slack_s,
        deadletter=dead,
        metrics=Metrics(),
        dispatcher=dispatcher,
    )
    try:
        it = iter(messages)
        while batch := list(itertools.islice(it, settings.batch.max_size)):
            ev = pipeline.evaluate(batch)
            result.events.extend(ev.events)
            result.notices.extend(ev.notices)
            result.messages += len(batch)
            result.accepted += ev.accepted
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        dead.close()
    if dispatcher is not None:
        result.waiting = list(dispatcher.groups.open.values())
    return result
