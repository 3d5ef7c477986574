"""Alerts stage: rule transitions → alert lifecycle events (pending → firing → resolved)."""

from sensord.alerts._engine import ActiveAlert, Engine, EngineResult, ReloadDiff
from sensord.alerts._events import event_id, fingerprint

__all__ = ["ActiveAlert", "Engine", "EngineResult", "ReloadDiff", "event_id", "fingerprint"]
