"""The MQTT connection of one part of chargebus (the core, a bridge) as the settings say:
broker, TLS files and a client id unique per site, role, host and process."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from service.bus import LastWill, MessageHandler, MqttBus, Subscription
from service.settings import MqttTarget, Settings


def make_bus(
    settings: Settings,
    target: MqttTarget,
    role: str,
    *,
    subscriptions: Sequence[Subscription],
    on_message: MessageHandler,
    will: LastWill | None = None,
) -> MqttBus:
    """A connection of one part of chargebus (core, a bridge) with the configured TLS files."""
    return MqttBus(
        target,
        # The site's base topic too: client ids are global on a broker that serves many sites,
        # and containers share host names (host network) and pids (1); a clash would make the
        # broker drop one connection for the other, back and forth.
        client_id=(
            f"chargebus-{settings.base_topic.replace('/', '_')}-{role}"
            f"-{socket.gethostname()}-{os.getpid()}"
        ),
        subscriptions=subscriptions,
        on_message=on_message,
        will=will,
        tls_ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
        tls_cert_file=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
        tls_key_file=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
    )
