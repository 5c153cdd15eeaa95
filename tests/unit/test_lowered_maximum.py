"""A maximum lowered while the car charges: the car may draw what it was told until it
follows (follow_time); that draw is explained, not a fault. A draw beyond anything it was
told still is one."""

from __future__ import annotations

import json
from pathlib import Path

from service.control_loop import ControlLoop
from service.core.allocation import R_COM_ERR
from service.state import ServiceState
from tests.unit.control_site import RecordingSink, meter_and_evse


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


async def charging_at_16_a(
    tmp_path: Path,
) -> tuple[ServiceState, ControlLoop, RecordingSink, Clock]:
    clock = Clock()
    state, loop, sink = await meter_and_evse(
        tmp_path, clock, max_total_current=63_000, follow_time=5
    )
    report(state, clock, 16_000)
    await loop.run_once(refresh=False)
    assert sink.last_published("E1")["charging_current"] == 16_000
    return state, loop, sink, clock


async def lowered_to_10_a(
    tmp_path: Path, amps: int
) -> tuple[ServiceState, ControlLoop, RecordingSink, Clock]:
    """Charging at 16 A when the maximum is lowered to 10 A; a second later E1 draws `amps`
    and a run has seen it."""
    state, loop, sink, clock = await charging_at_16_a(tmp_path)
    await state.set_device("E1", {"max_charging_cur": 10_000})
    clock.t += 1
    report(state, clock, amps)
    await loop.run_once(refresh=False)
    return state, loop, sink, clock


def report(state: ServiceState, clock: Clock, amps: int) -> None:
    evse = {"ts": clock.t, "state": 3, "current": [amps] * 3}
    state.record_state("E1", json.dumps(evse).encode())
    state.record_state("M1", json.dumps({"ts": clock.t, "current": [amps + 2000] * 3}).encode())


def notes(state: ServiceState) -> list[str]:
    assert state.allocation is not None
    return [n for n in state.allocation.notes if "more than its maximum explains" in n]


async def test_the_old_current_is_explained_while_the_car_follows(tmp_path: Path) -> None:
    state, loop, sink, clock = await lowered_to_10_a(tmp_path, 16_000)  # still at the old current
    assert notes(state) == []
    assert state.allocation is not None
    assert state.allocation.evses["E1"].reason != R_COM_ERR
    assert sink.last_published("E1")["charging_current"] == 10_000
    clock.t += 1
    report(state, clock, 16_000)  # within follow_time: still explained
    await loop.run_once(refresh=False)
    assert notes(state) == []


async def test_a_car_that_never_follows_is_a_fault_after_follow_time(tmp_path: Path) -> None:
    state, loop, _, clock = await lowered_to_10_a(tmp_path, 16_000)
    clock.t += 6  # follow_time (5 s) has passed
    report(state, clock, 16_000)
    await loop.run_once(refresh=False)
    assert notes(state) != []


async def test_a_draw_beyond_what_it_was_told_is_a_fault_at_once(tmp_path: Path) -> None:
    state, _, _, _ = await lowered_to_10_a(tmp_path, 60_000)
    assert notes(state) != []
