"""Ingest stage: the broker connection and batches of raw messages."""

from sensord.ingest._client import MqttSource
from sensord.ingest._connection import Failover, reconnect_delay, tls_context

__all__ = ["Failover", "MqttSource", "reconnect_delay", "tls_context"]
