"""Test helpers shipped with sensord, so operators and field testers can test too:
real servers on free ports, an in-memory source, a webhook receiver that verifies."""

from sensord.sinks import MemorySink
from sensord.testing._memory import MemorySource
from sensord.testing._servers import (
    InfluxServer,
    MosquittoServer,
    Received,
    VictoriaMetricsServer,
    WebhookReceiver,
    free_port,
    start_influxdb_v1,
    start_mosquitto,
    start_victoria_metrics,
)

__all__ = [
    "InfluxServer",
    "MemorySink",
    "MemorySource",
    "MosquittoServer",
    "Received",
    "VictoriaMetricsServer",
    "WebhookReceiver",
    "free_port",
    "start_influxdb_v1",
    "start_mosquitto",
    "start_victoria_metrics",
]
