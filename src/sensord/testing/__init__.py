"""Test helpers shipped with sensord, so operators and field testers can test too:
real servers on free ports (an SMTP server, an SMS gateway and a private RabbitMQ node
with its MQTT plugin among them), a three-node NATS cluster, an in-memory source, a
webhook receiver that verifies, the fault-injection scenarios (daemon, broker or cluster
node SIGKILLed, sinks down) with their judge, and stand-ins for the chat platforms'
robot webhooks that check what they are sent."""

from sensord.sinks import MemorySink
from sensord.testing._faultcheck import Findings, judge
from sensord.testing._faultcluster import ClusterRun, Kill, cluster_failover
from sensord.testing._faultdispatch import DispatchRun, dispatch_kills
from sensord.testing._faultruns import Run, broker_kills, daemon_kills, sinks_down
from sensord.testing._faults import Daemon, Publisher, Workload, reference
from sensord.testing._memory import MemorySource
from sensord.testing._nats_cluster import ClusterNode, NatsCluster, start_nats_cluster
from sensord.testing._platforms import (
    Accepted,
    DingTalkRobotServer,
    Fault,
    FeishuBotServer,
    Refused,
    WeComRobotServer,
)
from sensord.testing._rabbitmq import RabbitMqServer, RabbitTls, start_rabbitmq
from sensord.testing._servers import (
    InfluxServer,
    MosquittoServer,
    NatsServer,
    Received,
    VictoriaMetricsServer,
    WebhookReceiver,
    free_port,
    start_influxdb_v1,
    start_mosquitto,
    start_nats,
    start_victoria_metrics,
)
from sensord.testing._sms import SmsGateway, SmsRequest
from sensord.testing._smtp import Mail, SmtpServer, self_signed_certificate, start_smtp

__all__ = [
    "Accepted",
    "ClusterNode",
    "ClusterRun",
    "Daemon",
    "DingTalkRobotServer",
    "DispatchRun",
    "Fault",
    "FeishuBotServer",
    "Findings",
    "InfluxServer",
    "Kill",
    "Mail",
    "MemorySink",
    "MemorySource",
    "MosquittoServer",
    "NatsCluster",
    "NatsServer",
    "Publisher",
    "RabbitMqServer",
    "RabbitTls",
    "Received",
    "Refused",
    "Run",
    "SmsGateway",
    "SmsRequest",
    "SmtpServer",
    "VictoriaMetricsServer",
    "WeComRobotServer",
    "WebhookReceiver",
    "Workload",
    "broker_kills",
    "cluster_failover",
    "daemon_kills",
    "dispatch_kills",
    "free_port",
    "judge",
    "reference",
    "self_signed_certificate",
    "sinks_down",
    "start_influxdb_v1",
    "start_mosquitto",
    "start_nats",
    "start_nats_cluster",
    "start_rabbitmq",
    "start_smtp",
    "start_victoria_metrics",
]
