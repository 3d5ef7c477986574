"""Operator commands on the daemon's state: `sensord outbox status|purge`, `sensord
deadletter export`.

They open the same SQLite outbox the daemon uses (WAL: safe beside a running daemon;
a purge waits for the daemon's current transaction).
"""

from __future__ import annotations

import argparse
import base64
import time

import orjson

from sensord._errors import ConfigError, OutboxError
from sensord._metrics import Metrics
from sensord._settings import Settings, load_settings
from sensord.dispatch import read_dispatch
from sensord.outbox import Outbox
from sensord.replay import write_recording
from sensord.sinks import InfluxSink, WebhookSink


def _configured_sinks(settings: Settings) -> list[str]:
    """The queue names the daemon's delivery workers use, one per configured sink."""
    names = []
    if settings.sinks.influx is not None:
        names.append(InfluxSink.name)
    if settings.sinks.webhook is not None:
        names.append(WebhookSink.name)
    return names


def _configured_channels(settings: Settings) -> list[str]:
    """The queue names of the dispatch file's channels (`receiver/type`)."""
    if settings.dispatch is None:
        return []
    loaded = read_dispatch(settings.input_path(settings.dispatch))
    return [name for r in loaded.spec.receivers for name in r.channel_sinks()]


def outbox_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        outbox = Outbox(
            settings.data_path(settings.outbox.path),
            _configured_sinks(settings),
            settings.outbox,
            Metrics(),
            channels=_configured_channels(settings),
        )
    except (ConfigError, OutboxError) as exc:
        print(f"error: {exc}")
        return 1
    try:
        if args.outbox_command == "status":
            return _status(outbox)
        return _purge(outbox, args.sink)
    finally:
        outbox.close()


def _status(outbox: Outbox) -> int:
    now = time.time()
    print(f"{'sink':<16}{'waiting':>10}{'life-safety':>13}{'oldest':>12}  state")
    for q in outbox.queues():
        age = f"{now - q.oldest:.0f} s" if q.oldest is not None else "-"
        state = "configured" if q.configured else "not configured: `sensord outbox purge --sink` drops it"
        print(f"{q.sink:<16}{q.waiting:>10}{q.life_safety:>13}{age:>12}  {state}")
    return 0


def _purge(outbox: Outbox, sink: str) -> int:
    queue = next((q for q in outbox.queues() if q.sink == sink), None)
    if queue is None or queue.waiting == 0:
        print(f"nothing waits for sink {sink!r}")
        return 0
    if queue.configured:
        print(f"error: sink {sink!r} is configured; remove it from the config first (or its events are lost)")
        return 1
    dropped = outbox.purge(sink)
    print(f"purged {dropped} deliveries of sink {sink!r} ({queue.life_safety} life-safety)")
    return 0


def deadletter_export(args: argparse.Namespace) -> int:
    """Write the rejected messages of dead-letter files (optionally of some reasons) as a
    recording that `sensord play` publishes again: after registering a device, its
    messages come back through the rules in their original order."""
    reasons = set(args.reason or ())
    messages: list[tuple[float, str, bytes]] = []
    skipped = 0
    for path in args.files:
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                print(f"warning: {path}:{n}: not a dead-letter record; skipped")
                continue
            if record.get("kind") != "reject" or (reasons and record.get("reason") not in reasons):
                continue
            if record.get("truncated"):
                skipped += 1  # only a prefix was kept: publishing it would be a different message
                continue
            text = record.get("payload")
            b64 = record.get("payload_b64", "")
            payload = text.encode() if isinstance(text, str) else base64.b64decode(b64)
            messages.append((float(record["received_at"]), str(record["topic"]), payload))
    messages.sort(key=lambda m: m[0])
    count = write_recording(args.out, messages)
    note = f" ({skipped} truncated records skipped)" if skipped else ""
    print(f"wrote {count} messages to {args.out}{note}")
    return 0
