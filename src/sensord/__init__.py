"""sensord: telemetry and alerting daemon for neighbourhood sensors."""

from sensord._errors import (
    ConfigError,
    ConnectRefused,
    DecodeError,
    IngestError,
    OutboxError,
    PermanentSinkError,
    RetryableSinkError,
    RuleError,
    SensordError,
    SinkError,
)
from sensord._secret_url import SecretUrl
from sensord._settings import Settings, load_settings
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage, Reject, Severity

__version__ = "0.1.0"

__all__ = [
    "AlertEvent",
    "AlertStatus",
    "ConfigError",
    "ConnectRefused",
    "DecodeError",
    "Family",
    "IngestError",
    "OutboxError",
    "PermanentSinkError",
    "RawMessage",
    "Reject",
    "RetryableSinkError",
    "RuleError",
    "SecretUrl",
    "SensordError",
    "Settings",
    "Severity",
    "SinkError",
    "__version__",
    "load_settings",
]
