"""`chargebus bridge modbus`: the Modbus bridge as a process of its own, on any host that
reaches the broker and the devices."""

from __future__ import annotations

import asyncio
import logging

from service.app import modbus_bridge
from service.settings import Settings

log = logging.getLogger(__name__)


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
