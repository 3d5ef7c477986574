"""Topic template: where community, family and device id sit in a topic."""

from __future__ import annotations

from dataclasses import dataclass

_NAMES = ("community", "family", "device_id", "kind")


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The parts of one topic; community and kind are empty when the template lacks them."""

    community: str
    family: str
    device_id: str
    kind: str


class TopicTemplate:
    """`sensord/{community}/{family}/{device_id}/{kind}` → positions, precomputed once.

    Parsing is a split and four index lookups: it runs once per message.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        levels = template.split("/")
        self._n = len(levels)
        self._literal = {i: lv for i, lv in enumerate(levels) if not lv.startswith("{")}
        pos = {lv[1:-1]: i for i, lv in enumerate(levels) if lv.startswith("{")}
        unknown = set(pos) - set(_NAMES)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in topic template")
        self._pos = tuple(pos.get(n, -1) for n in _NAMES)
        # The subscription filter that takes every topic of the template, and its literal
        # start: the cheap test of whether a topic can be one of ours.
        self.filter = "/".join("+" if lv.startswith("{") else lv for lv in levels)
        literal = levels[: min(pos.values(), default=self._n)]
        self.prefix = "/".join(literal) + "/" if literal else ""

    def fill(self, **parts: str) -> str:
        """The topic with these parts (a part not given is `x`)."""
        return "/".join(
            parts.get(lv[1:-1], "x") if lv.startswith("{") else lv for lv in self.template.split("/")
        )

    def parse(self, topic: str) -> TopicParts | None:
        """The parts of `topic`, or None when it does not fit the template."""
        levels = topic.split("/")
        if len(levels) != self._n:
            return None
        for i, lit in self._literal.items():
            if levels[i] != lit:
                return None
        c, f, d, k = (levels[p] if p >= 0 else "" for p in self._pos)
        if not f or not d:
            return None
        return TopicParts(c, f, d, k)

    def format(self, *, community: str, family: str, device_id: str, kind: str) -> str:
        """The topic a device with these parts publishes to."""
        return self.template.format(community=community, family=family, device_id=device_id, kind=kind)


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Does an MQTT subscription filter (with + and #) match this topic?"""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, lv in enumerate(f):
        if lv == "#":
            return True
        if i >= len(t) or (lv not in ("+", t[i])):
            return False
    return len(f) == len(t)
