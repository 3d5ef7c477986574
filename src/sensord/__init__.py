"""sensord: telemetry and alerting daemon for neighbourhood sensors."""

from sensord._errors import (
    ConfigError,
    ConnectRefused,
    DecodeError,
    IngestError,
    OutboxError,
    PermanentSinkError,
    PublishRefused,
    RetryableSinkError,
    RuleError,
    SensordError,
    SinkError,
    SubscribeRefused,
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
    "PublishRefused",
    "RawMessage",
    "Reject",
    "RetryableSinkError",
    "RuleError",
    "SecretUrl",
    "SensordError",
    "Settings",
    "Severity",
    "SinkError",
    "SubscribeRefused",
    "__version__",
    "load_settings",
]
