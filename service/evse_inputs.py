"""What the allocation reads of one EVSE (EvseInput), made from its run time and the control
law's memory: its state and age, the draw paired with the grid reading (pairing), and what the
control law knows of its transitions (ramp credit, draw spread, a maximum just lowered).

Two ways to the same answer. Most EVSEs of a site are settled (neither raised nor cut within
the windows below) and take `settled_evse_input`, a short way that skips every question about
transitions; the others take `evse_input`. A run at a thousand EVSEs makes a thousand of
these between a meter reading and its commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from service.core import allocation as core
from service.core import pairing
from service.core.allocation import EvseInput
from service.core.allocation.views import new
from service.core.control_law import ControlMemory, EvseControl, in_transition, is_following
from service.core.models import EvseConfig, EvseState, Params
from service.core.runtime import DeviceRuntime

# How much longer than the ramp window a car that is still seen rising keeps its ramp credit
# (pairing.still_rising; a car at 1 A/s from 6 to 32 A ramps for half a minute).
RISING_WINDOW_FACTOR = 3


@dataclass(frozen=True, slots=True)
class Windows:
    """How long (s) the control law's transitions count."""

    ramp: float  # a raise: its car starts within follow_time and may ramp as long again
    rising: float  # a car still seen rising keeps its credit this long, bounded
    follow: float  # a cut: its car may draw its old command until it followed, this long

    @classmethod
    def of(cls, params: Params) -> Windows:
        # The credit lends no budget: hold_peaks keeps the last figure made without one
        # (pairing.counted_current). Without a hold there is no credit.
        ramp = 2 * params.follow_time if params.load_hold_time > 0 else 0
        return cls(ramp, RISING_WINDOW_FACTOR * ramp, params.follow_time)

    @property
    def moving(self) -> float:
        """How long a raise, or a cut not yet followed, makes an EVSE one in transition."""
        return max(self.ramp, self.rising)


def age_of(runtime: DeviceRuntime | None, now: float) -> float | None:
    if runtime is None or runtime.received_at is None:
        return None
    return now - runtime.received_at


def is_settled(ctl: EvseControl | None, now: float, window_s: float) -> bool:
    """Neither raised nor cut-and-still-following within `window_s` (Windows.moving): no
    question about a ramp can have an answer other than "none"."""
    return ctl is None or not in_transition(ctl, now, window_s)


def settled_evse_input(
    config: EvseConfig,
    runtime: DeviceRuntime | None,
    ctl: EvseControl | None,
    reading_ts: float | None,
    now: float,
    follow_s: float,
) -> tuple[EvseInput, bool]:
    """`evse_input` for an EVSE that is_settled: the same answer, the short way."""
    state = runtime.state if runtime is not None else None
    told = 0
    car_limit = 0
    if ctl is not None:
        car_limit = ctl.car_limit
        told = ctl.command
        # Cut and not yet followed (ControlMemory.may_draw): the current it was cut from.
        if is_following(ctl, now, follow_s):
            told = max(told, ctl.lingering)
    static_max = config.max_charging_cur
    above = told if isinstance(static_max, int) and told > static_max else 0
    age = age_of(runtime, now)
    if runtime is None or not isinstance(state, EvseState):
        return EvseInput(config, None, age, None, 0, pairing.NOTHING, above, car_limit), False
    if reading_ts is None:
        return EvseInput(config, state, age, None, 0, pairing.NOTHING, above, car_limit), False
    samples = runtime.samples
    counted = pairing.paired_draw(samples, reading_ts)
    if max(counted) > core.draw_bound(config, state):
        counted = pairing.NOTHING  # a report its maximum cannot explain is no credit
    spread = pairing.NOTHING
    unsure = False
    dropped = pairing.drop_after(samples, reading_ts, counted)
    if dropped is not pairing.NOTHING:
        unsure = max(state.current) < pairing.DRAWING_MA
        spread = pairing.spread_with_drop(spread, counted, counted, dropped)
    # tuple.__new__ takes no defaults: every field, in order (test_evse_inputs compares).
    return new(EvseInput, (config, state, age, counted, 0, spread, above, car_limit, 0)), unsure


def evse_input(
    dev_id: str,
    config: EvseConfig,
    runtime: DeviceRuntime | None,
    control: ControlMemory,
    reading_ts: float | None,
    now: float,
    windows: Windows,
) -> tuple[EvseInput, bool]:
    """The EVSE's input to the allocation, and whether a newer report makes the site's
    other-load figure unsure (AllocationInput.figures_unsure)."""
    state = runtime.state if runtime is not None else None
    counted = None
    credit = 0
    own_ramp = 0
    spread = pairing.NOTHING
    ramping = None
    moving = False
    unsure = False
    if control.moving(dev_id, now, max(windows.ramp, windows.rising)):
        ramping = control.ramping_to(
            dev_id,
            now,
            windows.ramp,
            rising_window_s=windows.rising,
            still_rising=None
            if runtime is None
            else partial(pairing.still_rising, runtime.samples),
        )
        moving = ramping is not None or control.following(dev_id, now, windows.ramp)
    if runtime is not None and isinstance(state, EvseState):
        bound = core.draw_bound(config, state)
        counted = pairing.counted_current(
            runtime.samples,
            reading_ts,
            ramping,
            config.used_phases or 7,
            bound,
            only_rising=ramping is not None and control.only_rising(dev_id),
        )
        # Without a ramp the counted draw is the paired report itself.
        plain = counted
        if counted is not None and moving:
            if ramping is not None:
                plain = (
                    pairing.counted_current(runtime.samples, reading_ts, bound=bound)
                    or pairing.NOTHING
                )
                credit = max(0, sum(counted) - sum(plain))
                # Its own rules see the ramp up to its command (EvseInput.own_ramp).
                at_command = counted
                if control.only_rising(dev_id):
                    at_command = (
                        pairing.counted_current(
                            runtime.samples, reading_ts, ramping, config.used_phases or 7, bound
                        )
                        or counted
                    )
                own_ramp = max(0, sum(at_command) - sum(plain))
            floor = 0 if ramping is None else control.ramp_floor(dev_id, ramping)
            spread = pairing.draw_spread(counted, plain or counted, floor)
        if counted is not None and plain is not None and reading_ts is not None:
            # A newer report that shows less than the paired one: the car may have dropped
            # before the reading, though the control law counts it as settled or followed.
            # (Against the report, not the counted draw: a car not yet started at a raise
            # counts at its command, and is no drop.)
            dropped = pairing.drop_after(runtime.samples, reading_ts, plain)
            if dropped is not pairing.NOTHING:
                # A car that stopped drawing (stopped, left) since: the load may have changed
                # unseen beside it. A car that only came down (it followed a cut) leaves its
                # spread, which the hold takes.
                unsure = max(state.current) < pairing.DRAWING_MA
                spread = pairing.spread_with_drop(spread, counted, plain, dropped)
    # A maximum just lowered: the car may draw what it was told until it follows.
    static_max = config.max_charging_cur
    told = control.may_draw(dev_id, now, windows.follow)
    above = told if isinstance(static_max, int) and told > static_max else 0
    return (
        EvseInput(
            config,
            state if isinstance(state, EvseState) else None,
            age_of(runtime, now),
            counted,
            credit,
            spread,
            above,
            # What its car was seen to take at most (the control law learned it).
            control.evse(dev_id).car_limit,
            own_ramp,
        ),
        unsure,
    )
