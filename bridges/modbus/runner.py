"""The Modbus bridge's lifetime on its own bus connection: in the service's process
(`chargebus run`) or as `chargebus bridge modbus`, on any host that reaches the broker and
the devices."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bridges.modbus.bridge import ModbusBridge
from service.bus import LastWill
from service.bus_setup import make_bus
from service.settings import MqttTarget, Settings
from service.topics import Topics

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def modbus_bridge(settings: Settings, target: MqttTarget) -> AsyncIterator[ModbusBridge]:
    """The Modbus bridge with its own connection, status topic and last will."""
    bridge = ModbusBridge(Topics(settings.base_topic), settings.modbus_bridge_name)
    bus = make_bus(
        settings,
        target,
        f"bridge-{settings.modbus_bridge_name}",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
        will=LastWill(bridge.status_topic, b"offline"),
    )
    bridge.subscriptions_changed = bus.replace_subscriptions
    async with bus, bridge.running(bus):
        yield bridge


async def run_modbus_bridge(settings: Settings, stop: asyncio.Event) -> None:
    target = settings.mqtt_target()
    if target is None:
        raise ValueError("a bridge needs the broker's address: set CHARGEBUS_MQTT_URL")
    async with modbus_bridge(settings, target) as bridge:
        log.info(
            "Modbus bridge %r on MQTT %s, base topic %r: devices come from the retained configs",
            bridge.name,
            target.redacted(),
            settings.base_topic,
        )
        await stop.wait()
