"""Sinks stage: where alert events go (InfluxDB, the dispatch webhook, dead-letter)."""

from sensord.sinks._base import Sink
from sensord.sinks._deadletter import DeadLetter
from sensord.sinks._deadletter_mqtt import DeadLetterForwarder
from sensord.sinks._delivery import backoff, deliver_channel_forever, deliver_forever
from sensord.sinks._http import classify, retry_after, transport_error
from sensord.sinks._influx import (
    WORK_ORDER_QUEUE,
    InfluxSink,
    WorkOrderPoints,
    alert_line,
    line,
    telemetry_lines,
)
from sensord.sinks._memory import MemorySink
from sensord.sinks._webhook import WebhookSink, sign, verify, webhook_body

__all__ = [
    "WORK_ORDER_QUEUE",
    "DeadLetter",
    "DeadLetterForwarder",
    "InfluxSink",
    "MemorySink",
    "Sink",
    "WebhookSink",
    "WorkOrderPoints",
    "alert_line",
    "backoff",
    "classify",
    "deliver_channel_forever",
    "deliver_forever",
    "line",
    "retry_after",
    "sign",
    "telemetry_lines",
    "transport_error",
    "verify",
    "webhook_body",
]
