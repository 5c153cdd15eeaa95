"""What the allocation reads and returns: its input, the memory it carries from run to run,
its results, the reason codes and the constants of the rules it applies.

Everything here is immutable. `Memory` is what one run hands to the next (sessions, pauses,
learned phases, overdraft) and compares by value; the caches that speed up a run live apart,
in `AllocationCache` (see cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from service.core.authorization import NO_OVERRIDES, Overrides, SessionAuth
from service.core.charging_rules import RuleState, evaluate_expression
from service.core.models import (
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    User,
)

OVERDRAFT_HOLD_S: Final = 300.0
# A card presented while no vehicle is connected authorises the vehicle that arrives within
# this time (swipe first, then plug in).
PREAUTH_S: Final = 60.0
FALLBACK_MAX_CURRENT: Final = 16_000
MAX_EVSE_CURRENT: Final = 80_000
NOMINAL_VOLTAGE: Final = 230

VEHICLE_STATES: Final = frozenset((2, 3, 4))
CHARGING_STATES: Final = frozenset((3, 4))
STATE_NO_VEHICLE: Final = 1
STATE_ERROR: Final = 5
STATE_OFFLINE: Final = 6

ROLE_CONSUMPTION: Final = 1
ROLE_PRODUCTION: Final = 2
ROLE_GRID: Final = 3

# Reason codes (EvseResult.reason).
R_OK: Final = "ok"  # gets its target
R_LIMITED: Final = "limited"  # gets less than its target
R_GRID_LOST: Final = "grid_lost"  # limited to its minimum: grid meter lost
R_NO_CURRENT: Final = "no_current"  # paused: its minimum does not fit
R_MIN_PAUSE: Final = "min_pause"  # paused: pause_min_time not over yet
R_RULE: Final = "rule"  # paused: the charging rules ask for less than the minimum
R_BATTERY_SAVE: Final = "battery_save"  # paused: target below battery_save_threshold
R_TARGET: Final = "target"  # paused: override mamps or maximum below the minimum
R_AUTH: Final = "auth"  # waits for a PIN/RFID
R_OVERRIDE: Final = "override"  # charging switched off (override C)
R_NO_VEHICLE: Final = "no_vehicle"
R_ERROR: Final = "error"
R_COM_ERR: Final = "com_err"
R_DISABLED: Final = "disabled"  # device disabled, disable_policy 0
R_UNLIMITED: Final = "unlimited"  # device disabled, disable_policy -1

PAUSE_REASONS: Final = frozenset((R_NO_CURRENT, R_MIN_PAUSE, R_RULE, R_BATTERY_SAVE, R_TARGET))
# EVSEs that observation mode (lb_enabled false) commands at their maximum although the
# allocation gave them nothing to share.
OBSERVED_AT_MAXIMUM: Final = frozenset((R_NO_VEHICLE, R_ERROR, R_COM_ERR, R_DISABLED))


# --- input ------------------------------------------------------------------------------


# EvseInput.draw_spread of an EVSE that is not in transition.
NO_SPREAD: Final = (0, 0, 0)


class EvseInput(NamedTuple):
    """One EVSE as the allocation reads it. A tuple: the service makes a thousand of these
    between a meter reading and its commands (a frozen dataclass takes three times as long)."""

    config: EvseConfig
    state: EvseState | None = None
    state_age_s: float | None = None  # None: never heard
    # What the EVSE drew (EVSE-local phases, mA) at the time of the grid reading it is
    # subtracted from, as the control loop pairs them (see control_law.counted_currents);
    # None: the state's own currents.
    counted_current: tuple[int, int, int] | None = None
    # mA (summed over the phases) that counted_current holds beyond the paired report for a
    # car ramping up (pairing.counted_current): it counts against other load, never as
    # surplus.
    ramp_credit: int = 0
    # Its draw at the grid reading is not known well: it ramps up to a raised command or
    # follows a cut (control_law). Per EVSE-local phase, how much less than its counted
    # current it may have drawn then (pairing.draw_spread): an other-load figure made with
    # it may be that much low, and lowers the held other load no further (hold_peaks).
    draw_spread: tuple[int, int, int] = NO_SPREAD
    # The current (mA) it was commanded and may still draw, when that is more than its
    # configured maximum (a maximum just lowered, the car still following); 0 otherwise. A
    # draw up to it is explained (verdict._unexplained), not a fault.
    commanded_above_max: int = 0
    # The most (mA per phase) its car has shown it takes, with a margin, as the control law
    # learned it (control_law: a raise the car did not take up); 0: none. Its target is
    # capped at it (not below its minimum), so that sharing hands the rest to the others.
    car_limit: int = 0
    # mA (summed over the phases) its own charging rules see beyond its report while it
    # ramps up to a raise: its command less the paired report. Not bounded by a later report
    # as ramp_credit is (pairing.counted_current's only_rising): a car whose raise has not
    # shown yet would be cut back by its own surplus rule before it could take the raise up
    # (solar plants 34, 216, 256: a raise cut back, the car taking it anyway, cut and raised
    # again for 20 s).
    own_ramp: int = 0


@dataclass(frozen=True, slots=True)
class MeterInput:
    config: MeterConfig
    state: MeterState | None = None
    state_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class AllocationInput:
    params: Params
    groups: Sequence[GroupConfig]
    evses: Mapping[str, EvseInput]
    meters: Mapping[str, MeterInput]
    users: Mapping[str, User]
    now: float  # unix s
    stale_after_s: float  # see stale_after_s(params)
    utc_offset_s: int = 0  # local time for charging rules = now + utc_offset_s
    # An EVSE's report newer than the grid reading shows it no longer drawing, while the
    # report paired with that reading shows it drawing (pairing.drop_after): the other-load
    # figure is unsure by more than the hold can tell (a car that left while the base load
    # rose leaves the held figure as it was). The control law raises nobody until a newer
    # reading comes.
    figures_unsure: bool = False


class StaleSettings(Protocol):
    """The two params the staleness age is made of (Params, or a bridge's view of them)."""

    @property
    def stale_time(self) -> int: ...
    @property
    def cycle_time(self) -> int: ...


def stale_after_s(params: StaleSettings) -> float:
    """How old a state may be before it counts as a communication error: `stale_time`, or
    three cycles when that is 0 (the params' documented default). Bridges apply their
    fail-safe after the same age (contract.ParamsView)."""
    return (params.stale_time or 3 * params.cycle_time) / 1000


def fresh(state: EvseState | MeterState | None, age: float | None, stale: float) -> bool:
    return state is not None and age is not None and age <= stale and not state.com_err


# --- memory -----------------------------------------------------------------------------


class EvseMemory(NamedTuple):
    """What the allocation keeps per EVSE between calls."""

    last_state: int | None = None  # last fresh EVSE state
    plugged_at: float | None = None
    paused_since: float | None = None
    charging: bool = False  # got current in the last call
    learned_phases: int = 0  # EVSE-local mask, 0 = not learned
    auth: SessionAuth | None = None
    auth_at: float | None = None
    seen_rfid: str = ""  # the state's rfid field, once acted upon
    overrides: Overrides = NO_OVERRIDES
    evse_rule: RuleState | None = None
    user_rule: RuleState | None = None
    # When it last stopped charging for a pause: pause_min_time counts from here. A vehicle
    # that has not charged yet (waiting for its first current) is not held back by it.
    stopped_at: float | None = None


# EvseMemory fields read by position in hot loops: a NamedTuple field read by name is a
# descriptor call. Literals, so that the type checker knows each field's type; the
# assertion keeps them true.
M_PAUSED_SINCE: Final = 2
M_CHARGING: Final = 3
M_OVERRIDES: Final = 8
assert EvseMemory._fields[2:4] == ("paused_since", "charging")
assert EvseMemory._fields[8] == "overrides"

EMPTY_EVSE_MEMORY: Final = EvseMemory()
# The memory of an EVSE without a vehicle, shared by all of them.
IDLE_MEMORY: Final = EvseMemory(last_state=STATE_NO_VEHICLE)


# One other-load figure kept for hold_peaks: when, mA per grid phase, and whether a ramp
# credit went into it.
LoadEntry = tuple[float, int, int, int, bool]


@dataclass(frozen=True, slots=True)
class Memory:
    """Everything carried from one call to the next; never changed, always returned anew.
    Two memories are equal when they hold the same values."""

    evses: Mapping[str, EvseMemory] = field(default_factory=dict)
    last_now: float | None = None
    overdraft: int = 0  # active reduction of the main limit, mA
    overdraft_until: float = 0.0
    overdraft_reported: int = 0
    # Since when the main grid meter has shown more than max_total_current: the run that
    # first saw a reading over it (None: it does not); an overdraw counts only once a reading
    # taken overdraft_grace_s after that still shows it.
    over_since: float | None = None
    # Per group id: the recent other-load figures, newest last; the highest of those within
    # params.load_hold_time is what budgets count.
    load_peaks: Mapping[int, tuple[LoadEntry, ...]] = field(default_factory=dict)
    # Per group id with a grid meter: the other load of its last fresh reading, held while
    # the meter is lost (with grid_fail_current 0 the minimums must fit beside it).
    grid_load: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)

    def evse(self, dev_id: str) -> EvseMemory:
        return self.evses.get(dev_id, EMPTY_EVSE_MEMORY)


# --- output -----------------------------------------------------------------------------


class EvseResult(NamedTuple):
    device_enabled: bool
    charging_enabled: bool
    paused: bool
    charging_current: int  # commanded, mA
    current: int  # allocated by load balancing (differs from the command when observing)
    target: int  # what the EVSE asked for, mA
    pause_time: int  # s
    phases: int  # EVSE-local phases assumed
    grid_phases: int
    cur_charging_power: int  # W, measured
    reason: str
    needs_auth: bool
    com_err: bool
    user_id: str | None
    overrides: int  # bit field, see authorization
    ov_cur: int  # the override cap, or the maximum current when there is none


@dataclass(frozen=True, slots=True)
class Allocation:
    evses: Mapping[str, EvseResult]
    cons_evse_power: int  # W
    avail_evse_power: int  # W
    budget_per_phase: Mapping[int, tuple[int, int, int]]  # group id → EVSE budget, mA
    memory: Memory
    grid_meter_lost: bool
    overdraft_cur: int  # largest overdraft seen: write back into params.overdraft_cur
    overdraft_active: int  # subtracted from the main limit in this call
    com_err: frozenset[str]  # devices (meters, EVSEs) without fresh data
    energy_wh: Mapping[str, float]  # soft-meter energy since the last call
    notes: tuple[str, ...]
    # For the control law (control_law.govern), which must keep every limit while it holds
    # increases back: the budget of each constraint slot (constraint * 3 + grid phase, see
    # groups.share) and, per EVSE with a vehicle and a fresh state, the slots it loads.
    budgets: tuple[int, ...] = ()
    # The budgets a raise may use, when EVSEs in transition make the other load unsure
    # (budgets.held_loads); (): the same as `budgets`.
    raise_budgets: tuple[int, ...] = ()
    slots: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # A group's grid reading is late (budgets.read_meters): used, but nobody is raised.
    grid_late: bool = False


# --- rules shared by the stages ---------------------------------------------------------


def resolve_max_current(
    config: EvseConfig, state: EvseState | None, variables: Mapping[str, float]
) -> tuple[int, bool]:
    """An EVSE's maximum current and whether a fallback replaced its expression. An
    expression that cannot be evaluated fails safe: the EVSE's minimum (it once became a
    fixed 16 A, whatever the expression meant to allow)."""
    raw = config.max_charging_cur
    fallback = False
    if isinstance(raw, int):
        value = raw
    else:
        evaluated = evaluate_expression(raw, variables)
        if evaluated is None:
            fallback = True
            value = effective_minimum(config)
        else:
            value = evaluated
    if state is not None and state.max_charging_current:
        value = min(value, state.max_charging_current)
    return max(0, min(value, MAX_EVSE_CURRENT)), fallback


def max_note(dev_id: str, config: EvseConfig, max_cur: int) -> str:
    """The note for an expression that cannot be evaluated (see resolve_max_current)."""
    return (
        f"{dev_id}: max_charging_cur {config.max_charging_cur!r} cannot be evaluated; "
        f"using its minimum, {max_cur} mA"
    )


# How far a reported draw may exceed the EVSE's maximum before it is a fault: meters and
# cars are not exact (10 %, at least 1 A).
DRAW_TOLERANCE_MA: Final = 1000


def draw_limit(static_max: int | None, reported_max: int | None) -> int:
    """An EVSE's maximum as the draw check sees it: `max_charging_cur` (80 A when given as
    an expression), capped by the maximum the EVSE reports (as resolve_max_current does)."""
    limit = MAX_EVSE_CURRENT if static_max is None else static_max
    if reported_max and reported_max < limit:
        limit = reported_max
    return limit


def bound_of(limit: int) -> int:
    """The most an EVSE with that maximum can be drawing on a phase, with the tolerance."""
    return limit + max(DRAW_TOLERANCE_MA, limit // 10)


def draw_bound(config: EvseConfig, state: EvseState) -> int:
    """The most this EVSE can be drawing on a phase (for callers outside the allocation,
    such as the pairing of its older reports, see pairing.counted_current)."""
    static = config.max_charging_cur if isinstance(config.max_charging_cur, int) else None
    return bound_of(draw_limit(static, state.max_charging_current or None))


def effective_minimum(config: EvseConfig) -> int:
    """The least current an EVSE charges with: `min_charging_cur`, raised to the
    `battery_save_threshold`; a minimum of 0 counts as 1 mA (an EVSE given current charges)."""
    return max(config.min_charging_cur, config.battery_save_threshold, 1)
