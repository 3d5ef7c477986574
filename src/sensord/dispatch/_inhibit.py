"""Inhibition, Alertmanager's way, without losing what it holds back.

While a source alert fires (a community's gateway is down; a fire alarm in a building),
ordinary target alerts that share its `equal` labels (that community's per-device
no-data alerts; that building's lift warnings) are not sent: they are symptoms of the
source. Alertmanager drops them; sensord holds each one, and once no source holds it any
more and it still fires, it is sent as usual. A target that ends while held was never
told and stays untold. Life-safety alerts are never held (`sensord check` refuses a rule
that could), and the state is committed with the batch like the groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from sensord._types import AlertEvent, AlertStatus
from sensord.dispatch._spec import InhibitRule, Matcher
from sensord.outbox import decode_event, encode_event


def _matches(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


class Inhibitor:
    """Which alerts are firing sources, and which targets are held, per inhibit rule."""

    def __init__(self, rules: tuple[InhibitRule, ...]) -> None:
        self.rules = rules
        self.sources: dict[str, dict[str, str]] = {}  # fingerprint -> labels, while firing
        self.held: dict[str, AlertEvent] = {}  # fingerprint -> latest firing event held back
        self._dirty: set[str] = set()
        # Held alerts can only go free when a source stops firing: until one does, the
        # per-batch check of every held alert is skipped.
        self._source_ended = False

    def observe(self, event: AlertEvent, labels: Mapping[str, str]) -> None:
        """Keep the set of firing sources up to date with one event."""
        if not any(_matches(r.source_matchers, labels) for r in self.rules):
            return
        fp = event.fingerprint
        if event.status is AlertStatus.FIRING:
            self.sources[fp] = dict(labels)
        elif self.sources.pop(fp, None) is not None:
            self._source_ended = True
        self._dirty.add(f"src\x1f{fp}")

    def holding(self, event: AlertEvent, labels: Mapping[str, str]) -> InhibitRule | None:
        """The rule that holds this alert back now, if any (never a life-safety one)."""
        if event.life_safety:
            return None
        for rule in self.rules:
            if not _matches(rule.target_matchers, labels):
                continue
            for fp, src in self.sources.items():
                if fp != event.fingerprint and all(src.get(k, "") == labels.get(k, "") for k in rule.equal):
                    return rule
        return None

    def hold(self, event: AlertEvent) -> None:
        self.held[event.fingerprint] = event
        self._dirty.add(f"held\x1f{event.fingerprint}")

    def drop(self, event: AlertEvent) -> bool:
        """A held alert ended: it was never told. True if it was held."""
        if self.held.pop(event.fingerprint, None) is None:
            return False
        self._dirty.add(f"held\x1f{event.fingerprint}")
        return True

    def released(self, labels_of: Mapping[str, Mapping[str, str]]) -> list[AlertEvent]:
        """Held alerts no source holds any more (they still fire: they are sent now)."""
        if not self._source_ended:
            return []
        self._source_ended = False
        free = [e for fp, e in self.held.items() if not self._held_by_any(e, labels_of[fp])]
        for e in free:
            del self.held[e.fingerprint]
            self._dirty.add(f"held\x1f{e.fingerprint}")
        return free

    def _held_by_any(self, event: AlertEvent, labels: Mapping[str, str]) -> bool:
        return self.holding(event, labels) is not None

    def changes(self) -> dict[str, bytes | None]:
        rows: dict[str, bytes | None] = {}
        for key in self._dirty:
            kind, fp = key.split("\x1f", 1)
            if kind == "src":
                rows[f"inhibit\x1f{key}"] = orjson.dumps(self.sources[fp]) if fp in self.sources else None
            else:
                rows[f"inhibit\x1f{key}"] = encode_event(self.held[fp]) if fp in self.held else None
        self._dirty.clear()
        return rows

    def load(self, key: str, body: bytes) -> None:
        self._source_ended = True  # check the restored held alerts once
        kind, fp = key.split("\x1f", 1)
        if kind == "src":
            self.sources[fp] = orjson.loads(body)
        else:
            self.held[fp] = decode_event(body)
