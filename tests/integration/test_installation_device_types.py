"""Device types of real installations (issue 14 item 4): simulated devices (`evse_mockup`,
`meter_mockup`), the Eastron SDM72D-M (`meter_sdm72dm`) and the virtual meters computed from
the installation, configured through /cnf on the real service."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridges.sim.server import simulated_site
from service.app import RunningService
from tests.broker import find_free_port
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

NEW_TYPES = {
    "evse_mockup": "Simulation (VE)",
    "meter_mockup": "Simulation (VM)",
    "meter_sdm72dm": "Eastron SDM72DM V1",
    "meter_virtual_grid_demand": "Grid Demand (VM)",
    "meter_virtual_evse_power": "Consumed EVSE Power (VM)",
    "meter_virtual_available_evse_power": "Power avail. for EVSEs (VM)",
}


def device(info: Any, dev_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in info["devices"] if d["dev_id"] == dev_id)
    return found


def showing(api: Api, dev_id: str, check: Callable[[dict[str, Any]], bool]) -> Callable[
    [], Awaitable[bool]
]:
    async def holds() -> bool:
        return check(device(await api.ok(cmd="get_dev_info"), dev_id))

    return holds


async def test_the_types_are_listed_and_accepted(api: Api) -> None:
    for cmd in ("get_dev_types", "get_params"):
        status, answer = await api.get(cmd=cmd)
        assert status == 200
        meta = answer if cmd == "get_dev_types" else answer["dev_meta"]
        assert {name: meta.get(name) for name in NEW_TYPES} == NEW_TYPES, cmd
    await api.set_params(
        {"devices": [{"dev_type": name, "address": "127.0.0.1:1"} for name in NEW_TYPES]}
    )
    info = await api.ok(cmd="get_dev_info")
    assert sorted(d["dev_type"] for d in info["devices"]) == sorted(NEW_TYPES)


async def test_simulated_wallboxes_charge_and_the_simulated_meter_sees_them(api: Api) -> None:
    await api.set_params(
        {"max_total_current": 20_000, "cycle_time": 500, **IMMEDIATE,
         "devices": [
             {"dev_type": "meter_mockup", "dev_id": "M1", "role": 3, "poll_interval": 200},
             {"dev_type": "evse_mockup", "dev_id": "E1", "used_phases": 7,
              "poll_interval": 200},
             {"dev_type": "evse_mockup", "dev_id": "E2", "used_phases": 1,
              "poll_interval": 200},
         ]}
    )  # fmt: skip
    for dev_id in ("E1", "E2"):
        await eventually(showing(api, dev_id, lambda d: d["state"] == 3), f"{dev_id} charges")
    info = await api.ok(cmd="get_dev_info")
    e1, e2, m1 = (device(info, d) for d in ("E1", "E2", "M1"))
    assert e1["is_mock"] is True and m1["is_mock"] is True
    assert e1["model"] == "chargebus,Simulation (VE),1.0,1.0.0,E1"
    assert e2["current_l2"] == 0 and e2["current_l3"] == 0 and e2["current_l1"] > 0
    # The fuse holds on L1, where both draw.
    assert e1["current_l1"] + e2["current_l1"] <= 20_000

    # The meter shows what both draw (it reports after them, at its own interval).
    def sums(meter: dict[str, Any]) -> bool:
        return bool(meter["current_l1"] > e1["current_l1"] and meter["current_l2"] > 0)

    await eventually(showing(api, "M1", sums), "M1 measures both wallboxes")
    # The simulated car follows its command: a lower maximum shows in its current.
    await api.set_params({"devices": [{"dev_id": "E1", "max_charging_cur": 7000}]})
    await eventually(
        showing(api, "E1", lambda d: d["current_l1"] == 7000), "E1 follows its new maximum"
    )


async def test_an_sdm72dm_is_polled_as_a_power_meter(api: Api) -> None:
    port = find_free_port()
    async with simulated_site("127.0.0.1", [], port, base_load_ma=5000, tick_s=0.1):
        await api.set_params(
            {"devices": [{"dev_type": "meter_sdm72dm", "dev_id": "M1", "role": 3,
                          "address": f"127.0.0.1:{port}", "poll_interval": 200}]}
        )  # fmt: skip
        await eventually(
            showing(api, "M1", lambda d: d["power_w"] > 0 and d["com_err"] is False),
            "M1 is polled",
        )
        meter = device(await api.ok(cmd="get_dev_info"), "M1")
        # 5 A on each of three phases at 230 V.
        assert meter["power_w"] == pytest.approx(3450, rel=0.05)
        assert meter["model"] == "Eastron SDM72DM" and meter["import"] >= 0


async def test_virtual_meters_are_computed_from_the_installation(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params(
        {"max_total_current": 32_000, **IMMEDIATE,
         "devices": [
             {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3},
             {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7},
             {"dev_type": "meter_virtual_grid_demand", "dev_id": "M2"},
             {"dev_type": "meter_virtual_evse_power", "dev_id": "M3"},
             {"dev_type": "meter_virtual_available_evse_power", "dev_id": "M4"},
         ]}
    )  # fmt: skip
    status, _ = await api.get(api.admin, cmd="set_ajax_meter", dev_id="M1",
                              current="20000,12000,12000", power_w=10120)  # fmt: skip
    assert status == 200
    status, _ = await api.get(api.admin, cmd="set_ajax_evse", dev_id="E1", state=3,
                              current="8000,8000,8000")  # fmt: skip
    assert status == 200
    await eventually(showing(api, "M3", lambda d: d["current_l1"] == 8000), "M3 follows E1")
    info = await api.ok(cmd="get_dev_info")
    grid, evses, available = (device(info, d) for d in ("M2", "M3", "M4"))
    assert [grid[f"current_l{n}"] for n in (1, 2, 3)] == [20_000, 12_000, 12_000]
    assert grid["power_w"] == 10_120 and grid["com_err"] is False and grid["state"] == 1
    assert [evses[f"current_l{n}"] for n in (1, 2, 3)] == [8000, 8000, 8000]
    assert evses["power_w"] == 5520
    assert available["power_w"] == info["params"]["avail_evse_power"]
    assert available["current_l1"] == service.state.allocation.budget_per_phase[0][0]  # type: ignore[union-attr]
    # The load balancing never reads them: not in its input, a state for one is refused.
    assert set(service.state.allocation_input(time.time()).meters) == {"M1"}
    observer.publish(f"{base_topic}/devices/M2/state", json.dumps({"current": [0, 0, 0]}))
    await observer.roundtrip()
    await asyncio.sleep(0.1)
    assert service.bus.stats.rejected_by_reason.get("state", 0) >= 1
    # Shown, never balanced on: a role that would make them count is refused.
    status, answer = await api.post({"devices": [{"dev_id": "M2", "role": 3}]}, api.admin,
                                    cmd="set_params")  # fmt: skip
    assert status == 400 and "virtual meter" in answer["error"]
    # And the info topic follows them.
    await observer.wait(
        f"{base_topic}/devices/M3/info", lambda m: m.json()["current_l1"] == 8000
    )
