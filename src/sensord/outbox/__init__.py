"""Outbox stage: alert events (and dispatch notices) on disk until every sink has them."""

from sensord.outbox._silences import SilenceRow, SilenceStore
from sensord.outbox._sqlite import Notice, Outbox, decode_event, decode_message, encode_event, encode_message

__all__ = [
    "Notice",
    "Outbox",
    "SilenceRow",
    "SilenceStore",
    "decode_event",
    "decode_message",
    "encode_event",
    "encode_message",
]
