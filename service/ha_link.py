"""Announces the service's devices to Home Assistant (MQTT discovery) as retained configs,
re-announces them when Home Assistant comes online, and clears them when a device goes.

Discovery configs depend on a device's configuration only (name, type), never on its
measurements: device state changes publish nothing here, and a configuration change
publishes only the configs whose payload changed.
"""

from __future__ import annotations

import logging

from service.bus import MqttBus
from service.ha_discovery import DEFAULT_PREFIX, discovery_messages
from service.state import ServiceState
from service.topics import Topics

log = logging.getLogger(__name__)

HA_ONLINE = b"online"


class HaDiscovery:
    def __init__(
        self,
        state: ServiceState,
        topics: Topics,
        bus: MqttBus | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        enabled: bool = True,
    ) -> None:
        self.state = state
        self.topics = topics
        self.bus = bus
        self.prefix = prefix
        self.enabled = enabled
        # What each device's configs were last announced as: a deleted device's info is
        # gone by the time device_removed is called, so its topics are remembered here.
        self._announced: dict[str, dict[str, bytes]] = {}

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
            log.info("Home Assistant online: re-announcing %d devices", len(self._announced))
            self.announce_all(force=True)
