"""What a bridge publishes: device states and its own retained status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from service.bus import LastWill, MqttBus
from service.core.contract import OFFLINE, ONLINE
from service.topics import Topics


class StatePublisher:
    """States on `devices/{id}/state` with `ts` = now (the bridge's clock at receipt, never a
    device's), and `bridges/{name}/status` held retained `online` with an `offline` will."""

    def __init__(
        self, topics: Topics, name: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.topics = topics
        self.name = name
        self.clock = clock
        self._bus: MqttBus | None = None
        self.published = 0

    @property
    def status_topic(self) -> str:
        return f"{self.topics.base}/bridges/{self.name}/status"

    def will(self) -> LastWill:
        return LastWill(self.status_topic, OFFLINE)

    def attach(self, bus: MqttBus, *, announce: bool = True) -> None:
        """Publishes through `bus` from now on; `announce`: say `online` at once (a bridge
        that serves nothing yet may wait, see `announce`)."""
        self._bus = bus
        if announce:
            self.announce()

    def announce(self) -> None:
        """Holds `bridges/{name}/status` retained `online` (re-published on reconnects)."""
        if self._bus is not None:
            self._bus.hold_retained(self.status_topic, ONLINE)

    def detach(self) -> None:
        self._bus = None

    @property
    def attached(self) -> bool:
        return self._bus is not None

    def state(self, dev_id: str, state: dict[str, Any], *, qos: int = 0) -> bool:
        """Publishes a state (QoS 0 by default: the next one replaces a lost one, and the
        core's staleness catches a silent device); `ts` is set here."""
        state["ts"] = self.clock()
        return self.publish(self.topics.state(dev_id), state, qos=qos)

    def publish(self, topic: str, payload: Any, *, qos: int = 1) -> bool:
        bus = self._bus
        if bus is None:
            return False
        self.published += 1
        data = json.dumps(payload, separators=(",", ":")).encode()
        return bus.publish_nowait(topic, data, qos=qos)
