"""Alerts stage: rule transitions → alert lifecycle events (pending → firing → resolved)."""

from sensord.alerts._engine import Engine
from sensord.alerts._events import TEMPLATE_ERROR, event_id, fingerprint
from sensord.alerts._model import ActiveAlert, EngineResult, ReloadDiff
from sensord.alerts._persist import SnapshotState

__all__ = [
    "TEMPLATE_ERROR",
    "ActiveAlert", "Engine", "EngineResult", "ReloadDiff", "SnapshotState", "event_id", "fingerprint",
]
