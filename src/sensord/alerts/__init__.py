"""Alerts stage: rule transitions → alert lifecycle events (pending → firing → resolved)."""

from sensord.alerts._engine import ActiveAlert, Engine, EngineResult, ReloadDiff
from sensord.alerts._events import TEMPLATE_ERROR, event_id, fingerprint

__all__ = [
    "TEMPLATE_ERROR",
    "ActiveAlert", "Engine", "EngineResult", "ReloadDiff", "event_id", "fingerprint",
]
