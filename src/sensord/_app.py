"""Build a Daemon from Settings: the one place that knows every concrete stage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from sensord._daemon import Daemon
from sensord._errors import ConfigError
from sensord._http import HttpServer
from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import Registry, load_registry
from sensord._settings import BrokerSettings, Settings
from sensord.alerts import Engine
from sensord.channels import Channel
from sensord.decode import Decoder, FamilyBatch
from sensord.dispatch import Dispatcher
from sensord.dispatch._build import build_dispatch
from sensord.ingest import MqttSource
from sensord.outbox import Outbox
from sensord.rules import load_rules
from sensord.shard import HandoverGate, Shard, Split, instance_filters, split_registry
from sensord.sinks import (
    DeadLetter,
    DeadLetterForwarder,
    InfluxSink,
    Sink,
    WebhookSink,
    WorkOrderPoints,
    telemetry_lines,
)
from sensord.workorders import WorkOrder

if TYPE_CHECKING:
    # The API (FastAPI, Starlette, Jinja2, uvicorn) is imported only when `api.enabled`:
    # it is ~40 % of the daemon's import time and nothing before ready needs it.
    from sensord.api import Links

log = logging.getLogger("sensord")


def build_sinks(settings: Settings) -> list[Sink]:
    """The configured sinks; each gets a delivery worker and a column in the outbox."""
    sinks: list[Sink] = []
    if settings.sinks.influx is not None:
        sinks.append(
            InfluxSink(
                settings.sinks.influx,
                password=settings.secret("sinks.influx.password"),
                token=settings.secret("sinks.influx.token"),
            )
        )
    if settings.sinks.webhook is not None:
        secret = settings.secret("sinks.webhook.secret")
        assert secret is not None  # required by WebhookSettings
        sinks.append(WebhookSink(settings.sinks.webhook, secret=secret))
    return sinks


class TelemetryWriter:
    """Best-effort telemetry to InfluxDB through a bounded queue (oldest dropped when full).

    Telemetry is history, not alerts: it must never slow the ingest loop, so it is not
    written through the outbox and a dead InfluxDB only costs telemetry points.
    """

    def __init__(self, sink: InfluxSink, every_s: float, metrics: Metrics, maxsize: int = 256) -> None:
        self._sink = sink
        self._every = every_s
        self._metrics = metrics
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue(maxsize)
        self._last: dict[tuple[str, int], float] = {}

    def __call__(self, batch: FamilyBatch, registry: Registry) -> None:
        lines = telemetry_lines(batch, registry, every_s=self._every, last=self._last)
        if not lines:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._metrics.delivery_failures.labels("influx-telemetry", "dropped").inc()
        self._queue.put_nowait(lines)

    async def run(self) -> None:
        while True:
            lines = await self._queue.get()
            try:
                await self._sink.write_telemetry(lines)
            except Exception as exc:  # noqa: BLE001 - best effort by design; counted and logged
                self._metrics.delivery_failures.labels("influx-telemetry", "error").inc()
                log.warning("telemetry write failed", extra={"fields": {"error": str(exc)}})


def _links(settings: Settings) -> Links | None:
    secret = settings.secret("api.link_secret")
    if not settings.api.enabled or secret is None or settings.api.public_url is None:
        return None
    from sensord.api import Links  # noqa: PLC0415 - only with the API on (see TYPE_CHECKING above)

    return Links(secret.get_secret_value().encode(), settings.api.public_url, settings.api.link_ttl_s)


def _api(settings: Settings, daemon: Daemon, links: Links | None) -> Callable[[], Awaitable[None]]:
    """The API and console server as a supervised background task."""
    from sensord._office import Office  # noqa: PLC0415 - only with the API on (see above)
    from sensord.api import ROUTERS, ApiContext, Clients, create_app  # noqa: PLC0415
    from sensord.api._serve import serve  # noqa: PLC0415

    ctx = ApiContext(Office(daemon), Clients(settings.api, settings.secrets), links)
    app = create_app(ctx, list(ROUTERS))
    return lambda: serve(app, settings.api)


def _dispatch(  # noqa: PLR0913, PLR0917 - the stages dispatch is built from
    settings: Settings,
    registry: Registry,
    metrics: Metrics,
    sinks: Sequence[Sink],
    links: Links | None,
    holder: list[Outbox],
) -> tuple[Dispatcher | None, list[Channel]]:
    influx_sink = next((s for s in sinks if isinstance(s, InfluxSink)), None)

    def load_order(wo_id: str) -> WorkOrder | None:
        body = holder[0].work_orders.get(wo_id) if holder else None
        return WorkOrder.decode(body) if body is not None else None

    return build_dispatch(
        settings, registry, metrics, loader=load_order, links=links.url if links is not None else None,
        order_points=WorkOrderPoints(influx_sink) if influx_sink is not None else None,
    )  # fmt: skip


def session_broker(settings: Settings) -> BrokerSettings:
    """The broker settings of this instance's session: with a shard of index/count, the
    client id carries `-shard-<index>` (README: Several instances)."""
    if settings.shard is None:
        return settings.broker
    client_id = Shard(settings.shard).client_id(settings.broker.client_id)
    return settings.broker.model_copy(update={"client_id": client_id})


def _registry_share(settings: Settings, metrics: Metrics) -> tuple[Registry, Split | None]:
    """The devices this instance serves (with a shard, its part of the registry)."""
    path = settings.input_path(settings.registry)
    registry = load_registry(path)
    if settings.shard is None:
        metrics.shard_devices.set(len(registry.by_id))
        return registry, None
    shard = Shard(settings.shard)
    split = split_registry(registry, shard, source=str(path))
    if not split.communities:
        log.warning(
            "shard: this instance serves no community of the registry",
            extra={"fields": {"shard": shard.label}},
        )
    metrics.shard_devices.set(len(split.registry.by_id))
    metrics.shard_communities.set(len(split.communities))
    log.info(
        "shard: serving part of the registry",
        extra={"fields": {"shard": shard.label, "communities": len(split.communities),
                          "devices": len(split.registry.by_id), "others": len(split.foreign)}},
    )  # fmt: skip
    return split.registry, split


def _elsewhere(
    settings: Settings, split: Split | None, gate: HandoverGate
) -> Callable[[str], tuple[str, str] | None] | None:
    """Why a device of the registry is not processed here: another instance serves it
    (`not_this_shard`), or its community was handed over from here (`handed_over`: the
    new owner processes what is still queued for this instance's session). None without
    a shard: every device is served here."""
    if split is None or settings.shard is None:
        return None
    shard, foreign, gone = Shard(settings.shard), split.foreign, gate.handed_over

    def elsewhere(device_id: str) -> tuple[str, str] | None:
        community = foreign.get(device_id)
        if community is None:
            return None
        if community in gone:
            return "handed_over", f"community {community} was handed over to {gone[community]}"
        return "not_this_shard", (
            f"device {device_id} is in community {community}, which {shard.owner_of(community)} serves; "
            f"this is {shard.label} (check broker.subscriptions, or a subscription left in the session)"
        )

    return elsewhere


def _subscriptions(settings: Settings, split: Split | None) -> tuple[str, ...] | None:
    """With a shard, its communities' own topic filters (unless it subscribes to all);
    else the configured ones (None)."""
    return instance_filters(settings, split.communities) if split is not None else None


def _gate(
    settings: Settings, split: Split | None, outbox: Outbox, deadletter: DeadLetter, metrics: Metrics
) -> HandoverGate:
    """The handover gate, idle unless a handover is under way (README: Changing the number
    of instances); an instance without a shard may be handing its communities to sharded
    ones. ConfigError when this config must not run yet (a drain or a finish comes first)."""
    gate = HandoverGate(settings.broker.topic_template, settings.broker.ack_topic_template, metrics)
    served = set(split.communities) if split is not None else None
    gate.load(outbox.dispatch_state(), served=served)
    if (refused := gate.refusal(served)) is not None:
        outbox.close()
        deadletter.close()
        raise ConfigError(refused, source=str(settings.data_path(settings.outbox.path)))
    return gate


async def build_daemon(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    sinks: Sequence[Sink] | None = None,
) -> tuple[Daemon, HttpServer | None]:
    """Load registry and rules, open the outbox, start the HTTP listener; return the daemon."""
    metrics = metrics or Metrics()
    registry, split = _registry_share(settings, metrics)
    rules = load_rules(settings.input_path(settings.rules_dir), registry)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sink_list = list(sinks) if sinks is not None else build_sinks(settings)
    forwarder = None
    if settings.deadletter.mqtt_topic:
        forwarder = DeadLetterForwarder(settings.deadletter.mqtt_topic, metrics)
    deadletter = DeadLetter(
        settings.data_path(settings.deadletter.file),
        on_record=forwarder.offer if forwarder else None,
        max_bytes=settings.deadletter.max_bytes,
        keep=settings.deadletter.keep_files,
        max_payload_bytes=settings.deadletter.max_payload_bytes,
    )
    links = _links(settings)
    holder: list[Outbox] = []  # the outbox, once open: finished work orders are read from it
    dispatcher, channels = _dispatch(settings, registry, metrics, sink_list, links, holder)
    outbox = Outbox(
        settings.data_path(settings.outbox.path),
        [s.name for s in sink_list],
        settings.outbox,
        metrics,
        on_shed=deadletter.undeliverable,
        channels=[c.name for c in channels],
    )
    holder.append(outbox)
    if dispatcher is not None:
        store = outbox.silences
        # `sensord silence` writes from another process: re-read when the database changed.
        dispatcher.silence_source = lambda: store.all() if store.changed() else None
    for sink, waiting in sorted(outbox.orphaned.items()):
        log.warning(
            "the outbox holds deliveries for a sink no longer configured; kept until purged",
            extra={"fields": {"sink": sink, "waiting": waiting, "how": "sensord outbox purge --sink NAME"}},
        )
    telemetry = None
    influx = next((s for s in sink_list if isinstance(s, InfluxSink)), None)
    writer: TelemetryWriter | None = None
    if influx is not None and settings.sinks.influx is not None and settings.sinks.influx.write_telemetry:
        writer = TelemetryWriter(influx, settings.sinks.influx.telemetry_every_s, metrics)
        w = writer

        def telemetry(batch: FamilyBatch) -> None:
            w(batch, registry)

    gate = _gate(settings, split, outbox, deadletter, metrics)
    elsewhere = _elsewhere(settings, split, gate)
    pipeline = Pipeline(
        decoder=Decoder(
            registry,
            settings.decode,
            settings.broker.topic_template,
            elsewhere=elsewhere,
            skip_elsewhere=settings.shard is not None and settings.shard.subscribe == "all",
        ),
        gate=gate,
        engine=Engine(rules, registry, settings.alerts),
        ack_topic_template=settings.broker.ack_topic_template,
        ack_slack_s=settings.alerts.ack_slack_s,
        deadletter=deadletter,
        metrics=metrics,
        telemetry=telemetry,
        dispatcher=dispatcher,
    )
    source = MqttSource(
        session_broker(settings),
        settings.secret("broker.password"),
        metrics,
        settings.batch,
        # The filters of the last session, to unsubscribe those the config dropped.
        session_file=settings.state_dir / "mqtt-session.json",
        filters=_subscriptions(settings, split),
    )
    daemon = Daemon(
        settings,
        registry=registry,
        pipeline=pipeline,
        source=source,
        outbox=outbox,
        sinks=sink_list,
        deadletter=deadletter,
        metrics=metrics,
        channels=channels,
    )
    if writer is not None:
        daemon.background.append(("telemetry", writer.run))
    if forwarder is not None:
        # Published over the daemon's own broker connection.
        daemon.background.append(("deadletter-mqtt", lambda: forwarder.run(source)))
    if settings.api.enabled:
        daemon.background.append(("api", _api(settings, daemon, links)))
    http: HttpServer | None = None
    if settings.http.enabled:
        http = HttpServer(settings.http.host, settings.http.port, metrics, daemon.health)
        await http.start()
    log.info(
        "sensord configured",
        extra={
            "fields": {
                "devices": len(registry.by_id),
                "rules": rules.rule_count,
                "sinks": [s.name for s in sink_list],
            }
        },
    )
    return daemon, http
