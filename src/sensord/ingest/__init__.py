"""Ingest stage: the broker connection and batches of raw messages."""

from sensord.ingest._client import MqttSource
from sensord.ingest._connection import reconnect_delay, tls_context

__all__ = ["MqttSource", "reconnect_delay", "tls_context"]
