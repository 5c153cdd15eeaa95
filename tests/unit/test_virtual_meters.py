"""Virtual meters and simulated devices: the pure parts (issue 14 item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from bridges.common.follower import Control
from bridges.mockup import SimulatedCar, meter_state
from service.core.models import EvseConfig, EvseState, MeterConfig, MeterState
from service.core.virtual_meters import (
    AVAILABLE_EVSE_POWER,
    EVSE_POWER,
    GRID_DEMAND,
    States,
    virtual_reading,
)

NOW = 1_700_000_000.0


def meter(dev_id: str, role: int, **fields: Any) -> MeterConfig:
    return MeterConfig(dev_type="meter_ajax", dev_id=dev_id, role=role, **fields)


def devices(*configs: EvseConfig | MeterConfig) -> dict[str, EvseConfig | MeterConfig]:
    return {c.dev_id: c for c in configs}


EVSE = EvseConfig(dev_type="evse_ajax", dev_id="E1")
CHARGING = EvseState(ts=NOW, state=3, current=[10_000, 10_000, 0])


def test_evse_power_sums_the_evses() -> None:
    e2 = EvseConfig(dev_type="evse_ajax", dev_id="E2")
    off = EvseConfig(dev_type="evse_ajax", dev_id="E3", device_enabled=False)
    states: States = {"E1": CHARGING, "E2": EvseState(ts=NOW, current=[0, 0, 6000], power_w=1400),
              "E3": CHARGING}  # fmt: skip
    reading = virtual_reading(EVSE_POWER, devices(EVSE, e2, off), states, None, NOW)
    assert reading.current == [10_000, 10_000, 6000]
    assert reading.power_w == 4600 + 1400


def test_grid_demand_is_the_grid_meter_when_there_is_one() -> None:
    states: States = {"M1": MeterState(ts=NOW, current=[20_000, 5000, 5000], power_w=6900),
              "E1": CHARGING}  # fmt: skip
    reading = virtual_reading(GRID_DEMAND, devices(meter("M1", 3), EVSE), states, None, NOW)
    assert (reading.current, reading.power_w) == ([20_000, 5000, 5000], 6900)


def test_grid_demand_without_a_grid_meter_is_consumption_plus_evses_minus_production() -> None:
    states: States = {
        "M1": MeterState(ts=NOW, current=[4000, 4000, 4000]),
        "M2": MeterState(ts=NOW, current=[1000, 1000, 1000], power_w=690),
        "E1": CHARGING,
    }
    configs = devices(meter("M1", 1), meter("M2", 2), EVSE)
    reading = virtual_reading(GRID_DEMAND, configs, states, None, NOW)
    assert reading.current == [13_000, 13_000, 3000]
    assert reading.power_w == pytest.approx(2760 + 4600 - 690)


def test_available_evse_power_before_any_allocation_is_nothing() -> None:
    reading = virtual_reading(AVAILABLE_EVSE_POWER, {}, {}, None, NOW)
    assert (reading.current, reading.power_w) == ([0, 0, 0], 0)


def test_a_simulated_car_draws_what_its_command_allows_on_its_phases() -> None:
    car = SimulatedCar(phases=1)
    car.follow(Control(True, True, False, 16_000), NOW)
    assert car.drawn == (16_000, 0, 0)
    assert car.state("E1", NOW + 3600)["total_energy"] == pytest.approx(3680)
    car.follow(Control(True, True, True, 16_000), NOW + 3600)  # paused
    assert car.drawn == (0, 0, 0) and car.state("E1", NOW + 3601)["state"] == 2
    car.follow(Control(True, True, False, 5000), NOW + 3601)  # below what a car takes
    assert car.drawn == (0, 0, 0)
    three = SimulatedCar(phases=0)
    three.follow(Control(True, True, False, 8000), NOW)
    assert meter_state("M1", [car, three])["current"] == [8000, 8000, 8000]
