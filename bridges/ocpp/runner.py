"""The OCPP bridge's lifetime on its own bus connection: in the service's process (listening
once an evse_ocpp device is configured) or as `chargebus bridge ocpp` (listening at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

from bridges.ocpp.bridge import OcppBridge
from service.auth import FailureThrottle
from service.bus_setup import make_bus
from service.settings import MqttTarget, Settings
from service.topics import Topics

log = logging.getLogger(__name__)

BRIDGE_NAME = "ocpp"


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """wss:// (OCPP security profile 2) when a certificate is configured: TLS 1.2 or newer."""
    if settings.ocpp_tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    key = settings.ocpp_tls_key_file
    context.load_cert_chain(str(settings.ocpp_tls_cert_file), str(key) if key else None)
    return context


@contextlib.asynccontextmanager
async def ocpp_bridge(
    settings: Settings,
    target: MqttTarget,
    *,
    listen_at_once: bool = False,
    throttle: FailureThrottle | None = None,
) -> AsyncIterator[OcppBridge]:
    """The OCPP bridge with its own connection, status topic and last will. `throttle` is
    the process's guess throttle (one per process); without it, as `chargebus bridge ocpp`
    in its own process, the bridge makes its own."""
    bridge = OcppBridge(
        Topics(settings.base_topic),
        BRIDGE_NAME,
        host=settings.ocpp_host,
        port=settings.ocpp_port,
        ssl_context=server_tls(settings),
        listen_at_once=listen_at_once,
        throttle=throttle,
    )
    bus = make_bus(
        settings,
        target,
        f"bridge-{BRIDGE_NAME}",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
        will=bridge.publisher.will(),
    )
    bridge.subscriptions_changed = bus.replace_subscriptions
    async with bus, bridge.running(bus):
        yield bridge


async def run_ocpp_bridge(settings: Settings, stop: asyncio.Event) -> None:
    target = settings.mqtt_target()
    if target is None:
        raise ValueError("a bridge needs the broker's address: set CHARGEBUS_MQTT_URL")
    async with ocpp_bridge(settings, target, listen_at_once=True) as bridge:
        log.info(
            "OCPP bridge on port %d, MQTT %s, base topic %r: charge points come from the "
            "retained configs (dev_type evse_ocpp)",
            bridge.port,
            target.redacted(),
            settings.base_topic,
        )
        await stop.wait()
