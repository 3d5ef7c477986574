"""Ingest stage: the broker connection and batches of raw messages."""

from sensord.ingest._client import MqttSource
from sensord.ingest._connection import Failover, reconnect_delay, tls_context
from sensord.ingest._packets import COMPILED as SCANNER_COMPILED
from sensord.ingest._packets import parser_line

__all__ = ["SCANNER_COMPILED", "Failover", "MqttSource", "parser_line", "reconnect_delay", "tls_context"]
