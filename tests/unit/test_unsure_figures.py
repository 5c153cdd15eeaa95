"""A report newer than the grid reading that shows an EVSE no longer drawing, while the report
paired with that reading shows it drawing: the other-load figure is unsure (a car that left
while the base load rose leaves the held figure as it was), and the control law raises
nobody until a newer reading. Seen on a simulated plant (plugging, seed 130): E1 unplugged
as the base load rose by 3.8 A; paired with E1's last report, the figure hid the rise, and
two raises took L2 2.9 A over its fuse for 6 s. A car that only came down (it followed a
cut) leaves its spread (pairing.drop_after), and no hold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from service.state import ServiceState
from tests.unit.control_site import meter_and_evse
from tests.unit.test_control_law import T0, Loop, site


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def evse(state: ServiceState, ts: float, amps: int) -> None:
    body = {"ts": ts, "state": 3 if amps else 2, "current": [amps] * 3}
    state.record_state("E1", json.dumps(body).encode())


def grid(state: ServiceState, ts: float, amps: int) -> None:
    state.record_state("M1", json.dumps({"ts": ts, "current": [amps] * 3}).encode())


async def test_a_newer_report_that_shows_a_drop_makes_the_figures_unsure(tmp_path: Path) -> None:
    clock = Clock()
    state, _, _ = await meter_and_evse(tmp_path, clock, max_total_current=32_000, follow_time=6)
    t = clock.t
    evse(state, t, 10_000)
    grid(state, t + 0.5, 14_000)
    clock.t = t + 1.0
    assert not state.allocation_input(clock.t).figures_unsure  # nothing newer than the pair
    # E1's next report, newer than the grid reading, shows it drawing nothing.
    evse(state, t + 1.0, 0)
    clock.t = t + 1.2
    unsure = state.allocation_input(clock.t)
    assert unsure.figures_unsure
    assert unsure.evses["E1"].draw_spread == (10_000, 10_000, 10_000)
    # A grid reading taken after that report: the pair is its own again.
    grid(state, t + 1.5, 4_000)
    clock.t = t + 1.6
    assert not state.allocation_input(clock.t).figures_unsure
    # A newer report within the reports' noise is no drop.
    evse(state, t + 2.0, 10_000)
    grid(state, t + 2.2, 14_000)
    evse(state, t + 2.5, 9_800)
    clock.t = t + 2.6
    assert not state.allocation_input(clock.t).figures_unsure
    # A car that came down but still draws (it followed a cut): its spread, no hold.
    grid(state, t + 2.7, 14_000)
    evse(state, t + 3.0, 6_000)
    clock.t = t + 3.1
    down = state.allocation_input(clock.t)
    assert not down.figures_unsure
    assert down.evses["E1"].draw_spread == (3800, 3800, 3800)


def test_with_unsure_figures_nobody_is_raised_and_cuts_still_go_out() -> None:
    loop = Loop()

    def step(dt: float, other: int, unsure: bool = False) -> int:
        """A run at T0 + dt; E1's car draws its command (reported a second ago)."""
        drawn = loop.control.evse("E1").command
        inp = site(T0 + dt, [other + drawn] * 3, {"E1": (3 if drawn else 2, [drawn] * 3)})
        loop.run(dataclasses.replace(inp, figures_unsure=unsure))
        return loop.control.evse("E1").command

    # 20 A of other load on a 32 A fuse: E1 settles at its share.
    for dt in range(0, 20):
        settled = step(dt, 20_000)
    assert 6000 <= settled < 12_000
    # The other load falls by 8 A, but the figures are unsure: no raise, for as long.
    for dt in range(20, 40):
        assert step(dt, 12_000, unsure=True) == settled, dt
    # Sure again (after the hold of the old load): it rises.
    raised = max(step(dt, 12_000) for dt in range(40, 60))
    assert raised > settled
    # A cut goes out with unsure figures too.
    assert step(60, 28_000, unsure=True) < raised


async def test_a_car_not_yet_started_at_its_raise_is_no_drop(tmp_path: Path) -> None:
    """A started EVSE counts at its command while its car has not shown it (ramp credit); a
    newer report that still shows nothing is no drop against the report paired with the
    reading, so nobody's raise waits for it. (That report also shows the car drew nothing
    at the reading: a car that only rises draws no less later, so it takes the credit.)"""
    clock = Clock()
    state, loop, sink = await meter_and_evse(
        tmp_path, clock, max_total_current=32_000, follow_time=6
    )
    await state.set_params({"load_hold_time": 10})  # the hold, and with it the ramp credit
    t = clock.t
    evse(state, t, 0)
    grid(state, t, 2000)
    await loop.run_once(refresh=False)
    assert sink.last_published("E1")["charging_current"] > 0  # started: ramping
    grid(state, t + 0.5, 2000)
    clock.t = t + 0.7
    inp = state.allocation_input(clock.t)
    assert inp.evses["E1"].ramp_credit > 0  # counted at its command
    evse(state, t + 1.0, 0)  # newer than the reading, still nothing drawn
    clock.t = t + 1.2
    inp = state.allocation_input(clock.t)
    assert inp.evses["E1"].ramp_credit == 0  # it drew nothing at the reading
    assert not inp.figures_unsure
