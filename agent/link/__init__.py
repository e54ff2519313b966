"""The device's link to the cloud over MQTT.

client.MqttLink      the paho client: persistent session, TLS, last will, subscriptions
drain.OutboxDrain    outbox -> broker, QoS 1, rows deleted on PUBACK
inbound.Inbound      `desired` and `cmd` messages, handled off paho's thread
commands             signed operator commands: verification and the replay guard
"""

from agent.link.client import Backoff, MqttLink
from agent.link.commands import CommandGate, verify_command
from agent.link.drain import OutboxDrain
from agent.link.inbound import Inbound

__all__ = ["Backoff", "CommandGate", "Inbound", "MqttLink", "OutboxDrain", "verify_command"]
