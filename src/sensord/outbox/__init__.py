"""Outbox stage: alert events (and dispatch notices) on disk until every sink has them."""

from sensord.outbox._chain import CommitChain
from sensord.outbox._silences import SilenceRow, SilenceStore
from sensord.outbox._sqlite import Notice, Outbox, decode_event, decode_message, encode_event, encode_message
from sensord.outbox._workorders import AuditEntry, Filter, WorkOrderRow, WorkOrderStore, read_only_store

__all__ = [
    "AuditEntry",
    "CommitChain",
    "Filter",
    "Notice",
    "Outbox",
    "SilenceRow",
    "SilenceStore",
    "WorkOrderRow",
    "WorkOrderStore",
    "decode_event",
    "decode_message",
    "encode_event",
    "encode_message",
    "read_only_store",
]
