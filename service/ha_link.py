"""Announces the service's devices to Home Assistant (MQTT discovery) as retained configs,
re-announces them when Home Assistant comes online, and clears them when a device goes.

Discovery configs depend on a device's configuration only (name, type), never on its
measurements: device state changes publish nothing here, and a configuration change
publishes only the configs whose payload changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from service.bus import MqttBus
from service.ha_discovery import DEFAULT_PREFIX, discovery_messages
from service.state import ServiceState
from service.topics import Topics

log = logging.getLogger(__name__)

HA_ONLINE = b"online"
# Home Assistant's `online` makes the core publish every discovery config again (dozens of
# messages per device). Anyone allowed to write homeassistant/status could flood it, so
# announcements happen at most once per this many seconds: an `online` within that time
# after the last one is answered once, when the time is up, however many arrive.
REANNOUNCE_MIN_S = 5.0


class HaDiscovery:
    def __init__(
        self,
        state: ServiceState,
        topics: Topics,
        bus: MqttBus | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.topics = topics
        self.bus = bus
        self.prefix = prefix
        self.enabled = enabled
        # What each device's configs were last announced as: a deleted device's info is
        # gone by the time device_removed is called, so its topics are remembered here.
        self._announced: dict[str, dict[str, bytes]] = {}
        self._clock = clock
        self._last_announce = float("-inf")
        self._deferred: asyncio.TimerHandle | None = None

    @property
    def status_topic(self) -> str:
        """Home Assistant's birth and will messages (`online` / `offline`)."""
        return f"{self.prefix}/status"

    def subscriptions(self) -> list[str]:
        return [self.status_topic] if self.enabled else []

    def attach(self, bus: MqttBus) -> None:
        self.bus = bus
        if not self.enabled:
            return
        self.state.listeners.append(self)
        self.announce_all(force=True)
        self._last_announce = self._clock()

    def announce_all(self, *, force: bool) -> None:
        for dev_id in list(self.state.installation.devices):
            self._announce(dev_id, force=force)

    def _announce(self, dev_id: str, *, force: bool) -> None:
        if self.bus is None or dev_id not in self.state.installation.devices:
            return
        messages = discovery_messages(
            self.topics.base,
            self.state.installation.serialno,
            self.state.device_info(dev_id),
            self.prefix,
        )
        previous = self._announced.get(dev_id, {})
        for topic in previous.keys() - messages.keys():
            self.bus.hold_retained(topic, None)
        for topic, payload in messages.items():
            if force or previous.get(topic) != payload:
                self.bus.hold_retained(topic, payload)
        self._announced[dev_id] = messages

    # -- StateListener ---------------------------------------------------------------------

    def params_changed(self) -> None:
        """Discovery does not depend on params."""

    def device_changed(self, dev_id: str) -> None:
        self._announce(dev_id, force=False)

    def device_removed(self, dev_id: str) -> None:
        previous = self._announced.pop(dev_id, {})
        if self.bus is None:
            return
        for topic in previous:
            self.bus.hold_retained(topic, None)

    def device_state_changed(self, dev_id: str) -> None:
        """Measurements reach Home Assistant on the info topic; discovery stays as it is."""

    # -- incoming ----------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if not self.enabled or topic != self.status_topic:
            return
        if payload.strip() == HA_ONLINE:
            # A restarted Home Assistant may have lost what it had: announce everything
            # again even though the configs are retained (Home Assistant's advice).
            self._online()

    def _online(self) -> None:
        if self._deferred is not None:
            log.debug("Home Assistant online again: the re-announcement is already due")
            return
        wait = self._last_announce + REANNOUNCE_MIN_S - self._clock()
        if wait <= 0:
            self._reannounce()
            return
        log.debug("Home Assistant online: re-announcing in %.1f s (rate limit)", wait)
        self._deferred = asyncio.get_running_loop().call_later(wait, self._reannounce)

    def _reannounce(self) -> None:
        self._deferred = None
        self._last_announce = self._clock()
        log.info("Home Assistant online: re-announcing %d devices", len(self._announced))
        self.announce_all(force=True)

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
