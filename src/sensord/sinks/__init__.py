"""Sinks stage: where alert events go (InfluxDB, the dispatch webhook, dead-letter)."""

from sensord.sinks._base import Sink
from sensord.sinks._deadletter import DeadLetter
from sensord.sinks._deadletter_mqtt import DeadLetterForwarder
from sensord.sinks._delivery import backoff, deliver_forever
from sensord.sinks._http import classify, retry_after, transport_error
from sensord.sinks._influx import InfluxSink, alert_line, line, telemetry_lines
from sensord.sinks._memory import MemorySink
from sensord.sinks._webhook import WebhookSink, sign, verify, webhook_body

__all__ = [
    "DeadLetter",
    "DeadLetterForwarder",
    "InfluxSink",
    "MemorySink",
    "Sink",
    "WebhookSink",
    "alert_line",
    "backoff",
    "classify",
    "deliver_forever",
    "line",
    "retry_after",
    "sign",
    "telemetry_lines",
    "transport_error",
    "verify",
    "webhook_body",
]
