"""The control lane (service/control_lane.py): meter readings in and commands out on a
connection of their own, each reading handled exactly once, also while the meters change or
the lane is gone."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from service.app import RunningService
from service.control_lane import ControlLane
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, IMMEDIATE
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually


class StateCounter:
    """A StateListener that counts how often each device's state was recorded."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def params_changed(self) -> None:
        pass

    def device_changed(self, dev_id: str) -> None:
        pass

    def device_removed(self, dev_id: str) -> None:
        pass

    def device_state_changed(self, dev_id: str) -> None:
        self.counts[dev_id] = self.counts.get(dev_id, 0) + 1


async def configure(service: RunningService, *meters: dict[str, Any]) -> None:
    await service.state.set_params(
        {"max_total_current": 32_000, **IMMEDIATE, "devices": [GARAGE_EVSE, *meters]}
    )


@pytest.fixture
async def lane(service: RunningService) -> ControlLane:
    """The service's control lane, once the site has the grid meter M1 and the lane follows
    it."""
    lane = service.link.lane
    assert lane is not None, "the service runs without a control lane"
    await configure(service, GRID_METER)
    await eventually(lambda: lane.listens("M1"), "the lane subscribed to M1's state")
    return lane


def count_states(service: RunningService) -> StateCounter:
    counter = StateCounter()
    service.state.listeners.append(counter)
    return counter


def reading(amps: int) -> bytes:
    return json.dumps({"current": [amps, amps, amps], "ts": time.time()}).encode()


async def test_meter_readings_come_on_the_lane_and_count_once(
    service: RunningService, observer: MqttObserver, base_topic: str, lane: ControlLane
) -> None:
    assert lane.bus is not None
    counter = count_states(service)
    received = lane.bus.stats.received
    for amps in (5000, 6000, 7000):
        observer.publish(f"{base_topic}/devices/M1/state", reading(amps))
    await eventually(lambda: counter.counts.get("M1", 0) >= 3, "three readings recorded")
    # Whatever else was on its way has arrived: still three, not six.
    await observer.roundtrip()
    assert counter.counts["M1"] == 3
    assert lane.bus.stats.received - received == 3
    runtime = service.state.runtime["M1"]
    assert runtime.state is not None and list(runtime.state.current) == [7000, 7000, 7000]


async def test_commands_leave_on_the_lane(
    service: RunningService, observer: MqttObserver, base_topic: str, lane: ControlLane
) -> None:
    assert lane.bus is not None
    published = lane.bus.stats.published
    observer.publish(f"{base_topic}/devices/M1/state", reading(30_000))
    ts = time.time()
    observer.publish(
        f"{base_topic}/devices/E1/state",
        json.dumps({"state": 3, "current": [6000, 6000, 6000], "ts": ts}),
    )
    # The answer to that state: a command of a run after it.
    await observer.wait(
        f"{base_topic}/devices/E1/command", lambda m: m.json()["state_ts"] == ts
    )
    assert lane.bus.stats.published > published


async def test_a_meter_added_later_is_followed_and_a_removed_one_let_go(
    service: RunningService, observer: MqttObserver, base_topic: str, lane: ControlLane
) -> None:
    assert not lane.listens("M2")
    sub_meter = {"dev_type": "meter_ajax", "dev_id": "M2", "name": "Garage", "role": 1}
    await configure(service, GRID_METER, sub_meter)
    await eventually(lambda: lane.listens("M2"), "the lane subscribed to the new meter")
    counter = count_states(service)
    observer.publish(f"{base_topic}/devices/M2/state", reading(1000))
    await eventually(lambda: counter.counts.get("M2", 0) >= 1, "M2's reading recorded")
    await observer.roundtrip()
    assert counter.counts["M2"] == 1

    await service.state.delete_device("M2")
    bus = lane.bus
    assert bus is not None
    topic = f"{base_topic}/devices/M2/state"
    await eventually(lambda: topic not in bus.active, "the lane let go of M2")
    assert lane.listens("M1")


async def test_without_the_lane_the_main_connection_hands_readings_on(
    service: RunningService, observer: MqttObserver, base_topic: str, lane: ControlLane
) -> None:
    counter = count_states(service)
    # As when the lane's connection is down.
    lane.detach()
    assert not lane.listens("M1")
    observer.publish(f"{base_topic}/devices/M1/state", reading(4000))
    await eventually(lambda: counter.counts.get("M1", 0) >= 1, "M1's reading recorded")
    await observer.roundtrip()
    assert counter.counts["M1"] == 1
    # Commands go out on the main connection meanwhile.
    observer.publish(
        f"{base_topic}/devices/E1/state",
        json.dumps({"state": 3, "current": [6000, 6000, 6000], "ts": time.time()}),
    )
    await observer.wait(
        f"{base_topic}/devices/E1/command", lambda m: m.json()["state_ts"] is not None
    )
