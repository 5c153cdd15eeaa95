"""A meter reading that comes right after a burst of EVSE reports is answered before the
display work those reports cause (device info), as a real subscriber sees the bus.

The reports and the reading come from two connections (an HTTP-input bridge and a meter's
bridge), the reading a moment after the last report. What the core publishes is watched by
a plain paho subscriber at QoS 0, so that the broker hands everything on in the order the
core published it (at QoS 1 it would let commands overtake infos held in its window).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from service.app import RunningService
from tests.broker import BrokerAddress
from tests.integration.conftest import GRID_METER, IMMEDIATE

N = 120
PER_PHASE = N // 3
MAXIMUM = 10_000
LIMIT = PER_PHASE * (MAXIMUM + 300) + 10_000
DRAW = 3000  # each EVSE on its one phase, below any command it gets
NEW_DRAW = 3100  # what the burst of reports says: every info changes


def phase(i: int) -> int:
    return (i - 1) % 3


def evses() -> list[dict[str, Any]]:
    return [
        {
            "dev_type": "evse_ajax",
            "dev_id": f"E{i}",
            "used_phases": 1 << phase(i),
            "min_charging_cur": 4000,
            "max_charging_cur": MAXIMUM,
            "pause_min_time": 0,
        }
        for i in range(1, N + 1)
    ]


def grid(draw: int, overload: bool) -> list[int]:
    # Overload: the EVSEs of each phase have 70 % of their maxima left.
    other = LIMIT - PER_PHASE * MAXIMUM * 7 // 10 if overload else 5_000
    return [other + PER_PHASE * draw] * 3


def report(i: int, draw: int) -> bytes:
    current = [0, 0, 0]
    current[phase(i)] = draw
    return json.dumps({"state": 3, "current": current, "ts": time.time()}).encode()


class Client:
    """A paho client of its own: a bridge that publishes (QoS 1, no window, as the service's
    bridges do) or a subscriber at QoS 0 that keeps the order of arrival."""

    def __init__(self, broker: BrokerAddress, subscribe: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex[:12])
        self.client.max_inflight_messages_set(0)
        self.seen: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if subscribe is not None:
            self.client.subscribe(subscribe, qos=0)
            assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.seen.append((msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.seen)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def leaf(topic: str) -> tuple[str, str]:
    parts = topic.split("/")
    return parts[-2], parts[-1]


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def test_meter_reading_after_a_burst_of_reports_is_answered_before_their_info(
    service: RunningService, mqtt_broker: BrokerAddress, base_topic: str
) -> None:
    await service.state.set_params(
        {
            "max_total_current": LIMIT,
            "reserve_current": 0,
            "cycle_time": 60_000,
            "stale_time": 3_600_000,
            **IMMEDIATE,
            "devices": [GRID_METER, *evses()],
        }
    )
    watcher = Client(mqtt_broker, f"{base_topic}/devices/+/+")
    bridge = Client(mqtt_broker)
    meter = Client(mqtt_broker)
    ids = {f"E{i}" for i in range(1, N + 1)}

    def state_topic(dev_id: str) -> str:
        return f"{base_topic}/devices/{dev_id}/state"

    def commanded(since: int, want: Any) -> set[str]:
        done = set()
        for topic, payload in watcher.snapshot()[since:]:
            dev_id, kind = leaf(topic)
            if kind == "command" and want(json.loads(payload)["charging_current"]):
                done.add(dev_id)
        return done

    try:
        # Every EVSE charging at its maximum.
        for i in range(1, N + 1):
            bridge.publish(state_topic(f"E{i}"), report(i, DRAW))
        start = len(watcher.snapshot())
        for _ in range(100):
            reading = {"current": grid(DRAW, False), "ts": time.time()}
            meter.publish(state_topic("M1"), json.dumps(reading).encode())
            await asyncio.sleep(0.2)
            if commanded(start, lambda c: c >= MAXIMUM - 500) >= ids:
                break
        assert commanded(start, lambda c: c >= MAXIMUM - 500) >= ids
        await asyncio.sleep(0.5)  # the info of that settles

        # The burst: every EVSE reports, and right after them the overload reading.
        mark = len(watcher.snapshot())
        for i in range(1, N + 1):
            bridge.publish(state_topic(f"E{i}"), report(i, NEW_DRAW))
        reading = {"current": grid(NEW_DRAW, True), "ts": time.time()}
        meter.publish(state_topic("M1"), json.dumps(reading).encode())

        def new_info() -> set[str]:
            done = set()
            for topic, payload in watcher.snapshot()[mark:]:
                dev_id, kind = leaf(topic)
                if kind == "info" and NEW_DRAW in json.loads(payload).values():
                    done.add(dev_id)
            return done

        cut = MAXIMUM * 8 // 10
        await wait_until(lambda: commanded(mark, lambda c: c <= cut) >= ids, 30, "no cuts")
        await wait_until(lambda: new_info() >= ids, 30, "no info of the reports")

        order = watcher.snapshot()[mark:]
        cuts = [
            n
            for n, (topic, payload) in enumerate(order)
            if leaf(topic)[1] == "command" and json.loads(payload)["charging_current"] <= cut
        ]
        infos = [
            n
            for n, (topic, payload) in enumerate(order)
            if leaf(topic)[1] == "info" and NEW_DRAW in json.loads(payload).values()
        ]
        assert cuts and infos
        # Every EVSE's cut was on the bus before the first info that shows a report.
        first_cut_per_evse: dict[str, int] = {}
        for n in cuts:
            first_cut_per_evse.setdefault(leaf(order[n][0])[0], n)
        assert max(first_cut_per_evse.values()) < min(infos), (
            f"info of the reports at {min(infos)} came before the last cut at "
            f"{max(first_cut_per_evse.values())} (of {len(order)} messages)"
        )
    finally:
        for client in (watcher, bridge, meter):
            client.close()
