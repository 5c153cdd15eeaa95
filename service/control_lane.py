"""The control lane: a second MQTT connection of the core for what must not wait, meter
readings in and EVSE commands out.

On the core's main connection a meter reading that comes right after a burst of EVSE reports
(a thousand wallboxes report each second) waits until every report before it has been read
and handled, and the commands of the run it causes would leave behind the device info those
reports cause. On a connection of its own, the reading is read in the loop turn it arrives
(the connections of a process take turns: MqttBus reads in slices) and the commands are
written first, in one go.

The main connection still subscribes to every state (`devices/+/state`: MQTT has no
exclusions), so each meter reading comes twice while the lane is up, and only on the main
connection while the lane is down or not yet subscribed. `CopyFilter` hands on the first copy
of each reading and drops its twin from the other connection: nothing is lost while the lane
reconnects or follows a new meter, and nothing is handled twice.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from service.bus import MqttBus, Subscription
from service.core.models import MeterConfig
from service.core.virtual_meters import is_virtual
from service.state import ServiceState
from service.topics import Topics

log = logging.getLogger(__name__)


# How long, and how many, handed-on readings per meter are remembered to recognise their twins:
# the main connection's copy may come seconds late behind a burst of EVSE reports.
TWIN_WINDOW_S = 5.0
TWIN_MEMORY = 16
MAIN = "main"
LANE = "lane"


class CopyFilter:
    """First copy of each message wins; its twin from the other connection is dropped.

    Twins are the same bytes on the same device from the other connection within
    TWIN_WINDOW_S. A meter that sends the same bytes twice (no `ts`) is still counted twice:
    each copy pairs with one twin only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, deque[tuple[str, bytes, float]]] = {}

    def first(self, connection: str, dev_id: str, payload: bytes) -> bool:
        now = self._clock()
        seen = self._seen.setdefault(dev_id, deque(maxlen=TWIN_MEMORY))
        while seen and now - seen[0][2] > TWIN_WINDOW_S:
            seen.popleft()
        for entry in seen:
            if entry[0] != connection and entry[1] == payload:
                seen.remove(entry)
                log.debug("%s: dropped the %s connection's copy of a reading", dev_id, connection)
                return False
        seen.append((connection, payload, now))
        return True

    def forget(self, dev_id: str) -> None:
        self._seen.pop(dev_id, None)


class ControlLane:
    def __init__(self, state: ServiceState, topics: Topics) -> None:
        self.state = state
        self.topics = topics
        self.bus: MqttBus | None = None
        self.copies = CopyFilter()
        # The meters whose states the lane subscribes to.
        self.meters: frozenset[str] = frozenset()

    def subscriptions(self) -> list[Subscription]:
        """The state topics of every measured meter, at QoS 0 (as the main connection's)."""
        self.meters = frozenset(
            dev_id
            for dev_id, config in self.state.installation.devices.items()
            if isinstance(config, MeterConfig) and not is_virtual(config.dev_type)
        )
        return [(self.topics.state(dev_id), 0) for dev_id in sorted(self.meters)]

    def hand_on(self, connection: str, dev_id: str, payload: bytes) -> bool:
        """Whether this copy of a state is handled: EVSE states (main connection only) always;
        a meter's, if it is the first copy of that reading."""
        if dev_id not in self.meters:
            return connection == MAIN
        if connection == LANE and self.bus is None:
            return False  # detached: the main connection's copy counts
        return self.copies.first(connection, dev_id, payload)

    def attach(self, bus: MqttBus) -> None:
        self.bus = bus
        self.state.listeners.append(self)

    def detach(self) -> None:
        if self in self.state.listeners:
            self.state.listeners.remove(self)
        self.bus = None

    def listens(self, dev_id: str) -> bool:
        """The broker has acknowledged the lane's subscription to this device's states."""
        bus = self.bus
        return bus is not None and self.topics.state(dev_id) in bus.active

    def _follow_meters(self) -> None:
        if self.bus is not None:
            self.bus.replace_subscriptions(self.subscriptions())

    def _concerns(self, dev_id: str) -> bool:
        """A meter now, or one the lane listens to: only then can the subscriptions change
        (a set_params of a thousand EVSEs must not list the meters a thousand times)."""
        if isinstance(self.state.installation.devices.get(dev_id), MeterConfig):
            return True
        return dev_id in self.meters

    # -- StateListener: the meters may have changed ------------------------------------------

    def params_changed(self) -> None:
        self._follow_meters()

    def device_changed(self, dev_id: str) -> None:
        if self._concerns(dev_id):
            self._follow_meters()

    def device_removed(self, dev_id: str) -> None:
        if self._concerns(dev_id):
            self.copies.forget(dev_id)
            self._follow_meters()

    def device_state_changed(self, dev_id: str) -> None:
        pass
