"""The daemon's dispatch stage from its settings: the dispatch file read and checked, each
receiver's channels built under their queue names, and the Dispatcher that feeds them."""

from __future__ import annotations

from collections.abc import Callable

from sensord._errors import ConfigError
from sensord._metrics import Metrics
from sensord._registry import Registry
from sensord._settings import Settings
from sensord.channels import Channel, build_channel, channel_settings, secret_refs
from sensord.dispatch._notify import Dispatcher
from sensord.dispatch._spec import LoadedDispatch, read_dispatch
from sensord.workorders import Desk, WorkOrder


def builtin_receivers(settings: Settings) -> tuple[str, ...]:
    """Receivers that need no definition: today's sinks.webhook, named `webhook`."""
    return ("webhook",) if settings.sinks.webhook is not None else ()


def build_channels(loaded: LoadedDispatch, settings: Settings) -> list[Channel]:
    """Every receiver's channels, validated (ConfigError with file:line) and built."""
    out: list[Channel] = []
    for i, receiver in enumerate(loaded.spec.receivers):
        for j, (spec, name) in enumerate(zip(receiver.channels, receiver.channel_sinks(), strict=True)):
            where = loaded.where("receivers", i, "channels", j)
            parsed = channel_settings(spec.model_dump(), where=f"{where} ({name})")
            out.append(build_channel(name, parsed, config_dir=settings.config_dir))
    return out


def check_channels(loaded: LoadedDispatch, settings: Settings) -> list[str]:
    """Every channel entry's problems (unknown type, bad setting, unreadable secret) as
    `file:line: reason` lines, without building a channel."""
    problems: list[str] = []
    for i, receiver in enumerate(loaded.spec.receivers):
        for j, (spec, name) in enumerate(zip(receiver.channels, receiver.channel_sinks(), strict=True)):
            where = f"{loaded.where('receivers', i, 'channels', j)} ({name})"
            try:
                parsed = channel_settings(spec.model_dump(), where=where)
                for key, ref in secret_refs(parsed).items():
                    try:
                        ref.read(settings.config_dir)
                    except ValueError as exc:
                        raise ConfigError(str(exc), source=where, key=key) from None
            except ConfigError as exc:
                problems.append(str(exc))
    return problems


def build_desk(loaded: LoadedDispatch, loader: Callable[[str], WorkOrder | None] | None = None) -> Desk:
    """The work orders' desk with the dispatch file's policies and deadlines."""
    spec = loaded.spec
    sla = {str(k): v for k, v in spec.sla.items()}
    return Desk(spec.escalations, sla, spec.work_orders.close_after, loader=loader)


def build_dispatch(  # noqa: PLR0913 - the dispatch stage's collaborators
    settings: Settings,
    registry: Registry,
    metrics: Metrics,
    *,
    loader: Callable[[str], WorkOrder | None] | None = None,
    links: Callable[[str, float], str] | None = None,
    order_points: Channel | None = None,
) -> tuple[Dispatcher | None, list[Channel]]:
    """The dispatcher and its channels, or (None, []) when no dispatch file is set.
    `loader` reads a finished work order back from the outbox; `links` makes one-tap
    links; `order_points` takes every work-order change (InfluxDB)."""
    if settings.dispatch is None:
        return None, []
    loaded = read_dispatch(settings.input_path(settings.dispatch))
    channels = build_channels(loaded, settings)
    if order_points is not None:
        channels.append(order_points)
    dispatcher = Dispatcher(
        loaded.spec,
        registry,
        metrics,
        per_recipient={c.name: c.per_recipient for c in channels},
        builtin=builtin_receivers(settings),
        desk=build_desk(loaded, loader),
        links=links,
        order_sink=order_points.name if order_points is not None else None,
    )
    return dispatcher, channels
