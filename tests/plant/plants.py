"""Plants to run the load manager against: the demo's, the issue's scenarios, and random ones
drawn from a seed (one generator per kind of plant; the same seed gives the same plant)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from tests.plant.model import (
    CarSpec,
    Curve,
    Disturbance,
    GroupSpec,
    MeterSpec,
    ParamsChange,
    Phases3,
    PlantSpec,
    WallboxSpec,
)

# The demo (service/demo.py): a 25 A fuse, 2 A of other load, a 3-phase and a 1-phase car
# that ramp at 3 A/s behind two Power Brains, a simulated SDM630 polled every second.
DEMO_FUSE_MA = 25_000
DEMO_BASE_MA = 2_000


def demo_wallbox(dev_id: str, phases: Literal[1, 3]) -> WallboxSpec:
    return WallboxSpec(
        dev_id=dev_id,
        dev_type="evse_powerbrain",
        car=CarSpec(phases=phases, delay_s=0.3, ramp_up_ma_per_s=3000.0),
        pause_min_time_s=10,
        report_period_s=1.0,
        report_jitter_s=0.05,
        report_lag_s=(0.02, 0.1),
        command_delay_s=0.3,
    )


def demo_grid_meter() -> MeterSpec:
    return MeterSpec("M1", role=3, poll_period_s=1.0, poll_jitter_s=0.05, lag_s=(0.02, 0.1),
                     noise_ma=0)  # fmt: skip


def demo_plant(
    *,
    duration_s: float = 60.0,
    changes: tuple[ParamsChange, ...] = (),
    disturbances: tuple[Disturbance, ...] = (),
    seed: int = 0,
) -> PlantSpec:
    return PlantSpec(
        name="demo",
        seed=seed,
        max_total_ma=DEMO_FUSE_MA,
        wallboxes=(demo_wallbox("E1", 3), demo_wallbox("E2", 1)),
        meters=(demo_grid_meter(),),
        base_load=Curve.constant((DEMO_BASE_MA,) * 3),
        cycle_time_ms=1000,
        duration_s=duration_s,
        dt_s=0.05,
        changes=changes,
        disturbances=disturbances,
    )


SURPLUS_RULE: dict[str, object] = {"mode": 5, "enabled": True}


def surplus_flap_plant(seed: int = 0) -> PlantSpec:
    """One wallbox charging from a solar surplus (rule mode 5); a cloud at 40 s leaves less
    than its minimum. The grid meter is read every 0.5 s, the wallbox reports every 2.5 s:
    readings taken after the car stopped arrive before the wallbox says so."""
    wb = WallboxSpec(
        dev_id="E1",
        car=CarSpec(phases=3, delay_s=1.0, ramp_up_ma_per_s=2000.0, max_ma=16_000),
        used_phases=7,
        pause_min_time_s=10,
        report_period_s=2.5,
        report_jitter_s=0.2,
        report_lag_s=(0.3, 1.0),
        command_delay_s=0.2,
        charging_rules=(SURPLUS_RULE,),
    )
    return PlantSpec(
        name="surplus-flap",
        seed=seed,
        max_total_ma=32_000,
        wallboxes=(wb,),
        meters=(
            MeterSpec("M1", role=3, poll_period_s=0.5, poll_jitter_s=0.05, lag_s=(0.02, 0.1)),
            MeterSpec("M2", role=2, poll_period_s=0.5, poll_jitter_s=0.05, lag_s=(0.02, 0.1)),
        ),
        base_load=Curve.constant((1000, 1000, 1000)),
        solar=Curve.steps((12_000,) * 3, [(40.0, (4000,) * 3)]),
        duration_s=120.0,
        disturbances=(Disturbance(40.0, "cloud: solar 12 A -> 4 A", True),),
    )


def surplus_sharing_plant(seed: int = 0, surplus_ma: int = 20_000) -> PlantSpec:
    """Two wallboxes with a solar-surplus rule (mode 5) and 3-phase cars that could take
    32 A; the sun gives `surplus_ma` per phase and nothing else draws."""

    def wb(dev_id: str) -> WallboxSpec:
        return WallboxSpec(
            dev_id=dev_id,
            car=CarSpec(phases=3, delay_s=1.0, ramp_up_ma_per_s=3000.0, max_ma=32_000),
            max_ma=32_000,
            used_phases=7,
            report_period_s=1.0,
            command_delay_s=0.2,
            charging_rules=(SURPLUS_RULE,),
        )

    return PlantSpec(
        name="surplus-sharing",
        seed=seed,
        max_total_ma=63_000,
        wallboxes=(wb("E1"), wb("E2")),
        meters=(
            MeterSpec("M1", role=3, poll_period_s=1.0, lag_s=(0.05, 0.3)),
            MeterSpec("M2", role=2, poll_period_s=1.0, lag_s=(0.05, 0.3)),
        ),
        base_load=Curve.constant((0, 0, 0)),
        solar=Curve.constant((surplus_ma,) * 3),
        duration_s=90.0,
    )


# -- random plants ----------------------------------------------------------------------------


def _car(rng: random.Random, *, plug_at: float = 0.0) -> CarSpec:
    phases: Literal[1, 3] = 3 if rng.random() < 0.6 else 1
    return CarSpec(
        phases=phases,
        max_ma=rng.choice([10_000, 13_000, 16_000, 16_000, 16_000, 20_000, 32_000]),
        delay_s=round(rng.uniform(0.0, 5.0), 1),
        ramp_up_ma_per_s=rng.choice([1000.0, 2000.0, 3000.0, 5000.0, 10_000.0]),
        ramp_down_ma_per_s=rng.choice([None, None, 10_000.0, 20_000.0]),
        below_min=rng.choice(["stop", "ignore"]),
        plug_at_s=plug_at,
    )


def _wallbox(
    rng: random.Random, index: int, *, report: Literal["regular", "late", "silent"] = "regular"
) -> WallboxSpec:
    late = report == "late"
    car = _car(rng)
    # Configured phases, when given, are the car's (a wallbox configured for three phases
    # with a 1-phase car is rightly budgeted on all three; that is not what is measured here).
    return WallboxSpec(
        dev_id=f"E{index}",
        car=car,
        dev_type=rng.choice(["evse_ajax", "evse_powerbrain"]),
        max_ma=rng.choice([16_000, 16_000, 32_000]),
        rotation=rng.randrange(3),
        used_phases=rng.choice([0, 0, 7 if car.phases == 3 else 1]),
        pause_min_time_s=rng.choice([10, 30]),
        report=report,
        report_period_s=round(rng.uniform(0.8, 1.5), 2),
        report_jitter_s=0.2,
        report_lag_s=(0.3, 2.0) if late else (0.02, 0.3),
        command_delay_s=round(rng.uniform(0.05, 0.5), 2),
    )


def _grid_meter(rng: random.Random, *, out_of_order: bool = False) -> MeterSpec:
    return MeterSpec(
        "M1",
        role=3,
        poll_period_s=round(rng.uniform(0.5, 1.5), 2),
        poll_jitter_s=0.1,
        lag_s=(0.1, 2.5) if out_of_order else (0.02, round(rng.uniform(0.1, 0.8), 2)),
        noise_ma=rng.choice([0, 50, 100]),
    )


def _base_steps(
    rng: random.Random, fuse: int, times: tuple[float, ...]
) -> tuple[Curve, tuple[Disturbance, ...]]:
    def level() -> Phases3:
        top = max(1000, fuse - 10_000)
        return (rng.randrange(500, top), rng.randrange(500, top), rng.randrange(500, top))

    first = level()
    changes: list[tuple[float, Phases3]] = []
    disturbances: list[Disturbance] = []
    value = first
    for t in times:
        new = level()
        changes.append((t, new))
        up = any(b > a for a, b in zip(value, new, strict=True))
        disturbances.append(Disturbance(t, f"base load {value} -> {new}", up))
        value = new
    return Curve.steps(first, changes), tuple(disturbances)


PlantKind = Literal["mixed", "groups", "late", "plugging", "out-of-order"]
DISTURBANCE_TIMES = (60.0, 120.0, 180.0, 240.0)


def random_plant(kind: PlantKind, seed: int, *, duration_s: float = 120.0) -> PlantSpec:
    """A plant of `kind` drawn from `seed`: 2-4 wallboxes with random cars (delay 0-5 s,
    ramps 1-10 A/s, 1 or 3 phases, own maximum 10-32 A, stopping or ignoring a pilot below
    6 A), a 25-40 A fuse, a base-load step every 60 s."""
    rng = random.Random(f"{kind}-{seed}")
    fuse = rng.choice([25_000, 32_000, 35_000, 40_000])
    count = rng.randint(2, 4)
    times = tuple(t for t in DISTURBANCE_TIMES if t < duration_s)
    wallboxes = []
    for i in range(1, count + 1):
        report: Literal["regular", "late", "silent"] = "regular"
        if kind == "late":
            report = rng.choice(["regular", "late", "late", "silent"]) if i > 1 else "late"
        wallboxes.append(_wallbox(rng, i, report=report))
    base, disturbances = _base_steps(rng, fuse, times)
    groups: tuple[GroupSpec, ...] = ()
    if kind == "groups":
        groups = (GroupSpec(1, rng.choice([16_000, 20_000, 25_000])),)
        wallboxes = [replace(w, group=1) if i < 2 else w for i, w in enumerate(wallboxes)]
    if kind == "plugging":
        # One car arrives late and another leaves (a car that stays plugged in with a full
        # battery is another matter: the core cannot tell it from one that will draw again).
        plug = rng.uniform(20.0, duration_s - 40.0)
        last = wallboxes[-1]
        assert last.car is not None
        wallboxes[-1] = replace(last, car=replace(last.car, plug_at_s=plug))
        first = wallboxes[0]
        assert first.car is not None
        leave = rng.uniform(20.0, duration_s - 40.0)
        wallboxes[0] = replace(first, car=replace(first.car, unplug_at_s=leave))
        disturbances = (
            *disturbances,
            Disturbance(plug, f"{last.dev_id}: car plugged in", False),
            Disturbance(leave, f"{first.dev_id}: car unplugged", False),
        )
    return PlantSpec(
        name=kind,
        seed=seed,
        max_total_ma=fuse,
        wallboxes=tuple(wallboxes),
        meters=(_grid_meter(rng, out_of_order=kind == "out-of-order"),),
        base_load=base,
        groups=groups,
        cycle_time_ms=rng.choice([1000, 1000, 2000, 3000]),
        duration_s=duration_s,
        dt_s=0.2,
        disturbances=tuple(sorted(disturbances, key=lambda d: d.t)),
    )


def solar_plant(seed: int, *, duration_s: float = 300.0) -> PlantSpec:
    """For the benchmark: 2-3 wallboxes with a surplus rule, a production meter and a sun
    that rises and falls with passing clouds."""
    rng = random.Random(f"solar-{seed}")
    count = rng.randint(2, 3)
    wallboxes = tuple(
        replace(_wallbox(rng, i), charging_rules=(SURPLUS_RULE,), used_phases=7)
        for i in range(1, count + 1)
    )
    peak = rng.randrange(15_000, 30_000)
    points: list[tuple[float, Phases3]] = [(0.0, (peak // 2,) * 3)]
    disturbances: list[Disturbance] = []
    t = 0.0
    level = peak // 2
    while t < duration_s - 60:
        t += rng.uniform(40.0, 80.0)
        new = rng.randrange(peak // 5, peak)
        points += [(t, (level,) * 3), (t, (new,) * 3)]
        disturbances.append(Disturbance(t, f"solar {level} -> {new} mA", new < level))
        level = new
    return PlantSpec(
        name="solar",
        seed=seed,
        max_total_ma=40_000,
        wallboxes=wallboxes,
        meters=(_grid_meter(rng), MeterSpec("M2", role=2, poll_period_s=1.0)),
        base_load=Curve.constant((rng.randrange(500, 3000),) * 3),
        solar=Curve(tuple(points)),
        duration_s=duration_s,
        disturbances=tuple(disturbances),
    )


RANDOM_KINDS: tuple[PlantKind, ...] = ("mixed", "groups", "late", "plugging", "out-of-order")
GENERATORS: dict[str, Callable[[int], PlantSpec]] = {
    **{k: (lambda seed, k=k: random_plant(k, seed)) for k in RANDOM_KINDS},  # type: ignore[misc]
    "solar": solar_plant,
}


def demo_fuse_lowered_plant(seed: int = 0) -> PlantSpec:
    """The demo; at 40 s the fuse is lowered to 16 A with set_params. 14 A are left on L1,
    where both cars charge: 7 A each fits."""
    return demo_plant(
        duration_s=120.0,
        seed=seed,
        changes=(ParamsChange(40.0, {"max_total_current": 16_000}),),
        disturbances=(Disturbance(40.0, "fuse 25 A -> 16 A", True, measured=False),),
    )


def demo_silent_evse_plant(seed: int = 0) -> PlantSpec:
    """The demo; at 30 s an HTTP-input EVSE is added that never reports. It counts at its
    maximum (16 A on every phase), so 7 A are left per phase: one car's minimum fits on L1,
    not both."""
    demo = demo_plant(
        duration_s=150.0,
        seed=seed,
        disturbances=(Disturbance(30.0, "a silent HTTP-input EVSE added", False, measured=False),),
    )
    silent = WallboxSpec(dev_id="E3", car=None, report="silent", added_at_s=30.0)
    return replace(demo, wallboxes=(*demo.wallboxes, silent))
