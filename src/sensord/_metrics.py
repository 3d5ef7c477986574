"""Prometheus metrics, on a registry that is passed in (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Response times of work orders run from about a minute to days (README: KPIs).
RESPONSE_BUCKETS = (
    30.0, 60.0, 180.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 2 * 3600.0, 4 * 3600.0, 8 * 3600.0, 24 * 3600.0, 72 * 3600.0,
)  # fmt: skip


class Metrics:
    """Every metric sensord exports. One instance per daemon, built on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "sensord_messages_in", "Messages received, by family", ["family"], registry=r
        )
        self.rejects = Counter(
            "sensord_rejects", "Messages sent to dead-letter, by reason", ["reason"], registry=r
        )
        self.unknown_devices = Counter(
            "sensord_unknown_device_messages",
            "Messages from device ids missing from the registry",
            ["family"],
            registry=r,
        )
        self.late_readings = Counter(
            "sensord_late_readings",
            "Readings older than the device's last reading, not applied to rule state",
            ["family"],
            registry=r,
        )
        self.batches = Counter("sensord_batches", "Batches processed", registry=r)
        self.batch_size = Histogram(
            "sensord_batch_size",
            "Messages per batch",
            buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384),
            registry=r,
        )
        self.rule_evaluations = Counter(
            "sensord_rule_evaluations", "Rule evaluations (rule x reading)", ["family"], registry=r
        )
        self.transitions = Counter(
            "sensord_alert_transitions", "Alert transitions", ["rule", "state"], registry=r
        )
        self.outbox_depth = Gauge(
            "sensord_outbox_depth", "Alert events not yet delivered, by sink", ["sink"], registry=r
        )
        self.delivery_attempts = Counter(
            "sensord_delivery_attempts", "Delivery attempts, by sink", ["sink"], registry=r
        )
        self.delivery_failures = Counter(
            "sensord_delivery_failures",
            "Failed deliveries, by sink and kind",
            ["sink", "kind"],
            registry=r,
        )
        self.delivered = Counter("sensord_delivered", "Alert events delivered, by sink", ["sink"], registry=r)
        self.ingest_lag = Gauge(
            "sensord_ingest_lag_seconds",
            "Receive time minus reading time of the newest reading in the last batch",
            registry=r,
        )
        self.connected = Gauge("sensord_broker_connected", "1 while connected", registry=r)
        self.broker_node = Gauge(
            "sensord_broker_node",
            "1 for the broker node (host:port) of the connection last made, 0 for the others listed",
            ["broker"],
            registry=r,
        )
        self.broker_failovers = Counter(
            "sensord_broker_failovers",
            "Connections made to a different broker node than the one before",
            registry=r,
        )
        self.broker_connect_failures = Counter(
            "sensord_broker_connect_failures",
            "Connection attempts that failed or were refused, by broker node (host:port)",
            ["broker"],
            registry=r,
        )
        self.background_failures = Counter(
            "sensord_background_failures",
            "Failures of secondary tasks (telemetry, dead-letter forwarding), each restarted",
            ["task"],
            registry=r,
        )
        self.oversized_packets = Counter(
            "sensord_oversized_packets",
            "PUBLISH packets over broker.max_packet_bytes (start kept for the dead-letter, rest dropped)",
            registry=r,
        )
        self.rule_reloads = Counter("sensord_rule_reloads", "Rule reloads, by result", ["result"], registry=r)
        self.outbox_shed = Counter(
            "sensord_outbox_shed",
            "Ordinary deliveries dropped (to dead-letter) because a sink's queue was over its bound",
            ["sink"],
            registry=r,
        )
        self.stale_acks = Counter(
            "sensord_stale_acks",
            "Acknowledgements of an earlier alert than the one open, so not applied to it",
            ["rule"],
            registry=r,
        )
        self.template_errors = Counter(
            "sensord_template_errors",
            "Alert events whose summary/description template could not be filled (sent with a plain text)",
            ["rule"],
            registry=r,
        )
        self.notices = Counter(
            "sensord_notices",
            "Dispatch messages stored for a receiver's channels (one per channel, or per person for SMS)",
            ["receiver"],
            registry=r,
        )
        self.unreachable = Counter(
            "sensord_notices_unreachable",
            "Alerts a receiver's per-person channel (SMS) could not send: nobody with a phone to send to",
            ["receiver"],
            registry=r,
        )
        self.inhibited = Counter(
            "sensord_notices_inhibited",
            "Alerts held back by an inhibit rule (sent later if they still fire when it lets go)",
            ["rule"],
            registry=r,
        )
        self.silenced = Counter(
            "sensord_notices_silenced",
            "Alerts held by a silence (sent later if they still fire when it ends)",
            ["rule"],
            registry=r,
        )
        self.silenced_life_safety = Counter(
            "sensord_silenced_life_safety",
            "Life-safety alerts held by a silence made for them (with the explicit flag and a reason)",
            registry=r,
        )
        self._work_order_metrics(r)
        self._shard_metrics(r)

    def _shard_metrics(self, r: CollectorRegistry) -> None:
        """Several instances sharing a district (README: Several instances)."""
        self.shard_devices = Gauge(
            "sensord_shard_devices",
            "Devices of the registry this instance serves (all without a shard)",
            registry=r,
        )
        self.shard_communities = Gauge(
            "sensord_shard_communities", "Communities this instance serves", registry=r
        )
        self.shard_skipped = Counter(
            "sensord_shard_skipped",
            "Messages of another instance's communities, acknowledged and left to it (shard.subscribe: all)",
            registry=r,
        )
        self.handed_over = Counter(
            "sensord_shard_handed_over",
            "Messages of a community in handover left to its other owner (give: after the marker, "
            "take: before it) and stray markers",
            ["side"],
            registry=r,
        )

    def _work_order_metrics(self, r: CollectorRegistry) -> None:
        """Response times the community is judged on, from the desk's changes (event time)."""
        team = ["community", "grid", "team", "rule"]  # team: the receiver first sent the job
        self.work_order_accept = Histogram(
            "sensord_work_order_accept_seconds",
            "Dispatch to first acceptance of a work order (event time)",
            team,
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.work_order_done = Histogram(
            "sensord_work_order_done_seconds",
            "Dispatch to the first report of a work order done (event time)",
            team,
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.work_order_breaches = Counter(
            "sensord_work_order_sla_breaches",
            "SLA deadlines passed, by kind (accept, done)",
            ["community", "kind", "rule"],
            registry=r,
        )
        self.work_orders = Counter(
            "sensord_work_orders",
            "Work-order state changes, by the state entered",
            ["community", "state"],
            registry=r,
        )
        self.work_orders_open = Gauge(
            "sensord_work_orders_open",
            "Work orders someone is expected to act on: dispatched, accepted, rejected or reopened",
            registry=r,
        )
