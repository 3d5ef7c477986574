"""The `broker` section: where the MQTT broker is (one host, or the nodes of a cluster),
how sensord connects to it, and which topics it takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from sensord._settings_base import Frozen as _Frozen
from sensord._settings_base import SecretRef
from sensord.decode._topic import TopicTemplate, filter_matches


class TlsSettings(_Frozen):
    """TLS to the broker: CA to trust, and optionally our client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class ReconnectSettings(_Frozen):
    """Capped, jittered exponential backoff between connection attempts."""

    initial_s: Annotated[float, Field(gt=0)] = 0.5
    max_s: Annotated[float, Field(gt=0)] = 30.0


class BrokerHost(_Frozen):
    """One broker node of `broker.hosts`, tried in turn."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    # The name in this node's TLS certificate when `host` is an address or an alias
    # (default: `host`): certificates are checked per node, never against another's name.
    tls_server_name: str | None = None

    @property
    def label(self) -> str:
        """`host:port`, as logs and metrics name the node."""
        return f"{self.host}:{self.port}"


class WillSettings(_Frozen):
    """A last will: what the broker publishes for sensord if the box dies without a
    goodbye, so the dispatch side learns the edge box is gone. `online` is published
    (same topic, retained) on every connect, and `payload` again on a clean stop."""

    topic: Annotated[str, Field(min_length=1, max_length=256)] = "sensord/status"
    payload: str = '{"status": "offline"}'
    online: str | None = '{"status": "online"}'
    qos: Literal[0, 1] = 1
    retain: bool = True

    @field_validator("topic")
    @classmethod
    def _plain_topic(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError("a will topic cannot contain the wildcards + or #")
        return v


class BrokerSettings(_Frozen):
    """The MQTT broker and our persistent session on it."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    # Several nodes of one clustered broker (or brokers sharing our session): on the loss
    # of a connection the next one is tried. Empty: the one `host`/`port`.
    hosts: tuple[BrokerHost, ...] = ()
    # After a connect with the session present, what arrives is gathered into one batch
    # until this long has passed since the connect and since the first message of each
    # subscription: a broker that redelivers unacknowledged messages only after its ack
    # timeout (nats-server's `mqtt.ack_wait`) sends them behind newer readings, which the
    # rules would skip as late; in one batch they are sorted by time. Must exceed that ack
    # timeout. 0: process at once (Mosquitto redelivers first, in order).
    redelivery_wait_s: Annotated[float, Field(ge=0, le=300)] = 0.0
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "sensord"
    # The daemon keeps its session (False) so the broker queues for it while it restarts;
    # throw-away clients (a recorder) start clean and leave nothing queued behind.
    clean_session: bool = False
    username: str | None = None
    password: SecretRef | None = None
    tls: TlsSettings | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    subscriptions: tuple[str, ...] = ("sensord/+/+/+/+",)
    topic_template: str = "sensord/{community}/{family}/{device_id}/{kind}"
    # Acknowledgements come from the dispatch side only, on their own topic tree that the
    # broker's ACL lets no device write (config/mosquitto.acl); an ack on a device's own
    # topic is rejected. Subscribed beside `subscriptions`. None: no acks over MQTT.
    ack_topic_template: str | None = "sensord-dispatch/ack/{community}/{family}/{device_id}"
    qos: Literal[0, 1] = 1
    # Most received messages held unacknowledged at once (queued or in the batch being
    # processed): past it the socket is not read and the broker keeps the rest.
    receive_maximum: Annotated[int, Field(ge=100, le=1_000_000)] = 20000
    # Largest packet read whole. A bigger PUBLISH keeps only this much of its payload
    # (then rejected as too_large) and the rest is dropped as it arrives.
    max_packet_bytes: Annotated[int, Field(ge=1024, le=268_435_455)] = 262_144
    will: WillSettings | None = None
    reconnect: ReconnectSettings = ReconnectSettings()

    @model_validator(mode="after")
    def _password_needs_username(self) -> BrokerSettings:
        if self.password is not None and self.username is None:
            # MQTT 3.1.1 (3.1.2.9) allows a password only with a user name; a broker
            # refuses the CONNECT, and the daemon would retry forever.
            raise ValueError("broker.password is set without broker.username: MQTT needs both")
        return self

    @model_validator(mode="after")
    def _one_host_list(self) -> BrokerSettings:
        if not self.hosts:
            return self
        labels = [h.label for h in self.hosts]
        if len(set(labels)) != len(labels):
            raise ValueError(f"broker.hosts lists a node twice: {labels}")
        given = {"host", "port"} & self.model_fields_set
        if given and (self.host, self.port) != (self.hosts[0].host, self.hosts[0].port):
            raise ValueError(
                f"broker.host/port ({self.host}:{self.port}) and broker.hosts (first {labels[0]}) "
                "disagree: give the nodes in broker.hosts only (host/port is the one-broker form)"
            )
        return self

    @property
    def endpoints(self) -> tuple[BrokerHost, ...]:
        """The nodes to connect to, in the order they are tried."""
        return self.hosts or (BrokerHost(host=self.host, port=self.port),)

    @field_validator("topic_template")
    @classmethod
    def _template_names(cls, v: str) -> str:
        for name in ("{family}", "{device_id}"):
            if name not in v:
                raise ValueError(f"topic_template must contain {name}")
        return v

    @field_validator("ack_topic_template")
    @classmethod
    def _ack_template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "{device_id}" not in v or "{kind}" in v:
            raise ValueError("ack_topic_template must contain {device_id} and no {kind}")
        if "+" in v or "#" in v or v.startswith(("{", "/")):
            raise ValueError(
                "ack_topic_template must start with a fixed topic level (the one the broker's ACL "
                "gives to the dispatch side) and contain no wildcards"
            )
        TopicTemplate(v)  # raises on an unknown placeholder
        return v

    @model_validator(mode="after")
    def _acks_apart(self) -> BrokerSettings:
        if self.ack_topic_template is None:
            return self
        sample = TopicTemplate(self.ack_topic_template).fill()
        overlap = [f for f in self.subscriptions if filter_matches(f, sample)]
        if overlap or TopicTemplate(self.topic_template).parse(sample) is not None:
            # A device allowed to write its telemetry tree could then write acks.
            raise ValueError(
                f"ack_topic_template {self.ack_topic_template!r} lies inside the device topics "
                f"({overlap[0] if overlap else self.topic_template!r}); give acks their own top level"
            )
        return self

    @property
    def filters(self) -> tuple[str, ...]:
        """Everything subscribed: the device topics, then the dispatch side's acks (a
        client subscribed to nothing, a publisher, takes no acks either)."""
        if self.ack_topic_template is None or not self.subscriptions:
            return self.subscriptions
        return (*self.subscriptions, TopicTemplate(self.ack_topic_template).filter)
