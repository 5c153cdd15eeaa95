"""set_ajax_meter / set_ajax_evse as clients use them (issue 14 items 1-3): right after
set_params, with some fields only, and with the numbers clients compute."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridges.http_input import HttpInputBridge
from service.app import RunningService
from service.bus_setup import make_bus
from service.settings import Settings
from service.topics import Topics
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

ROUNDS = 40


def device(info: Any, dev_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in info["devices"] if d["dev_id"] == dev_id)
    return found


# -- item 1: what set_params acknowledged holds for the next request --------------------------


async def test_a_device_is_served_right_after_set_params(api: Api) -> None:
    """40 rounds on one keep-alive connection: add a meter and an EVSE, push at once.
    (Before: 14-24 of 40 refused as unknown while the config travelled to the bridge.)"""
    await api.set_params({"max_total_current": 32_000, **IMMEDIATE})
    for n in range(ROUNDS):
        meter, evse = f"M{n + 1}", f"E{n + 1}"
        await api.set_params(
            {"devices": [{"dev_type": "meter_ajax", "dev_id": meter},
                         {"dev_type": "evse_ajax", "dev_id": evse}]}
        )  # fmt: skip
        status, answer = await api.get(api.admin, cmd="set_ajax_meter", dev_id=meter, power_w=1)
        assert (status, answer) == (200, "ok"), (meter, answer)
        status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id=evse, state=2)
        assert status == 200 and "charging_current" in answer, (evse, answer)


async def test_a_changed_type_holds_at_once(api: Api) -> None:
    await api.set_params({"devices": [{"dev_type": "evse_ajax", "dev_id": "E1"}]})
    status, _ = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1", state=1)
    assert status == 200
    await api.set_params({"devices": [{"dev_id": "E1", "dev_type": "evse_powerbrain"}]})
    status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1", state=1)
    assert status == 400 and "evse_powerbrain" in answer["error"]
    assert await api.ok(cmd="del_device", dev_id="E1") == "ok"
    status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1", state=1)
    assert status == 404


@contextlib.asynccontextmanager
async def lone_bridge(settings: Settings) -> AsyncIterator[HttpInputBridge]:
    """An HTTP-input bridge with only the bus, as `chargebus bridge http` runs it."""
    bridge = HttpInputBridge(Topics(settings.base_topic))
    target = settings.mqtt_target()
    assert target is not None
    bus = make_bus(
        settings, target, "test-lone-http",
        subscriptions=bridge.subscriptions(), on_message=bridge.on_message,
    )  # fmt: skip
    async with bus:
        bridge.attach(bus)
        await bus.wait_connected(10)
        yield bridge


async def test_a_bridge_with_only_the_bus_waits_for_a_config_on_its_way(
    api: Api, service: RunningService, settings: Settings, observer: MqttObserver,
    base_topic: str,
) -> None:  # fmt: skip
    """`chargebus bridge http` with its own port learns devices from the retained configs:
    a request that arrives before the config does waits for it instead of a 404."""
    async with lone_bridge(settings) as bridge:
        for n in range(ROUNDS // 4):
            dev_id = f"M{n + 1}"
            await api.set_params({"devices": [{"dev_type": "meter_ajax", "dev_id": dev_id}]})
            assert await bridge.set_ajax_meter(dev_id, {"power_w": 5}, from_query=False) == "ok"
        # A device nobody configured is still refused, after the wait.
        bridge_wait = asyncio.get_running_loop().time()
        with pytest.raises(Exception) as caught:
            await bridge.set_ajax_meter("M99", {"power_w": 5}, from_query=False)
        assert getattr(caught.value, "status", None) == 404
        assert asyncio.get_running_loop().time() - bridge_wait >= 1.5


# -- item 2: a partial push keeps what it leaves out -----------------------------------------


async def test_a_partial_evse_push_keeps_the_session(api: Api, service: RunningService) -> None:
    user = {"id": "1001", "name": "Ann", "rfids": [{"id": "4711"}]}
    status, answer = await api.post(user, api.admin, cmd="set_user")
    assert status == 200, answer
    await api.set_params(
        {"max_total_current": 32_000, **IMMEDIATE,
         "devices": [{"dev_type": "evse_ajax", "dev_id": "E3", "used_phases": 7,
                      "users": ["1001"]}]}
    )  # fmt: skip
    full = {"state": 3, "current": [8000, 8000, 8000], "max_charging_current": 16000,
            "total_energy": 1200, "model": "MyBox", "rfid": "4711"}  # fmt: skip
    status, answer = await api.post(full, api.admin, cmd="set_ajax_evse", dev_id="E3")
    assert status == 200, answer
    info = device(await api.ok(cmd="get_dev_info"), "E3")
    assert (info["state"], info["user"]) == (3, "1001")
    # The request: only the currents.
    status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E3",
                                   current="0,0,0")  # fmt: skip
    assert status == 200, answer
    info = device(await api.ok(cmd="get_dev_info"), "E3")
    assert (info["state"], info["user"], info["model"]) == (3, "1001", "MyBox")
    assert info["current_l1"] == 0 and info["total_energy"] == 1200
    assert answer["charging_current"] > 0  # still an authorised session


async def test_a_partial_meter_push_keeps_the_rest(api: Api, service: RunningService) -> None:
    await api.set_params({"devices": [{"dev_type": "meter_ajax", "dev_id": "M2", "role": 2}]})
    full = {"model": "TestModell", "import_wh": 12345, "export_wh": 23456,
            "voltage": [231, 232, 233], "current": [10001, 10002, 10003]}  # fmt: skip
    status, _ = await api.post(full, api.admin, cmd="set_ajax_meter", dev_id="M2")
    assert status == 200
    status, _ = await api.get(api.admin, cmd="set_ajax_meter", dev_id="M2", power_w=100)
    assert status == 200
    # "ok" means the broker has the state; the core takes it a moment later.
    for _ in range(100):
        info = device(await api.ok(cmd="get_dev_info"), "M2")
        if info["power_w"] == 100:
            break
        await asyncio.sleep(0.02)
    assert info["power_w"] == 100
    assert (info["model"], info["import"], info["export"]) == ("TestModell", 12345, 23456)
    assert (info["current_l1"], info["current_l2"], info["current_l3"]) == (10001, 10002, 10003)
    assert info["voltage_l3"] == 233


# -- item 3: numbers --------------------------------------------------------------------------


async def test_fractional_milliamps_are_rounded(api: Api, service: RunningService) -> None:
    await api.set_params(
        {**IMMEDIATE, "devices": [{"dev_type": "evse_ajax", "dev_id": "E1"},
                                  {"dev_type": "meter_ajax", "dev_id": "M1"}]}
    )  # fmt: skip
    status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1", state=3,
                                   current="1000.5,2000,3000.4",
                                   max_charging_current="16000.0")  # fmt: skip
    assert status == 200, answer
    runtime = service.state.runtime["E1"].state
    assert runtime is not None and runtime.current == [1001, 2000, 3000]
    status, answer = await api.post({"current": [-1000.5, 0.4, 12.5]}, api.admin,
                                    cmd="set_ajax_meter", dev_id="M1")  # fmt: skip
    assert (status, answer) == (200, "ok")
    for _ in range(100):
        meter = service.state.runtime["M1"].state
        if meter is not None:
            break
        await asyncio.sleep(0.02)
    assert meter is not None and meter.current == [-1001, 0, 13]


async def test_a_negative_evse_current_is_refused(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [{"dev_type": "evse_ajax", "dev_id": "E1"}]})
    observer.clear()
    status, answer = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1",
                                   current="-1,0,0")  # fmt: skip
    assert status == 400 and "negative" in answer["error"]
    status, answer = await api.post({"state": 3, "current": [0, -6000, 0]}, api.admin,
                                    cmd="set_ajax_evse", dev_id="E1")  # fmt: skip
    assert status == 400 and "negative" in answer["error"]
    await observer.roundtrip()
    assert not observer.on(f"{base_topic}/devices/E1/state")
