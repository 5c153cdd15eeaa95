"""The simulated car's life cycle (pure)."""

from __future__ import annotations

import pytest

from bridges.sim.car import Car, CarState


def state(car: Car) -> CarState:
    # Read through a call: mypy would keep an earlier `car.state ==` narrowing across step().
    return car.state


def test_unplugged_car_draws_nothing() -> None:
    car = Car()
    assert state(car) == CarState.UNPLUGGED
    assert car.step(1.0, 16_000, True) == (0, 0, 0)
    assert state(car) == CarState.UNPLUGGED


def test_life_cycle_unplugged_plugged_charging_full_unplugged() -> None:
    car = Car(capacity_wh=1000.0, energy_wh=0.0)
    car.plug()
    assert state(car) == CarState.PLUGGED
    assert car.step(1.0, 16_000, False) == (0, 0, 0)  # not enabled
    assert state(car) == CarState.PLUGGED
    assert car.step(1.0, 10_000, True) == (10_000, 10_000, 10_000)
    assert state(car) == CarState.CHARGING
    # 10 A x 3 x 230 V = 6.9 kW: 1 kWh takes ~522 s.
    for _ in range(600):
        car.step(1.0, 10_000, True)
    assert car.full
    assert car.energy_wh == pytest.approx(1000.0)
    assert car.step(1.0, 10_000, True) == (0, 0, 0)
    assert state(car) == CarState.PLUGGED
    car.unplug()
    assert state(car) == CarState.UNPLUGGED
    assert car.step(1.0, 10_000, True) == (0, 0, 0)


def test_below_six_amps_the_car_pauses() -> None:
    car = Car(plugged=True)
    assert car.step(1.0, 5_999, True) == (0, 0, 0)
    assert state(car) == CarState.PLUGGED
    assert car.step(1.0, 6_000, True) == (6_000, 6_000, 6_000)
    assert state(car) == CarState.CHARGING
    assert car.step(1.0, 0, True) == (0, 0, 0)
    assert state(car) == CarState.PLUGGED


def test_car_takes_no_more_than_its_maximum() -> None:
    car = Car(plugged=True, max_current_ma=11_000)
    assert car.step(1.0, 32_000, True) == (11_000, 11_000, 11_000)


def test_one_phase_car_and_one_phase_wallbox() -> None:
    single = Car(plugged=True, phases=1)
    assert single.step(1.0, 16_000, True) == (16_000, 0, 0)
    triple = Car(plugged=True)
    assert triple.step(1.0, 16_000, True, max_phases=1) == (16_000, 0, 0)


def test_energy_follows_power_times_time() -> None:
    car = Car(plugged=True, energy_wh=0.0)
    car.step(3600.0, 10_000, True)
    assert car.energy_wh == pytest.approx(10 * 230 * 3)


def test_deterministic() -> None:
    def run() -> list[tuple[int, int, int]]:
        car = Car(plugged=True, capacity_wh=500.0, energy_wh=0.0, phases=1)
        return [car.step(0.2 * (i % 7), 6_000 + 1000 * (i % 11), i % 5 != 0) for i in range(3000)]

    assert run() == run()


def test_phases_must_be_one_or_three() -> None:
    with pytest.raises(ValueError):
        Car(phases=2)
