"""Settings: one YAML file, validated into frozen pydantic models, passed in everywhere.

Secrets are never inline: a secret is a reference to a file, or to a systemd credential
(`$CREDENTIALS_DIRECTORY/<name>`, from `LoadCredential=`). The value is read once at
load time into a `SecretStr`, so it never shows up in a repr or a log line. Sink URLs
are written inline but may carry a token, so they are `SecretUrl`s: shown redacted.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

# The broker section and the base models live in their own modules; their names are
# re-exported here, where the rest of sensord has always taken its settings from.
from sensord._broker_settings import BrokerHost, BrokerSettings, ReconnectSettings, TlsSettings, WillSettings
from sensord._errors import ConfigError
from sensord._secret_url import SecretUrl
from sensord._settings_base import Frozen as _Frozen
from sensord._settings_base import SecretRef, TimeZoneName

__all__ = [
    "WEBHOOK_SECRET_PREFIX",
    "AlertSettings",
    "ApiClient",
    "ApiSettings",
    "BatchSettings",
    "BrokerHost",
    "BrokerSettings",
    "DeadLetterSettings",
    "DecodeSettings",
    "DeliverySettings",
    "HttpSettings",
    "InfluxSettings",
    "LogSettings",
    "OutboxSettings",
    "ReconnectSettings",
    "SecretRef",
    "Settings",
    "ShardSettings",
    "SinkSettings",
    "TimeZoneName",
    "TlsSettings",
    "WebhookSettings",
    "WillSettings",
    "load_settings",
    "parse_settings",
    "signing_key",
]


class BatchSettings(_Frozen):
    """How a batch is cut: whichever of size or wait is reached first."""

    max_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    # While the loop is behind the stream, evaluate the next batch while one commits
    # (Daemon._process_loop). Off by default: the broker failover benchmark with daemon
    # kills lost one SOS notification in 2 of 6 runs with it on (0 of 3 without), not
    # yet explained (README, design notes).
    overlap_commits: bool = False


class DecodeSettings(_Frozen):
    """Limits applied to every payload before rules see it."""

    max_payload_bytes: Annotated[int, Field(ge=64)] = 8192
    # Readings stamped further ahead of their receive time than this are rejected: a
    # device with a wrong clock must not drag the event-time clock into the future.
    # 0 turns the check off (replay of recordings made elsewhere).
    max_clock_skew_s: Annotated[float, Field(ge=0)] = 300.0
    # Payloads are flat objects; nesting beyond this is hostile or broken (`too_deep`).
    max_depth: Annotated[int, Field(ge=1, le=64)] = 8
    # Longer topics or topic levels are `bad_topic`: they would only bloat the route cache.
    max_topic_chars: Annotated[int, Field(ge=16)] = 256
    max_topic_level_chars: Annotated[int, Field(ge=8)] = 96
    # Memory for the topic → device cache (topics are cached once parsed).
    max_route_cache_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024


class DeadLetterSettings(_Frozen):
    """Where rejected messages and undeliverable alerts go."""

    file: Path = Path("deadletter.jsonl")
    mqtt_topic: str | None = None
    # Rotated past this size, keeping `keep_files` old files: the disk is the outbox's too.
    max_bytes: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    keep_files: Annotated[int, Field(ge=0, le=100)] = 3
    # A longer payload is kept as a prefix with its length and SHA-256.
    max_payload_bytes: Annotated[int, Field(ge=64)] = 16 * 1024


class OutboxSettings(_Frozen):
    """The SQLite outbox between alerts and sinks."""

    path: Path = Path("outbox.sqlite3")
    # Per sink: past it the sink's oldest ordinary deliveries go to dead-letter (never a
    # life-safety one), so a dead InfluxDB cannot fill the disk or stop anything else.
    max_events: Annotated[int, Field(ge=1)] = 1_000_000


class DeliverySettings(_Frozen):
    """Retry policy shared by every sink's delivery worker."""

    initial_backoff_s: Annotated[float, Field(gt=0)] = 0.5
    max_backoff_s: Annotated[float, Field(gt=0)] = 60.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500


class InfluxSettings(_Frozen):
    """InfluxDB sink. `api: v1` serves InfluxDB 1.x; `api: v2` serves 2.x/3.x and VictoriaMetrics."""

    url: SecretUrl
    api: Literal["v1", "v2"] = "v1"
    database: str = "sensord"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    org: str = ""
    bucket: str = "sensord"
    token: SecretRef | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    alerts_measurement: str = "sensord_alert"
    write_telemetry: bool = False
    # Keep at most one telemetry point per device per this many seconds; 0 keeps all.
    telemetry_every_s: Annotated[float, Field(ge=0)] = 0.0


class WebhookSettings(_Frozen):
    """Dispatch webhook, signed per Standard Webhooks."""

    url: SecretUrl
    secret: SecretRef
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    statuses: tuple[Literal["pending", "firing", "resolved"], ...] = ("firing", "resolved")


class SinkSettings(_Frozen):
    """Configured sinks; each gets its own delivery worker."""

    influx: InfluxSettings | None = None
    webhook: WebhookSettings | None = None


class HttpSettings(_Frozen):
    """The /metrics and /healthz listener."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, lt=65536)] = 9108
    enabled: bool = True


class ApiClient(_Frozen):
    """One client of the HTTP API: a dispatch platform, the duty office, a team. Its
    token is a secret; its role allows reading (read), acting on work orders (act), or
    that and silences (admin)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    role: Literal["read", "act", "admin"]
    token: SecretRef


class ApiSettings(_Frozen):
    """The work-order API and the operator console (README: HTTP API). Off by default;
    on localhost unless `host` says otherwise; TLS when both files are given."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, lt=65536)] = 9109
    tls_cert: Path | None = None
    tls_key: Path | None = None
    clients: tuple[ApiClient, ...] = ()
    # One-tap links in messages: signed with this secret, pointing at public_url.
    link_secret: SecretRef | None = None
    public_url: str | None = None
    link_ttl_s: Annotated[float, Field(gt=0)] = 24 * 3600.0

    @model_validator(mode="after")
    def _consistent(self) -> ApiSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("api: give both tls_cert and tls_key, or neither")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError("api.clients: each client needs its own name")
        if (self.link_secret is None) != (self.public_url is None):
            raise ValueError("api: one-tap links need both link_secret and public_url")
        return self


class AlertSettings(_Frozen):
    """Alert lifecycle defaults; a rule may override them."""

    repeat_interval_s: Annotated[float, Field(ge=0)] = 0.0
    # A community from which no device at all has reported for this long is one
    # `community_silent` alert (gateway or broker down), not one no-data alert per device.
    # 0 turns it off.
    community_silence_s: Annotated[float, Field(ge=0)] = 600.0
    community_min_devices: Annotated[int, Field(ge=1)] = 3
    # Live only: when no message has arrived for idle_tick_s, the event-time clock is moved
    # to (wall clock - clock_grace_s), so `for:` timers and no-data alerts fire in a quiet
    # stream. Never during a backlog, so a drained backlog gives the same alerts as live.
    idle_tick_s: Annotated[float, Field(gt=0)] = 2.0
    clock_grace_s: Annotated[float, Field(ge=0)] = 10.0
    # How often the whole engine state (timers, windows, cooldowns) is saved beside the
    # outbox; firing and pending alerts themselves are saved with every batch.
    snapshot_every_s: Annotated[float, Field(gt=0)] = 10.0
    # An ack is dated at its receive time, kept within [stream clock, clock + this]: a
    # time before the readings ahead of it would make it look stale, and one far after
    # them means a backlog (sensord was down), where the stream clock is the better date.
    ack_slack_s: Annotated[float, Field(ge=0)] = 15.0
    # The zone of `local_hour()` in rules (the communities' local time).
    timezone: TimeZoneName = "Asia/Shanghai"


class LogSettings(_Frozen):
    """Structured logs to stderr (journald picks them up)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class ShardSettings(_Frozen):
    """This instance's share of a district (README: Several instances): either `index` of
    `count` instances, each taking the communities that rendezvous hashing gives it, or an
    explicit list of `communities`."""

    index: Annotated[int, Field(ge=0)] | None = None
    count: Annotated[int, Field(ge=1, le=1000)] | None = None
    communities: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    # `communities`: subscribe to this instance's communities only (a filter pair each).
    # `all`: subscribe to broker.subscriptions as an unsharded instance does and skip
    # (count, acknowledge) other instances' messages: for nats-server, which caps a
    # session's unacknowledged messages at one mqtt.max_ack_pending over all its
    # subscriptions and delivers what passes it an ack_wait later, out of order.
    subscribe: Literal["communities", "all"] = "communities"

    @model_validator(mode="after")
    def _one_form(self) -> ShardSettings:
        if self.communities is not None:
            if self.index is not None or self.count is not None:
                raise ValueError("give either index and count, or communities, not both")
            if not self.communities:
                raise ValueError("communities is empty: an instance needs at least one")
            if len(set(self.communities)) != len(self.communities):
                raise ValueError("communities names one community twice")
            return self
        if self.index is None or self.count is None:
            raise ValueError("give index and count (instance index of count instances), or communities")
        if self.index >= self.count:
            raise ValueError(
                f"index {self.index} is not below count {self.count}: the instances of a shard of "
                f"{self.count} are numbered 0 to {self.count - 1}"
            )
        return self


class Settings(_Frozen):
    """The whole configuration. Relative paths are relative to `state_dir` (data) or the
    config file's folder (inputs)."""

    broker: BrokerSettings = BrokerSettings()
    batch: BatchSettings = BatchSettings()
    decode: DecodeSettings = DecodeSettings()
    registry: Path = Path("devices.yaml")
    rules_dir: Path = Path("rules")
    # > 0: also reload the rules when a rule file changes, checked this often (besides SIGHUP).
    rules_watch_s: Annotated[float, Field(ge=0)] = 0.0
    # Receivers and the routing tree (its own file, Alertmanager-shaped; README: Dispatch).
    dispatch: Path | None = None
    state_dir: Path = Path("/var/lib/sensord")
    deadletter: DeadLetterSettings = DeadLetterSettings()
    outbox: OutboxSettings = OutboxSettings()
    delivery: DeliverySettings = DeliverySettings()
    sinks: SinkSettings = SinkSettings()
    http: HttpSettings = HttpSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertSettings = AlertSettings()
    log: LogSettings = LogSettings()
    # None: one instance takes every community of the registry.
    shard: ShardSettings | None = None
    # Filled by load_settings(); never written in YAML.
    secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)
    config_dir: Path = Field(default=Path(), exclude=True)

    @model_validator(mode="after")
    def _packet_cap_above_payload_limit(self) -> Settings:
        if self.broker.max_packet_bytes <= self.decode.max_payload_bytes:
            # An oversized PUBLISH keeps max_packet_bytes of payload so that decode
            # rejects it as too_large (with its record), never as broken JSON.
            raise ValueError(
                f"broker.max_packet_bytes ({self.broker.max_packet_bytes}) must be larger than "
                f"decode.max_payload_bytes ({self.decode.max_payload_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _shard_needs_community_topics(self) -> Settings:
        if self.shard is None:
            return self
        b = self.broker
        if "{community}" not in b.topic_template:
            raise ValueError(
                "shard: broker.topic_template must contain {community}: an instance subscribes to its "
                "own communities' topics only"
            )
        if len(b.subscriptions) != 1:
            # One filter per community: the handover marker travels in it (README: Changing
            # the number of instances), so it is ordered with every message it cuts.
            raise ValueError(
                f"shard: broker.subscriptions must be one filter (got {len(b.subscriptions)}); each "
                "instance narrows it to its own communities"
            )
        if b.ack_topic_template is not None and "{community}" not in b.ack_topic_template:
            raise ValueError(
                "shard: broker.ack_topic_template must contain {community} (or be null): each instance "
                "takes only its own communities' acknowledgements"
            )
        if self.shard.communities is not None and "client_id" not in b.model_fields_set:
            # With index/count the id gets `-shard-<index>`; a list has no index to add.
            raise ValueError(
                "shard.communities: set broker.client_id, one per instance: two instances with one "
                "client id take the broker session from each other"
            )
        return self

    def data_path(self, p: Path) -> Path:
        """A data file (outbox, dead-letter) lives in state_dir unless absolute."""
        return p if p.is_absolute() else self.state_dir / p

    def input_path(self, p: Path) -> Path:
        """An input file (registry, rules) is relative to the config file's folder."""
        return p if p.is_absolute() else self.config_dir / p

    def secret(self, name: str) -> SecretStr | None:
        """A resolved secret by its dotted key, e.g. `broker.password`."""
        return self.secrets.get(name)


WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64 of 24 to 64 random
    bytes), as the receivers' libraries decode it. Raises ValueError with the reason."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(
            "a webhook secret is `whsec_` + base64 of random bytes, as the Standard Webhooks "
            "libraries expect; make one with `sensord secret new`"
        )
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not base64; make one with `sensord secret new`") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the secret is {len(key)} bytes; use 24 to 64 (`sensord secret new` makes 32)")
    return key


def _secret_refs(settings: Settings) -> dict[str, SecretRef]:
    refs: dict[str, SecretRef | None] = {
        "broker.password": settings.broker.password,
        "sinks.influx.password": settings.sinks.influx.password if settings.sinks.influx else None,
        "sinks.influx.token": settings.sinks.influx.token if settings.sinks.influx else None,
        "sinks.webhook.secret": settings.sinks.webhook.secret if settings.sinks.webhook else None,
    }
    refs |= {f"api.clients.{c.name}.token": c.token for c in settings.api.clients}
    refs["api.link_secret"] = settings.api.link_secret
    return {k: v for k, v in refs.items() if v is not None}


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)


def parse_settings(data: Any, *, source: str, config_dir: Path) -> Settings:
    """Validate a parsed YAML document and resolve its secrets."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of settings", source=source)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc), source=source) from None
    secrets: dict[str, SecretStr] = {}
    for key, ref in _secret_refs(settings).items():
        try:
            secrets[key] = ref.read(config_dir)
            if key == "sinks.webhook.secret":
                signing_key(secrets[key].get_secret_value())
        except ValueError as exc:
            raise ConfigError(str(exc), source=source, key=key) from None
    return settings.model_copy(update={"secrets": secrets, "config_dir": config_dir})


def _yaml_reason(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's quote of the line: that line may be a URL with its token."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"not valid YAML: {type(exc).__name__}"
    mark = exc.problem_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = ", ".join(p for p in (exc.context, exc.problem) if p)
    return f"not valid YAML{where}: {what}"


def load_settings(path: Path, **overrides: Any) -> Settings:
    """Load and validate the config file at `path`; `overrides` replace top-level keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_reason(exc), source=str(path)) from None
    if isinstance(data, dict):
        data.update(overrides)
    return parse_settings(data, source=str(path), config_dir=path.resolve().parent)
