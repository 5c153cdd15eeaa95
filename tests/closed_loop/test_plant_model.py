"""The plant simulator itself: cars, wallboxes, meters and the figures measured on them.
The closed-loop claims are only as good as this."""

from __future__ import annotations

from dataclasses import replace

from tests.plant.figures import compute, fit_margin_ma, settle_bound_s, window_bound_s
from tests.plant.harness import SentCommand, Trace, run_plant_async
from tests.plant.model import (
    Car,
    CarSpec,
    Command,
    Curve,
    Disturbance,
    MeterSpec,
    PlantSpec,
    Wallbox,
    WallboxSpec,
)
from tests.plant.plants import demo_plant, random_plant


def drive(car: Car, until: float, dt: float = 0.1, t0: float = 0.0) -> list[tuple[float, int]]:
    out = []
    t = t0
    while t < until - 1e-9:
        t = round(t + dt, 6)
        out.append((t, car.step(t, dt)))
    return out


def test_a_car_follows_a_new_pilot_only_after_its_delay_then_ramps() -> None:
    car = Car(CarSpec(phases=3, delay_s=2.0, ramp_up_ma_per_s=2000.0))
    car.offered(0.0, 16_000)
    seen = dict(drive(car, 10.0))
    assert seen[1.9] == 0  # still waiting
    assert seen[2.0] == 6000  # starts at 6 A
    assert seen[3.0] == 8000  # then 2 A/s
    assert seen[7.0] == 16_000 and seen[10.0] == 16_000


def test_a_decrease_is_a_step_after_the_delay_or_a_fast_ramp() -> None:
    step = Car(CarSpec(delay_s=1.0, ramp_up_ma_per_s=100_000.0))
    ramp = Car(CarSpec(delay_s=1.0, ramp_up_ma_per_s=100_000.0, ramp_down_ma_per_s=10_000.0))
    for car in (step, ramp):
        car.offered(0.0, 16_000)
        drive(car, 5.0)
        car.offered(5.0, 6000)
    s, r = dict(drive(step, 8.0, t0=5.0)), dict(drive(ramp, 8.0, t0=5.0))
    assert s[5.9] == 16_000 and s[6.0] == 6000
    assert r[5.9] == 16_000 and r[6.0] == 15_000 and r[6.5] == 10_000 and r[7.0] == 6000


def test_a_pilot_below_6_a_stops_one_car_and_not_another() -> None:
    stops = Car(CarSpec(delay_s=0.0, below_min="stop"))
    ignores = Car(CarSpec(delay_s=0.0, below_min="ignore"))
    for car in (stops, ignores):
        car.offered(0.0, 10_000)
        drive(car, 5.0)
        car.offered(5.0, 4000)
    assert drive(stops, 6.0, t0=5.0)[-1][1] == 0
    assert drive(ignores, 6.0, t0=5.0)[-1][1] == 6000


def test_the_car_takes_no_more_than_its_own_maximum_nor_the_wallbox_more_than_its() -> None:
    car = CarSpec(phases=1, delay_s=0.0, max_ma=10_000, ramp_up_ma_per_s=1e6)
    wb = Wallbox(WallboxSpec("E1", car, max_ma=16_000, rotation=2))
    wb.apply(0.0, Command(True, True, False, 32_000))
    assert wb.offer_ma == 16_000
    for k in range(1, 5):
        wb.step(k * 0.1, 0.1)
    assert wb.local_draw == (10_000, 0, 0)
    assert wb.grid_draw == (0, 0, 10_000)  # its L1 is the grid's L3
    wb.apply(1.0, Command(True, True, True, 16_000))  # paused
    assert wb.offer_ma == 0


def test_a_curve_steps_and_interpolates() -> None:
    curve = Curve.steps((1000, 1000, 1000), [(10.0, (5000, 0, 0))])
    assert curve.at(9.99) == (1000, 1000, 1000) and curve.at(10.0) == (5000, 0, 0)
    ramp = Curve(((0.0, (0, 0, 0)), (10.0, (10_000, 0, 0))))
    assert ramp.at(2.5) == (2500, 0, 0) and ramp.at(99.0) == (10_000, 0, 0)


async def test_a_run_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    a = await run_plant_async(random_plant("mixed", 3, duration_s=40.0))
    b = await run_plant_async(random_plant("mixed", 3, duration_s=40.0))
    c = await run_plant_async(random_plant("mixed", 4, duration_s=40.0))
    assert a.commands == b.commands and a.draws == b.draws
    assert a.commands != c.commands


async def test_meter_readings_arrive_out_of_order_where_the_plant_says_so() -> None:
    spec = random_plant("out-of-order", 0, duration_s=60.0)
    trace = await run_plant_async(spec)
    assert trace.out_of_order > 0
    calm = await run_plant_async(demo_plant(duration_s=60.0))
    assert calm.out_of_order == 0


async def test_the_core_runs_on_arrivals_and_every_cycle_and_its_commands_reach_the_cars() -> None:
    spec = demo_plant(duration_s=30.0)
    trace = await run_plant_async(spec)
    # Three devices reporting about once a second, and the cycle: well over one run a second.
    assert trace.runs > 2 * 30
    assert trace.failures == 0
    assert {c.dev_id for c in trace.commands} == {"E1", "E2"}
    # The cars charge: what the core commanded reached them.
    assert max(d[0] for d in trace.draws["E1"]) >= 6000
    assert max(d[0] for d in trace.draws["E2"]) >= 6000
    assert max(d[1] for d in trace.draws["E2"]) == 0  # one phase


async def test_the_figures_see_an_overload_the_core_is_told_not_to_prevent() -> None:
    # Observation mode: every EVSE is commanded its maximum whatever the fuse says. Two
    # 16 A cars and 2 A of other load on L1 of a 25 A fuse: 9 A over, for good.
    spec = replace(demo_plant(duration_s=40.0), extra_params={"lb_enabled": False})
    figures = compute(spec, await run_plant_async(spec))
    assert figures.peak_excess_ma >= 8000
    assert figures.seconds_over > 20
    assert any(e.disturbance is None for e in figures.episodes)
    assert figures.problems()


def synthetic(
    commands: list[tuple[float, int]], duration_s: float = 90.0
) -> tuple[PlantSpec, Trace]:
    """A one-wallbox plant and a trace in which its car wants to charge throughout and the
    core sent `commands` (t, offered mA; 0 = paused); the car draws what is offered."""
    spec = PlantSpec(
        name="synthetic",
        seed=0,
        max_total_ma=25_000,
        wallboxes=(WallboxSpec("E1", CarSpec(phases=3), used_phases=7),),
        meters=(MeterSpec("M1", role=3),),
        base_load=Curve.constant((2000, 2000, 2000)),
        duration_s=duration_s,
        dt_s=0.5,
    )
    trace = Trace()
    sent = sorted(commands)
    trace.commands = [SentCommand(t, "E1", Command(True, True, ma == 0, ma)) for t, ma in sent]
    for k in range(int(duration_s / 0.5) + 1):
        t = k * 0.5
        offer = next((ma for ct, ma in reversed(sent) if ct <= t), 0)
        trace.t.append(t)
        trace.other.append((2000, 2000, 2000))
        trace.main_limit.append(25_000)
        trace.draws.setdefault("E1", []).append((offer, offer, offer))
        trace.offers.setdefault("E1", []).append(offer)
        trace.wants.setdefault("E1", []).append(True)
        trace.plugged.setdefault("E1", []).append(True)
    return spec, trace


def test_a_minimum_fits_with_the_resume_margin_and_the_meters_noise_to_spare() -> None:
    """The core sees the other load through noisy readings (held at their peak): a minimum
    that fits by less than resume_margin plus twice the noise is not one it must see fit."""
    spec, trace = synthetic([(0.0, 16_000), (20.0, 0)])
    noise = spec.meters[0].noise_ma
    assert noise > 0
    margin = fit_margin_ma(spec)
    assert margin == 1000 + 2 * noise
    for spare, found in ((margin - 100, False), (margin + 100, True)):
        other = 25_000 - 6000 - spare
        trace.other[:] = [(other, other, other)] * len(trace.t)
        paused = compute(spec, trace).paused_while_min_fit
        assert bool(paused) is found, spare


def test_settle_time_ends_when_the_commands_stay_within_the_band_of_where_they_end() -> None:
    spec, trace = synthetic([(0.0, 6000), (5.0, 12_000), (10.0, 16_000), (12.0, 15_900)])
    figures = compute(spec, trace)
    assert figures.settle_s == ((0.0, 10.0),)  # the 100 mA change at 12 s is within the band
    assert figures.changes_per_min == {"E1": 0.0}
    # A raise of the deadband's size long after: within 500 mA of where it ends, so the site
    # had settled at 10 s; the raise is a change of the steady state.
    spec, trace = synthetic([(0.0, 6000), (10.0, 15_600), (40.0, 15_950)])
    figures = compute(spec, trace)
    assert figures.settle_s == ((0.0, 10.0),)
    assert figures.changes_per_min["E1"] > 0
    # One that ends 600 mA away is settling: it ends the settle time.
    spec, trace = synthetic([(0.0, 6000), (10.0, 15_400), (25.0, 16_000)])
    assert compute(spec, trace).settle_s == ((0.0, 25.0),)


def test_the_settle_bound_allows_the_raises_a_slow_cars_rise_takes_and_no_more() -> None:
    # A car at 1 A/s taken from nothing to 32 A in steps of 6 A (ramp_step): six raises,
    # each awaiting its delay and a reading, and 32 s of ramp. Two raises do not cover it.
    spec, trace = synthetic(
        [(0.0, 6000), (7.0, 12_000), (14.0, 18_000), (21.0, 24_000), (28.0, 30_000), (35.0, 32_000)]
    )
    car = CarSpec(phases=3, max_ma=32_000, ramp_up_ma_per_s=1000.0)
    spec = replace(spec, wallboxes=(replace(spec.wallboxes[0], car=car, max_ma=32_000),))
    changes = {"E1": [(c.t, c.command) for c in trace.commands]}
    slow = window_bound_s(spec, changes, 0.0, 90.0)
    assert slow > settle_bound_s(spec)
    # The last raise at 35 s, then the car's delay and its 2 A at 1 A/s.
    assert slow >= 35.0 + car.delay_s + 2.0
    # The same plant with one raise of 1 A in the window: the spec's bound.
    on = Command(True, True, False, 16_000)
    small = {"E1": [(0.0, on), (5.0, Command(True, True, False, 17_000))]}
    assert window_bound_s(spec, small, 0.0, 90.0) == settle_bound_s(spec)


def test_a_raise_sent_before_any_reading_showed_a_disturbance_is_an_old_command() -> None:
    """Base load 2 -> 14 A from 10 s to 14 s on a 25 A fuse; the car had 10 A and is raised
    to 12 A (26 A: 1 A over). A raise decided on the readings before the step that goes out
    before the first reading taken after it arrives (10.5 s) is what the old commands
    explain; one sent after that reading is not."""

    def excess_unexplained(raise_at: float) -> int:
        spec, trace = synthetic([(0.0, 10_000), (raise_at, 12_000)], duration_s=30.0)
        spec = replace(spec, disturbances=(Disturbance(10.0, "base load up", True),))
        for i, t in enumerate(trace.t):
            if 10.0 <= t < 14.0:
                trace.other[i] = (14_000, 14_000, 14_000)
        trace.meter_readings = [(k + 0.5, float(k)) for k in range(30)]
        episodes = compute(spec, trace).episodes
        assert episodes and episodes[0].peak_ma == 1000
        return max(e.unexplained_ma for e in episodes)

    assert excess_unexplained(10.0) == 0
    assert excess_unexplained(12.0) == 1000


def test_changes_in_steady_state_are_counted_per_minute() -> None:
    spec, trace = synthetic([(0.0, 16_000), (40.0, 15_900), (50.0, 16_000), (70.0, 15_900)])
    figures = compute(spec, trace)
    # Steady from 30 s to 90 s: three changes in one minute.
    assert figures.changes_per_min == {"E1": 3.0}
    assert figures.problems()


def test_a_pause_while_the_minimum_fits_is_found_and_one_that_is_needed_is_not() -> None:
    spec, trace = synthetic([(0.0, 16_000), (20.0, 0)])
    found = compute(spec, trace).paused_while_min_fit
    assert [(t, d) for t, d, _ in found] == [(20.0, "E1")]
    # The same pause with 20 A of other load: 6 A no longer fit beside it with 1 A to spare.
    trace.other[:] = [(20_000, 20_000, 20_000)] * len(trace.t)
    assert compute(spec, trace).paused_while_min_fit == ()


def test_a_car_still_drawing_after_its_pause_takes_its_draw_from_the_room() -> None:
    """E1 is paused at 20 s while E2, paused at 15 s, still draws 10 A until its car follows
    at 25 s: beside 10 A of other load on the 25 A fuse, E1's 6 A did not fit at that moment
    (the fuse read 26 A), so the pause is no pause while the minimum fits. Counted without
    E2's draw, it was (plugging 39: L2 at 50.5 A on a 40 A fuse)."""
    spec, trace = synthetic([(0.0, 8000), (20.0, 0)], duration_s=40.0)
    spec = replace(
        spec,
        wallboxes=(
            *spec.wallboxes,
            WallboxSpec("E2", CarSpec(phases=3), used_phases=7, pause_min_time_s=300),
        ),
    )
    spec = replace(
        spec, wallboxes=(replace(spec.wallboxes[0], pause_min_time_s=300), spec.wallboxes[1])
    )
    trace.commands = sorted(
        [*trace.commands, SentCommand(0.0, "E2", Command(True, True, False, 10_000)),
         SentCommand(15.0, "E2", Command(True, True, True, 0))],
        key=lambda c: c.t,
    )  # fmt: skip
    for t in trace.t:
        drawing = 10_000 if t < 25.0 else 0  # its car follows the pause 10 s late
        trace.draws.setdefault("E2", []).append((drawing, drawing, drawing))
        trace.offers.setdefault("E2", []).append(10_000 if t < 15.0 else 0)
        trace.wants.setdefault("E2", []).append(True)
        trace.plugged.setdefault("E2", []).append(True)
    trace.other[:] = [(10_000, 10_000, 10_000)] * len(trace.t)
    found = [(t, d, why) for t, d, why in compute(spec, trace).paused_while_min_fit]
    assert not [f for f in found if f[1] == "E1" and f[2] == "when it was paused"], found
    # Had E2 followed its pause at once, E1's minimum fitted beside the other load.
    for k, t in enumerate(trace.t):
        if t >= 15.0:
            trace.draws["E2"][k] = (0, 0, 0)
    found = [(t, d, why) for t, d, why in compute(spec, trace).paused_while_min_fit]
    assert ("E1", "when it was paused") in [(d, why) for _, d, why in found], found
