"""Which instance serves which community: rendezvous hashing, and what follows from it
for one instance (its devices, its subscriptions, its broker session id).

Rendezvous (highest-random-weight) hashing: every (community, instance index) pair has
a weight, a stable hash of both; a community goes to the index with the highest weight.
The weight does not depend on the count, so going from n to n+1 instances moves only the
communities whose new instance outweighs their old one (about 1/(n+1) of them, all to the
new instance), and going from n+1 to n moves only the removed instance's communities.
BLAKE2b, not `hash()`: Python salts string hashes per process, and every instance (and
`sensord check`) must compute the same owner on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sensord._errors import ConfigError
from sensord._registry import Registry
from sensord._settings import Settings, ShardSettings
from sensord.decode import TopicTemplate

# The device id of handover markers (README: Changing the number of instances). No
# registered device may use it while a shard is configured.
MARKER_DEVICE = "_sensord-handover"

# nats-server refuses (SUBACK 0x80) a subscription that would take the mqtt.max_ack_pending
# summed over one MQTT session's JetStream consumers above this (2.9.10, mqtt.go).
NATS_SESSION_ACK_LIMIT = 65535


def weight(community: str, index: int) -> int:
    """The rendezvous weight of a community for one instance index (stable everywhere)."""
    digest = hashlib.blake2b(f"{community}\x1f{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(community: str, count: int) -> int:
    """The index (0..count-1) that serves this community among `count` instances."""
    return max(range(count), key=lambda i: weight(community, i))


def assignment(communities: Iterable[str], count: int) -> dict[str, int]:
    """community → instance index, for every community given."""
    return {c: owner(c, count) for c in sorted(set(communities))}


@dataclass(frozen=True)
class Shard:
    """One instance's share: which communities it serves, and how to name the others."""

    settings: ShardSettings

    @property
    def label(self) -> str:
        s = self.settings
        if s.communities is not None:
            return f"the instance of communities {', '.join(sorted(s.communities))}"
        return f"instance {s.index} of {s.count}"

    def owns(self, community: str) -> bool:
        s = self.settings
        if s.communities is not None:
            return community in s.communities
        assert s.index is not None
        assert s.count is not None
        return owner(community, s.count) == s.index

    def owner_of(self, community: str) -> str:
        """Who serves a community this instance does not serve, in words."""
        s = self.settings
        if s.communities is not None:
            return "another instance (it is not in this instance's shard.communities)"
        assert s.count is not None
        return f"instance {owner(community, s.count)} of {s.count}"

    def client_id(self, client_id: str) -> str:
        """The broker session id of this instance. With index/count it is the configured
        id with `-shard-<index>`, except for instance 0, which keeps it: a single instance
        becomes instance 0 of a shard with its session. The index, not the count, so an
        instance keeps its session (and what the broker queued for it) when the count
        changes."""
        if not self.settings.index:
            return client_id
        return f"{client_id}-shard-{self.settings.index}"


@dataclass(frozen=True)
class Split:
    """The registry cut for one instance: its own devices, and the others' by community."""

    registry: Registry
    # Device id → community, for devices other instances serve: a message from one is
    # rejected as not_this_shard with its owner named, not as unknown.
    foreign: Mapping[str, str]
    communities: tuple[str, ...]  # served here, sorted


def split_registry(registry: Registry, shard: Shard, *, source: str = "") -> Split:
    """This instance's part of the registry. Devices of other instances are not loaded
    into rule state; only their ids stay, to name their owner in a reject."""
    if MARKER_DEVICE in registry.by_id:
        raise ConfigError(f"device id {MARKER_DEVICE!r} is reserved for handover markers", source=source)
    mine, foreign, communities = {}, {}, set()
    for device_id, device in registry.by_id.items():
        community = device.entry.community
        if any(ch in community for ch in "/+#"):
            raise ConfigError(
                f"community {community!r} contains '/', '+' or '#': with a shard it is a topic level of "
                "a subscription",
                source=source,
                key=device_id,
            )
        if shard.owns(community):
            mine[device_id] = device.entry
            communities.add(community)
        else:
            foreign[device_id] = community
    return Split(Registry.from_entries(mine, registry.grids), foreign, tuple(sorted(communities)))


def narrow(topic_filter: str, level: int, community: str) -> str | None:
    """A subscription filter cut down to one community, whose name sits at `level` of the
    topic template; None if the filter can only take other communities' topics."""
    levels = topic_filter.split("/")
    for i, lv in enumerate(levels):
        if lv == "#":
            if i > level:
                break
            return "/".join([*levels[:i], *["+"] * (level - i), community, "#"])
        if i == level:
            if lv == "+":
                return "/".join([*levels[:i], community, *levels[i + 1 :]])
            return topic_filter if lv == community else None
    raise ConfigError(
        f"broker.subscriptions filter {topic_filter!r} does not reach the community level of "
        "broker.topic_template, so it cannot be narrowed to this instance's communities"
    )


def jetstream_consumers(filters: Iterable[str]) -> int:
    """The JetStream consumers nats-server makes for these QoS 1 filters: one each, two
    for a filter ending in '/#' ('a/#' also takes 'a' itself, a second NATS subject)."""
    return sum(2 if f.endswith("/#") else 1 for f in filters)


def community_level(template: str) -> int:
    levels = template.split("/")
    return levels.index("{community}")


def device_filters(settings: Settings, community: str) -> list[str]:
    """The device-topic filters that take one community's messages."""
    level = community_level(settings.broker.topic_template)
    out = [narrow(f, level, community) for f in settings.broker.subscriptions]
    return [f for f in out if f is not None]


def ack_filter(settings: Settings, community: str) -> str | None:
    """The dispatch side's ack filter for one community (None: no acks over MQTT)."""
    ack = settings.broker.ack_topic_template
    if ack is None:
        return None
    levels = ["+" if lv.startswith("{") else lv for lv in ack.split("/")]
    levels[ack.split("/").index("{community}")] = community
    return "/".join(levels)


def shard_filters(settings: Settings, communities: Iterable[str]) -> tuple[str, ...]:
    """Everything an instance subscribes to: its communities' device topics, then their
    acks (a community's subscriptions instead of one wildcard)."""
    names = sorted(communities)
    devices = [f for c in names for f in device_filters(settings, c)]
    acks = [a for c in names if (a := ack_filter(settings, c)) is not None]
    return tuple(dict.fromkeys([*devices, *acks]))


def instance_filters(settings: Settings, communities: Iterable[str]) -> tuple[str, ...] | None:
    """What an instance serving `communities` subscribes to: their own filters, or with
    `shard.subscribe: all` (and without a shard) the configured ones (None)."""
    if settings.shard is None or settings.shard.subscribe == "all":
        return None
    return shard_filters(settings, communities)


def marker_topics(settings: Settings, community: str) -> dict[str, str]:
    """The handover markers of one community, by tree (`devices`, `acks`): topics in that
    community's subscriptions that parse as a message of the device MARKER_DEVICE."""
    b = settings.broker
    out: dict[str, str] = {}
    template = TopicTemplate(b.topic_template)
    filters = device_filters(settings, community)
    if len(filters) != 1:
        raise ConfigError(f"community {community!r}: expected one device filter, got {filters}")
    t_levels = template.fill(community=community, family="shard", device_id=MARKER_DEVICE, kind="handover")
    levels = t_levels.split("/")
    for i, lv in enumerate(filters[0].split("/")):
        if lv == "#":
            break
        if lv != "+" and i < len(levels):
            levels[i] = lv
    topic = "/".join(levels)
    parts = template.parse(topic)
    if parts is None or parts.device_id != MARKER_DEVICE or parts.community != community:
        raise ConfigError(
            f"no handover marker topic both matches {filters[0]!r} and fits {b.topic_template!r}"
        )
    out["devices"] = topic
    if b.ack_topic_template is not None:
        out["acks"] = TopicTemplate(b.ack_topic_template).fill(
            community=community, family="shard", device_id=MARKER_DEVICE
        )
    return out
