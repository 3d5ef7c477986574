"""Outbox stage: alert events on disk until every sink has them."""

from sensord.outbox._sqlite import Outbox, decode_event, encode_event

__all__ = ["Outbox", "decode_event", "encode_event"]
