"""Several instances sharing a district: which communities each serves, and the gate
that hands a community from one instance to another (README: Several instances)."""

from sensord.shard._assign import (
    MARKER_DEVICE,
    NATS_SESSION_ACK_LIMIT,
    Shard,
    Split,
    ack_filter,
    assignment,
    device_filters,
    instance_filters,
    jetstream_consumers,
    marker_topics,
    owner,
    shard_filters,
    split_registry,
    weight,
)
from sensord.shard._gate import FINISHED, PREFIX, GateRow, HandoverGate, marker_payload, row_key

__all__ = [
    "FINISHED",
    "MARKER_DEVICE",
    "NATS_SESSION_ACK_LIMIT",
    "PREFIX",
    "GateRow",
    "HandoverGate",
    "Shard",
    "Split",
    "ack_filter",
    "assignment",
    "device_filters",
    "instance_filters",
    "jetstream_consumers",
    "marker_payload",
    "marker_topics",
    "owner",
    "row_key",
    "shard_filters",
    "split_registry",
    "weight",
]
