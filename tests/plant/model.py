"""The physical site a load manager acts on, in simulated time: cars, wallboxes, meters, base
load and solar. Pure and deterministic: every random choice was made when the plant was built
(see plants.py); stepping it only moves the physics.

All currents are mA. A wallbox's own phases (L1..L3 as it reports them) reach the grid
phases through its rotation: local phase i is grid phase (i + rotation) % 3, as the cFos
`phase_rotation` values 0..2 say.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

MIN_CAR_MA = 6000  # IEC 61851: no car charges below 6 A
Phases3 = tuple[int, int, int]
ZERO: Phases3 = (0, 0, 0)


# -- specifications (what a plant is made of; frozen, built by plants.py) ----------------------


@dataclass(frozen=True)
class CarSpec:
    phases: Literal[1, 3] = 3
    max_ma: int = 16_000  # the car's own maximum; may be below the EVSE's
    delay_s: float = 2.0  # from the wallbox's new pilot until the car starts to follow it
    ramp_up_ma_per_s: float = 3000.0
    # None: a decrease is one step once the delay has passed; else a (fast) ramp.
    ramp_down_ma_per_s: float | None = None
    # A pilot below 6 A: "stop" charging (as IEC 61851 says), or "ignore" it and keep 6 A.
    below_min: Literal["stop", "ignore"] = "stop"
    plug_at_s: float = 0.0
    # The battery is full: the car stops drawing and the EVSE reports state 2.
    full_at_s: float | None = None
    unplug_at_s: float | None = None


@dataclass(frozen=True)
class WallboxSpec:
    dev_id: str
    car: CarSpec | None
    dev_type: Literal["evse_ajax", "evse_powerbrain"] = "evse_ajax"
    min_ma: int = 6000
    max_ma: int = 16_000
    rotation: int = 0  # 0..2: the grid phase of its L1
    used_phases: int = 0  # as configured; 0 = the core learns them
    group: int = 0
    pause_min_time_s: int = 10
    # "regular": every report_period_s ± jitter; "late": the same, but each arrives after a
    # lag of up to report_lag_s[1]; "silent": never reports (an HTTP-input EVSE nobody feeds).
    report: Literal["regular", "late", "silent"] = "regular"
    report_period_s: float = 1.0
    report_jitter_s: float = 0.2
    report_lag_s: tuple[float, float] = (0.02, 0.2)
    # From the core's command until the wallbox applies it (bridge, Modbus write).
    command_delay_s: float = 0.2
    charging_rules: tuple[dict[str, object], ...] = ()
    # What the wallbox offers before it heard any command (0 = disabled, as a Power Brain
    # starts in the demo).
    initial_offer_ma: int = 0
    # Configured with set_params at this time (0: from the start).
    added_at_s: float = 0.0


@dataclass(frozen=True)
class MeterSpec:
    dev_id: str
    role: Literal[2, 3]  # 2 production (solar), 3 grid demand
    poll_period_s: float = 1.0
    poll_jitter_s: float = 0.1
    # From the measurement (its `ts`) until the core has it; readings whose lags differ by
    # more than a poll period arrive out of order.
    lag_s: tuple[float, float] = (0.05, 0.3)
    noise_ma: int = 100  # uniform ± noise on each phase
    silent: bool = False


@dataclass(frozen=True)
class GroupSpec:
    id: int
    max_ma: int
    parent: int = 0


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear function of time, per phase: (t, (l1, l2, l3)) points; constant
    before the first and after the last. Two points at the same t make a step."""

    points: tuple[tuple[float, Phases3], ...]

    def at(self, t: float) -> Phases3:
        pts = self.points
        if not pts:
            return ZERO
        times = [p[0] for p in pts]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return pts[0][1]
        if i == len(pts):
            return pts[-1][1]
        (t0, a), (t1, b) = pts[i - 1], pts[i]
        if t1 <= t0:
            return b
        f = (t - t0) / (t1 - t0)
        return (
            round(a[0] + (b[0] - a[0]) * f),
            round(a[1] + (b[1] - a[1]) * f),
            round(a[2] + (b[2] - a[2]) * f),
        )

    @staticmethod
    def constant(value: Phases3) -> Curve:
        return Curve(((0.0, value),))

    @staticmethod
    def steps(first: Phases3, changes: Sequence[tuple[float, Phases3]]) -> Curve:
        points: list[tuple[float, Phases3]] = [(0.0, first)]
        value = first
        for t, new in changes:
            points.append((t, value))
            points.append((t, new))
            value = new
        return Curve(tuple(points))


@dataclass(frozen=True)
class Disturbance:
    """Something that changed at t without the load manager: the settle time and the bound
    on excess are measured from it."""

    t: float
    what: str
    raises_load: bool  # base load up, solar down, a limit lowered
    # The core learns of it only from a meter reading taken after it (base load, sun); a
    # change of the parameters it learns at once.
    measured: bool = True


@dataclass(frozen=True)
class ParamsChange:
    """A set_params body sent at t (as /cnf set_params would)."""

    t: float
    body: dict[str, object]


@dataclass(frozen=True)
class PlantSpec:
    name: str
    seed: int
    max_total_ma: int
    wallboxes: tuple[WallboxSpec, ...]
    meters: tuple[MeterSpec, ...]
    base_load: Curve  # per grid phase, everything that is not an EVSE
    solar: Curve = field(default_factory=lambda: Curve.constant(ZERO))  # production per phase
    groups: tuple[GroupSpec, ...] = ()
    cycle_time_ms: int = 1000
    duration_s: float = 60.0
    dt_s: float = 0.1
    extra_params: dict[str, object] = field(default_factory=dict)
    changes: tuple[ParamsChange, ...] = ()
    disturbances: tuple[Disturbance, ...] = ()


# -- the moving parts ---------------------------------------------------------------------


def grid_phase(rotation: int, local: int) -> int:
    return (local + rotation) % 3


class Car:
    """A car behind a wallbox: follows the pilot only `delay_s` after it changed, then ramps."""

    def __init__(self, spec: CarSpec) -> None:
        self.spec = spec
        self.draw_ma = 0
        # (time the car acts on it, offered mA), in time order.
        self._pilot: list[tuple[float, int]] = [(0.0, 0)]

    def offered(self, t: float, offer_ma: int) -> None:
        """The wallbox changed its pilot at t."""
        self._pilot.append((t + self.spec.delay_s, offer_ma))

    def plugged(self, t: float) -> bool:
        s = self.spec
        return s.plug_at_s <= t and (s.unplug_at_s is None or t < s.unplug_at_s)

    def wants_charge(self, t: float) -> bool:
        return self.plugged(t) and (self.spec.full_at_s is None or t < self.spec.full_at_s)

    def _followed(self, t: float) -> int:
        while len(self._pilot) > 1 and self._pilot[1][0] <= t:
            self._pilot.pop(0)
        return self._pilot[0][1]

    def step(self, t: float, dt: float) -> int:
        s = self.spec
        pilot = self._followed(t)
        if not self.wants_charge(t) or pilot <= 0:
            want = 0
        elif pilot < MIN_CAR_MA:
            want = min(MIN_CAR_MA, s.max_ma) if s.below_min == "ignore" else 0
        else:
            want = min(pilot, s.max_ma)
        draw = self.draw_ma
        if want > draw:
            # A car that starts begins at 6 A and ramps from there.
            start = max(draw, min(MIN_CAR_MA, want))
            draw = min(want, round(start + s.ramp_up_ma_per_s * dt)) if draw else start
        elif want < draw:
            if s.ramp_down_ma_per_s is None or want == 0:
                draw = want
            else:
                draw = max(want, round(draw - s.ramp_down_ma_per_s * dt))
        self.draw_ma = draw
        return draw

    def state(self, t: float) -> int:
        if not self.plugged(t):
            return 1
        return 3 if self.draw_ma > 0 else 2


@dataclass(frozen=True)
class Command:
    device_enabled: bool
    charging_enabled: bool
    paused: bool
    charging_current: int

    @property
    def offer_ma(self) -> int:
        on = self.device_enabled and self.charging_enabled and not self.paused
        return self.charging_current if on else 0


class Wallbox:
    def __init__(self, spec: WallboxSpec) -> None:
        self.spec = spec
        self.car = Car(spec.car) if spec.car is not None else None
        self.offer_ma = spec.initial_offer_ma
        self.command: Command | None = None
        # What it draws on the grid's phases since its last step.
        self.grid_draw: Phases3 = ZERO
        if self.car is not None and self.offer_ma:
            self.car.offered(0.0, self.offer_ma)

    def apply(self, t: float, command: Command) -> None:
        self.command = command
        # The wallbox's own maximum caps whatever it is told.
        offer = min(command.offer_ma, self.spec.max_ma)
        if offer != self.offer_ma:
            self.offer_ma = offer
            if self.car is not None:
                self.car.offered(t, offer)

    def step(self, t: float, dt: float) -> int:
        drawn = self.car.step(t, dt) if self.car is not None else 0
        self.grid_draw = self._grid_draw()
        return drawn

    @property
    def local_draw(self) -> Phases3:
        if self.car is None or not self.car.draw_ma:
            return ZERO
        d = self.car.draw_ma
        return (d, d, d) if self.car.spec.phases == 3 else (d, 0, 0)

    def _grid_draw(self) -> Phases3:
        out = [0, 0, 0]
        for local, ma in enumerate(self.local_draw):
            out[grid_phase(self.spec.rotation, local)] += ma
        return (out[0], out[1], out[2])

    def wants_charge(self, t: float) -> bool:
        return self.car is not None and self.car.wants_charge(t)

    def grid_phases_of_car(self) -> tuple[int, ...]:
        if self.car is None:
            return ()
        n = self.car.spec.phases
        return tuple(grid_phase(self.spec.rotation, i) for i in range(n))

    def report(self, t: float, epoch: float) -> dict[str, object]:
        state = self.car.state(t) if self.car is not None else 1
        local = self.local_draw
        payload: dict[str, object] = {
            "ts": epoch + t,
            "state": state,
            "current": list(local),
            "power_w": round(sum(local) / 1000 * 230.0, 1),
        }
        if self.spec.dev_type == "evse_powerbrain":
            payload["applied_current"] = self.offer_ma
            payload["applied_enabled"] = self.offer_ma > 0
        return payload
