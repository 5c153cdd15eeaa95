"""The load-balancing allocation: one pure function from measurements to EVSE commands.

`allocate(inp, memory)` reads nothing but its arguments (time included) and returns the
commands, figures for display, and the `Memory` to pass to the next call. Same arguments,
same result. `enter_rfid` and `override` apply user events to a `Memory`.

Budgets
-------
All currents are mA per grid phase. For every group *g* and phase:

    budget(g) = limit(g) - non_evse(g) - fixed(g)

* limit(0) = `max_total_current` - `reserve_current` - active overdraft; limit(g) = the
  group's `max_current` (0 is a real limit of 0 A).
* non_evse(g): with a fresh grid-demand meter (role 3) placed in *g*: its reading minus what
  the EVSEs below *g* measurably draw. Without one: the consumption meters (role 1) placed in
  *g* plus non_evse of the groups directly below. Each is clamped at ≥ 0 per phase, so solar
  export never lends budget. Several grid meters in one group are added up.
* fixed(g): what EVSEs below *g* that the allocation cannot steer may draw, at their maximum
  current on their assumed phases: lost EVSEs (no fresh state, state 6 or com_err) and disabled
  EVSEs under `disable_policy` -1 (unless a fresh state shows no vehicle or an error).
* `max_total_evse_current` (> 0) caps all EVSEs together: balanced ones plus fixed(0).

Failure: a group whose grid meter is stale (or, without a grid meter, one of its consumption
meters) does not trust the old reading; non_evse falls back to its fresh consumption meters
and groups below. EVSEs below it get only their minimum current — or, when
`params.grid_fail_current` > 0, share that many mA per phase (fixed loads included). Every
group limit still holds. `grid_meter_lost` reports this for the main group. With
`grid_fail_current` 0 a group whose grid meter is lost counts (for its own limit) at least
the other load of that meter's last fresh reading (`Memory.grid_load`), and before any
reading its whole limit: nothing beyond grid_fail_current without a grid reading.

A grid, consumption or production meter that reports `power_w` but no currents counts its
power on each phase it reports a voltage on (see meter_power); for a grid meter the EVSEs'
draw on those phases is taken off the whole.

An EVSE reporting more current on a phase than its maximum explains (`_draw_bound`) is lost:
its report is a fault, not a credit against the grid reading.

Overdraft: when the main grid meter shows a phase above `max_total_current`, the excess is
subtracted from limit(0) for OVERDRAFT_HOLD_S seconds (the cFos documentation: 5 minutes, "to
allow the fuse to cool down"). Every new excess restarts the hold; the larger of the held and
the new amount applies. `Allocation.overdraft_cur` is the largest excess seen, for
`params.overdraft_cur`: the caller writes it back into the params after each call. When the
params come in lower than what was last returned (a user set it to 0 with set_params), the
history is reset and an active reduction ends too.

EVSEs
-----
Only EVSEs with a vehicle (state 2, 3, 4) that are authorised, not switched off by override C,
and whose target reaches their minimum ask for current; state 1 (no vehicle) gets 0 but stays
enabled, state 5 (error) gets 0. Target = the maximum current
(`max_charging_cur`; an expression is evaluated when trivial, else the EVSE's minimum is
used, fail safe, and reported in notes) capped by the EVSE's reported
`max_charging_current`, the override `mamps` and the charging rules (see charging_rules). The
minimum is `min_charging_cur`, raised to `battery_save_threshold`: an EVSE that cannot get that
much pauses instead of charging slowly (a minimum of 0 counts as 1 mA). Phases: see phases.py;
an RFID's `used_phases` beats the EVSE's, which beats what was learned, and every phase the
EVSE is measured drawing on is added (a setting never hides a draw). Disabled EVSEs follow
`params.disable_policy`: 0 off
(and not counted: a disabled device is not read, and whatever it still draws shows up as
non-EVSE load), 1 capped at its minimum, -1 unlimited (its maximum, counted as fixed load).

Sharing (see groups.py): minimums by priority, then water-filling per priority level. cFos:
"The available charging power is first distributed to the wallboxes of higher priority and
what remains then to those of lower priority" (https://cfos-emobility.de/de/
cfos-charging-manager/technical-information.htm). A **higher `prio` number is a higher
priority** (the documents found do not say which way the number runs; this follows the
project's spec). We first give every EVSE that can have it its minimum, in priority order, so
that as many vehicles as possible keep charging, then fill the levels from the highest down.
Ties go to EVSEs that were charging in the last call, then to the one plugged in first, then by
device id. `max_imbalance` limits the spread between the most and the least loaded grid phase
caused by the balanced EVSEs.

Pauses: an EVSE with a vehicle that wants current but gets none (no room for its minimum, rules
or caps below it) is paused. It is not given current before `pause_min_time` has passed since
the pause began; after that it takes part again in every call (`pause_time` counts the seconds
since the pause began). Authorisation missing or override C are not pauses: those EVSEs are
commanded `charging_enabled` false. `lb_enabled` false (observation): everything is computed
and reported (`current`, `reason`), but the commands give every EVSE its maximum current —
except where access control says no (waiting for a PIN/RFID, override C, an idle EVSE with
users and no authorised session).

Solar figures for charging rules (totals over the three phases): production = the fresh
production meters (role 2); surplus = what the EVSEs draw minus the main grid meter's reading
(what would be exported without them), or without a grid meter production minus consumption
meters, and 0 while the main grid meter is lost. Every EVSE's rules see the whole surplus.

Soft meter: for EVSEs whose state has no `total_energy`, `Allocation.energy_wh` holds the
energy since the previous call (power * elapsed time, the gap capped at `stale_after_s`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from math import isfinite
from typing import Final, NamedTuple

from service.core.authorization import (
    NO_OVERRIDES,
    Overrides,
    RfidIndex,
    RfidResult,
    SessionAuth,
    apply_override,
    decide,
    find_rfid,
    may_charge,
    most_recent,
)
from service.core.charging_rules import (
    MODE_RELATIVE_SOLAR,
    MODE_SOLAR,
    MODE_SOLAR_MINUS,
    MODE_SURPLUS,
    RuleContext,
    RuleState,
    evaluate_expression,
    evaluate_rule_set,
    minute_of_week,
    numeric_variables,
)
from service.core.groups import (
    Demand,
    GroupTree,
    build_group_tree,
    class_key,
    share,
    sum_subtrees,
)
from service.core.meter_power import power_current, power_only
from service.core.models import (
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from service.core.phases import (
    ALL_PHASES,
    GRID_MASK,
    LEARN_THRESHOLD_MA,
    PHASE_COUNT,
    PHASES_OF,
    ROTATION,
    assumed_mask,
    measured_mask,
)
from service.core.solar_share import SolarCandidate, split_pool

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


# --- input ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvseInput:
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
    # follows a cut (control_law). Other-load figures made with it are not trusted to lower
    # the held other load (hold_peaks).
    in_transition: bool = False


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


def stale_after_s(params: Params) -> float:
    """How old a state may be before it counts as a communication error: `stale_time`, or
    three cycles when that is 0 (the params' documented default)."""
    return (params.stale_time or 3 * params.cycle_time) / 1000


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


# Field positions, for hot loops that read EvseMemory by index (literals, so that the type
# checker knows each field's type; the assertion keeps them true).
_M_PAUSED_SINCE: Final = 2
_M_CHARGING: Final = 3
_M_OVERRIDES: Final = 8
assert EvseMemory._fields[2:4] + EvseMemory._fields[8:9] == (
    "paused_since", "charging", "overrides"
)

EMPTY_EVSE_MEMORY: Final = EvseMemory()
_IDLE_MEMORY: Final = EvseMemory(last_state=STATE_NO_VEHICLE)


class _ConfigView(NamedTuple):
    config: EvseConfig  # the object viewed: the view is valid while it is the same object
    enabled: bool
    group: int
    rotation: int
    used_phases: int
    simple: bool  # no users, no charging rules
    minimum: int  # min_charging_cur raised to battery_save_threshold, at least 1 mA
    min_charging_cur: int
    pause_min_time: int
    prio: int
    max_current: int | None  # max_charging_cur when it is a number (not an expression)


def _config_view(cfg: EvseConfig) -> _ConfigView:
    minimum = max(cfg.min_charging_cur, cfg.battery_save_threshold, 1)
    return _new(
        _ConfigView,
        (cfg, cfg.device_enabled, cfg.group, cfg.phase_rotation, cfg.used_phases,
         not cfg.users and not cfg.charging_rules, minimum, cfg.min_charging_cur,
         cfg.pause_min_time, cfg.prio,
         cfg.max_charging_cur if isinstance(cfg.max_charging_cur, int) else None),
    )  # fmt: skip


class _StateView(NamedTuple):
    state: EvseState
    s: int
    c0: int
    c1: int
    c2: int
    bad: bool  # com_err or offline
    rfid: str
    power: float  # W: reported, else from currents and voltages
    metered: bool  # reports its own energy (total_energy)
    reported_max: int | None  # a max_charging_current of its own (0 counts as none)
    measured_phases: int  # bit mask of the phases drawing at least LEARN_THRESHOLD_MA


def _state_view(st: EvseState) -> _StateView:
    c0, c1, c2 = st.current
    power = st.power_w
    # The state model lets NaN and inf through; then the currents tell the power.
    if power is None or not isfinite(power):
        vol = st.voltage
        power = (
            (c0 * vol[0] if c0 > 0 else 0.0)
            + (c1 * vol[1] if c1 > 0 else 0.0)
            + (c2 * vol[2] if c2 > 0 else 0.0)
        ) / 1000
    at = LEARN_THRESHOLD_MA
    measured = (1 if c0 >= at else 0) | (2 if c1 >= at else 0) | (4 if c2 >= at else 0)
    return _new(
        _StateView,
        (st, st.state, c0, c1, c2, st.com_err or st.state == STATE_OFFLINE, st.rfid, power,
         st.total_energy is not None, st.max_charging_current or None, measured),
    )  # fmt: skip


class _Prepared(NamedTuple):
    """What the loop over the EVSEs made of one EVSE, with everything it was made from. When
    none of that changed, the next call takes it as it is: in the common case (no users,
    rules or overrides) its pending entry, for an EVSE without a vehicle its verdict, and for
    one with users, rules or overrides the vehicle whose wish is made anew each call (it
    reads the clock)."""

    config: EvseConfig
    state: EvseState
    memory: EvseMemory | None
    context: _Context  # what else it was made under
    group: int
    power: float
    soft_power: float  # W the soft meter counts: power without an energy reading, else 0
    draw_l1: int  # mA on the grid phases
    draw_l2: int
    draw_l3: int
    demand: Demand | None
    pending: _Pending | None  # None for an EVSE without a vehicle: then `idle` is its verdict
    idle: EvseResult | None
    rotation: int  # phase_rotation, to place the draw of a new state
    vehicle: _Vehicle | None


class _Context(NamedTuple):
    """What a prepared entry depends on beyond its EVSE, one object while none of it changes
    (see _Shapes), so that a single identity test covers it."""

    constraints: _Constraints  # the group tree and its limits
    policy: int  # disable_policy
    users: Mapping[str, User]  # the phases of an RFID come from its user


def _soft_power(power: float, metered: bool) -> float:
    return power if power > 0 and not metered else 0.0


def _grid_draw(rotation: int, c0: int, c1: int, c2: int) -> tuple[int, int, int]:
    """An EVSE's positive currents moved onto the grid phases."""
    out = [0, 0, 0]
    r = ROTATION[rotation]
    if c0 > 0:
        out[r[0]] += c0
    if c1 > 0:
        out[r[1]] += c1
    if c2 > 0:
        out[r[2]] += c2
    return out[0], out[1], out[2]


# How far a reported draw may exceed the EVSE's maximum before it is a fault: meters and
# cars are not exact (10 %, at least 1 A).
DRAW_TOLERANCE_MA: Final = 1000


def _draw_limit(static_max: int | None, reported_max: int | None) -> int:
    """An EVSE's maximum as the draw check sees it: `max_charging_cur` (80 A when given as
    an expression), capped by the maximum the EVSE reports (as resolve_max_current does)."""
    limit = MAX_EVSE_CURRENT if static_max is None else static_max
    if reported_max and reported_max < limit:
        limit = reported_max
    return limit


def _draw_bound(limit: int) -> int:
    """The most an EVSE with that maximum can be drawing on a phase, with the tolerance."""
    return limit + max(DRAW_TOLERANCE_MA, limit // 10)


def draw_bound(config: EvseConfig, state: EvseState) -> int:
    """The most this EVSE can be drawing on a phase (for callers outside the allocation,
    such as the pairing of its older reports, see pairing.counted_current)."""
    static = config.max_charging_cur if isinstance(config.max_charging_cur, int) else None
    return _draw_bound(_draw_limit(static, state.max_charging_current or None))


def _refreshed(pre: _Prepared, old: _StateView, new: _StateView) -> _Prepared | None:
    """A prepared entry carried over to a new state, when that leaves what the allocation
    decides for the EVSE as it was: only its measurements moved (currents, voltages, power),
    not its state, error, RFID, metering, reported maximum or the phases it draws on. What
    it draws and its power are the new state's. None: the new state needs the long way."""
    # Field by field, not by slices: this runs for every new state of a busy site.
    if (
        old[1] != new[1]
        or old[5] != new[5]
        or old[6] != new[6]
        or old[8] != new[8]
        or old[9] != new[9]
        or old[10] != new[10]
    ):
        return None
    (config, _, memory, context, group, _, _, _, _, _, demand, entry, idle, rotation,
     vehicle) = pre  # fmt: skip
    state, _, c0, c1, c2, _, _, power, metered, reported_max, _ = new
    # A draw its maximum cannot explain takes the long way (see allocate). Compared inline
    # (this runs for every new state of a busy site): above 1 A (DRAW_TOLERANCE_MA) only, and
    # with the maximum of a prepared vehicle at hand (an idle EVSE rarely draws).
    if c0 > 1000 or c1 > 1000 or c2 > 1000:
        if entry is not None:
            limit = entry[5]
        elif vehicle is not None:
            limit = vehicle.max_current
        else:
            raw = config.max_charging_cur
            limit = _draw_limit(raw if isinstance(raw, int) else None, reported_max)
        bound = limit + (limit // 10 if limit > 10_000 else 1000)  # as _draw_bound
        if c0 > bound or c1 > bound or c2 > bound:
            return None
    watts = round(power)
    if entry is not None and entry[6] != watts:
        e0, e1, e2, e3, e4, e5, _, e7, e8, e9, e10, e11, e12 = entry
        entry = (e0, e1, e2, e3, e4, e5, watts, e7, e8, e9, e10, e11, e12)
    if idle is not None and idle[9] != watts:
        idle = idle._replace(cur_charging_power=watts)
    if vehicle is not None:
        vehicle = vehicle._replace(power=power)
    return _new(
        _Prepared,
        (config, state, memory, context, group, power, _soft_power(power, metered),
         *_grid_draw(rotation, c0, c1, c2), demand, entry, idle, rotation, vehicle),
    )  # fmt: skip


@dataclass(slots=True)
class _Shapes:
    """The group tree and its constraints, kept while the groups and the limits they come
    from stay the same: then the prepared entries' constraints are the very same object."""

    groups: Sequence[GroupConfig] | None = None
    max_total_current: int = 0
    tree: GroupTree | None = None
    constraints_key: tuple[bool, int, tuple[bool, ...]] | None = None
    constraints: _Constraints | None = None
    context: _Context | None = None


# One other-load figure kept for hold_peaks: when, mA per grid phase, and whether a ramp
# credit went into it.
LoadEntry = tuple[float, int, int, int, bool]


@dataclass(frozen=True, slots=True)
class Memory:
    """Everything carried from one call to the next; never changed, always returned anew."""

    evses: Mapping[str, EvseMemory] = field(default_factory=dict)
    last_now: float | None = None
    overdraft: int = 0  # active reduction of the main limit, mA
    overdraft_until: float = 0.0
    overdraft_reported: int = 0
    # Since when the main grid meter has shown more than max_total_current (None: it does
    # not); an overdraw counts only once it outlasts overdraft_grace_s.
    over_since: float | None = None
    # Per group id: the recent other-load figures (when, mA per grid phase), newest last;
    # the highest of those within params.load_hold_time is what budgets count.
    load_peaks: Mapping[int, tuple[LoadEntry, ...]] = field(
        default_factory=dict
    )
    # Per group id with a grid meter: the other load of its last fresh reading, held while
    # the meter is lost (with grid_fail_current 0 the minimums must fit beside it).
    grid_load: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    # Plain-tuple views of the EVSEs' configurations and states, made once per object and
    # handed on from call to call: reading a pydantic model's attribute costs three type
    # lookups (its __getattr__ hook), and the loop over ten thousand EVSEs reads dozens. A
    # cache only: it never changes a result, so it takes no part in comparisons.
    views: dict[str, _ConfigView] = field(default_factory=dict, compare=False, repr=False)
    state_views: dict[str, _StateView] = field(default_factory=dict, compare=False, repr=False)
    prepared: dict[str, _Prepared] = field(default_factory=dict, compare=False, repr=False)
    # The last result of each EVSE that neither the clock nor a change of its memory went
    # into, with the pending entry and current it came from.
    settled: dict[str, _Settled] = field(default_factory=dict, compare=False, repr=False)
    shapes: _Shapes = field(default_factory=lambda: _Shapes(), compare=False, repr=False)

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
    slots: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


# --- helpers ----------------------------------------------------------------------------


def _fresh(state: EvseState | MeterState | None, age: float | None, stale: float) -> bool:
    return state is not None and age is not None and age <= stale and not state.com_err


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


def _max_note(dev_id: str, config: EvseConfig, max_cur: int) -> str:
    return (
        f"{dev_id}: max_charging_cur {config.max_charging_cur!r} cannot be evaluated; "
        f"using its minimum, {max_cur} mA"
    )


def effective_minimum(config: EvseConfig) -> int:
    """The least current an EVSE charges with: `min_charging_cur`, raised to the
    `battery_save_threshold`; a minimum of 0 counts as 1 mA (an EVSE given current charges)."""
    return max(config.min_charging_cur, config.battery_save_threshold, 1)


class _Vehicle(NamedTuple):
    """An EVSE with a vehicle, between reading its state and building its result."""

    dev_id: str
    config: EvseConfig
    memory: EvseMemory  # after this call's session events
    group: int
    local_mask: int
    grid_mask: int
    max_current: int
    power: float
    disabled_min: bool  # device disabled under disable_policy 1


# Between demand and result, per EVSE with a vehicle: dev_id, device_enabled, memory, local
# mask, grid mask, maximum, power, target, reason ("" = shares), needs_auth, capped at the
# minimum, user id, the memory the call began with. A plain tuple: this is the hot path. It
# holds no index into this call's demands (those go alongside), so that an EVSE whose inputs
# stay the same hands on the very same tuple from call to call.
_Pending = tuple[
    str,
    bool,  # device_enabled
    EvseMemory,
    int,
    int,
    int,
    int,  # W, measured (rounded)
    int,
    str,
    bool,
    bool,
    str | None,
    EvseMemory | None,
]

# A result with what it was made from: pending entry, current, observation mode.
_Settled = tuple[_Pending, int, bool, EvseResult]


class _Wish(NamedTuple):
    vehicle: _Vehicle
    memory: EvseMemory  # with the rule sets' new state
    target: int
    minimum: int
    reason: str  # set when it does not take part in sharing
    needs_auth: bool
    capped_min: bool  # limited to its minimum because a grid meter is lost
    user_id: str | None


# NamedTuple() runs a Python-level __new__; on the hot path tuple.__new__ builds the same
# object in C.
_new = tuple.__new__

_PLACEHOLDER: Final = EvseResult(
    False, False, False, 0, 0, 0, 0, 0, 0, 0, "", False, False, None, 0, 0
)  # fmt: skip


def _off_result(config: EvseConfig, reason: str) -> EvseResult:
    return EvseResult(
        config.device_enabled, False, False, 0, 0, 0, 0, 0, 0, 0, reason, False, False, None,
        0, 0,
    )  # fmt: skip


def _session(
    dev_id: str,
    mem: EvseMemory,
    st: EvseState,
    now: float,
    config: EvseConfig,
    rfids: RfidIndex,
) -> EvseMemory:
    """The EVSE's memory after this state: session start and end, RFID, phase learning.
    Returns `mem` itself when nothing changed."""
    m = mem
    s = st.state
    last = m.last_state
    if s == STATE_NO_VEHICLE:
        if last is not None and last != STATE_NO_VEHICLE:
            # The vehicle left: the session, its authorisation and overrides end.
            m = EvseMemory(last_state=s, seen_rfid=m.seen_rfid)
        elif m.auth is not None and m.auth_at is not None and now - m.auth_at > PREAUTH_S:
            m = m._replace(auth=None, auth_at=None)
    elif s in VEHICLE_STATES and (last is None or last not in VEHICLE_STATES):
        m = m._replace(plugged_at=now)
    if m.last_state != s:
        m = m._replace(last_state=s)
    rfid = st.rfid
    if rfid != m.seen_rfid:
        if rfid:
            match = rfids.find(rfid)
            if match is not None:
                auth, ov, _ = decide(match, dev_id, config.users, m.auth, m.overrides)
                m = m._replace(
                    auth=auth, overrides=ov, auth_at=now if auth != m.auth else m.auth_at
                )
        m = m._replace(seen_rfid=rfid)
    if s in CHARGING_STATES:
        learned = measured_mask(st.current)
        if learned and learned != m.learned_phases:
            m = m._replace(learned_phases=learned)
    return m


# --- events -----------------------------------------------------------------------------


def enter_rfid(
    memory: Memory,
    rfid: str,
    dev_id: str | None,
    users: Mapping[str, User],
    evses: Mapping[str, EvseInput],
    now: float,
    stale_after_s: float = math.inf,
) -> tuple[Memory, RfidResult]:
    """A PIN/RFID entered (cmd=enter_rfid). Without `dev_id` it goes to the EVSE with a vehicle
    that waits for authorisation and that the user may use; of several, the one plugged in
    most recently."""
    match = find_rfid(users, rfid)
    if match is None:
        return memory, RfidResult(False, "unknown_rfid", dev_id)
    user = match.user
    if dev_id is None:
        waiting: list[tuple[str, float | None]] = []
        for d, ev in evses.items():
            cfg = ev.config
            mem = memory.evse(d)
            if (
                cfg.users
                and ev.state is not None
                and ev.state.state in VEHICLE_STATES
                and _fresh(ev.state, ev.state_age_s, stale_after_s)
                and mem.auth is None
                and may_charge(user, d, cfg.users)
            ):
                # A vehicle that arrived after the last allocation has no plug time yet.
                plugged = mem.plugged_at if mem.last_state in VEHICLE_STATES else now
                waiting.append((d, plugged))
        dev_id = most_recent(waiting)
        if dev_id is None:
            return memory, RfidResult(False, "no_evse", None, user.id)
    elif dev_id not in evses:
        return memory, RfidResult(False, "unknown_evse", dev_id, user.id)
    mem = memory.evse(dev_id)
    auth, overrides, result = decide(
        match, dev_id, evses[dev_id].config.users, mem.auth, mem.overrides
    )
    if not result.accepted:
        return memory, result
    auth_at = now if auth != mem.auth else mem.auth_at
    updated = mem._replace(auth=auth, overrides=overrides, auth_at=auth_at)
    return _with_evse(memory, dev_id, updated), result


def override(memory: Memory, dev_id: str, flags: str = "", mamps: int | None = None) -> Memory:
    """override_device for the present (or next) session of `dev_id`; see
    authorization.apply_override for the flags and `mamps`."""
    mem = memory.evse(dev_id)
    updated = mem._replace(overrides=apply_override(mem.overrides, flags, mamps))
    return _with_evse(memory, dev_id, updated)


def _with_evse(memory: Memory, dev_id: str, mem: EvseMemory) -> Memory:
    evses = dict(memory.evses)
    evses[dev_id] = mem
    return replace(memory, evses=evses)


# --- allocate ---------------------------------------------------------------------------


class _Meters(NamedTuple):
    grid: list[list[int]]  # per group, grid phase: Σ fresh grid meters
    has_grid: list[bool]
    grid_lost: list[bool]
    cons: list[list[int]]  # per group: Σ fresh consumption meters
    cons_lost: list[bool]
    production: int  # Σ over phases of fresh production meters
    # Fresh grid meters that report only power (meter_power): per group, their current
    # (mA, may sit on any phase of the mask) and the grid phases they report a voltage on.
    grid_power: list[int]
    grid_power_mask: list[int]


def _read_meters(
    inp: AllocationInput, index: Mapping[int, int], notes: list[str], com_err: set[str]
) -> _Meters:
    n_groups = len(index)
    grid = [[0, 0, 0] for _ in range(n_groups)]
    has_grid = [False] * n_groups
    grid_lost = [False] * n_groups
    cons = [[0, 0, 0] for _ in range(n_groups)]
    cons_lost = [False] * n_groups
    production = 0
    grid_power = [0] * n_groups
    grid_power_mask = [0] * n_groups
    stale = inp.stale_after_s
    for dev_id, meter in inp.meters.items():
        cfg = meter.config
        if not cfg.device_enabled:
            continue
        state = meter.state
        fresh = _fresh(state, meter.state_age_s, stale)
        if not fresh:
            com_err.add(dev_id)
        role = cfg.role
        if role not in (ROLE_CONSUMPTION, ROLE_PRODUCTION, ROLE_GRID):
            continue
        g = index.get(cfg.group)
        if g is None:
            notes.append(f"{dev_id}: group {cfg.group} does not exist; using group 0")
            g = 0
        if role == ROLE_GRID:
            has_grid[g] = True
        if not fresh or state is None:
            if role == ROLE_GRID:
                grid_lost[g] = True
            elif role == ROLE_CONSUMPTION:
                cons_lost[g] = True
            continue
        rot = ROTATION[cfg.phase_rotation]
        sign = -1 if cfg.invert else 1
        c = state.current
        if power_only(state):
            # Power without currents is load on an unknown phase, not no load.
            ma, mask = power_current(state, cfg.phase_rotation)
            ma *= sign
            if role == ROLE_PRODUCTION:
                production += max(0, ma)
            elif role == ROLE_GRID:
                grid_power[g] += ma
                grid_power_mask[g] |= mask
            else:
                for p in PHASES_OF[mask]:
                    cons[g][p] += max(0, ma)
            continue
        if role == ROLE_PRODUCTION:
            production += max(0, sign * (c[0] + c[1] + c[2]))
            continue
        acc = grid[g] if role == ROLE_GRID else cons[g]
        acc[rot[0]] += sign * c[0]
        acc[rot[1]] += sign * c[1]
        acc[rot[2]] += sign * c[2]
    return _Meters(
        grid, has_grid, grid_lost, cons, cons_lost, production, grid_power, grid_power_mask
    )


class _Constraints(NamedTuple):
    total: int
    evse_cap: int  # constraint index of max_total_evse_current, -1 = none
    fail_cap: dict[int, int]  # failed group index → its grid_fail_current constraint
    chain: list[tuple[int, ...]]  # per group: the constraints its EVSEs load
    min_only: list[bool]  # per group: only minimum currents below it


def _constraints(params: Params, tree: GroupTree, failed: list[bool]) -> _Constraints:
    n_groups = len(tree.ids)
    count = n_groups
    evse_cap = -1
    if params.max_total_evse_current > 0:
        evse_cap = count
        count += 1
    fail_cap: dict[int, int] = {}
    if params.grid_fail_current > 0:
        for g in range(n_groups):
            if failed[g]:
                fail_cap[g] = count
                count += 1
    chain: list[tuple[int, ...]] = []
    min_only: list[bool] = []
    for g in range(n_groups):
        groups = tree.chains[g]
        extra = [fail_cap[a] for a in groups if a in fail_cap]
        if evse_cap >= 0:
            extra.append(evse_cap)
        chain.append(groups + tuple(extra))
        min_only.append(params.grid_fail_current <= 0 and any(failed[a] for a in groups))
    return _Constraints(count, evse_cap, fail_cap, chain, min_only)


def overdraft_grace_s(params: Params) -> float:
    """How long the grid may show more than max_total_current before it is an overdraft:
    after a decrease the cars take up to `follow_time` to follow, and the meter's next
    reading may come a cycle later. That excess is the control loop at work, not a fuse
    that needs to cool down; one that outlasts it is."""
    return params.follow_time + params.cycle_time / 1000


def _overdraft(
    params: Params, memory: Memory, meters: _Meters, now: float
) -> tuple[int, float, int, float | None]:
    """The active reduction of the main limit, until when it holds, overdraft_cur and since
    when the grid has been over the limit."""
    overdraw = 0
    if meters.has_grid[0] and not meters.grid_lost[0]:
        peak = max(meters.grid[0])
        mask = meters.grid_power_mask[0]
        if mask:
            # Power alone proves only its even spread over the meter's phases.
            peak = max(peak, (sum(meters.grid[0]) + meters.grid_power[0]) // PHASE_COUNT[mask])
        overdraw = max(0, peak - params.max_total_current)
    over_since = None
    if overdraw > 0:
        over_since = memory.over_since if memory.over_since is not None else now
        if now - over_since < overdraft_grace_s(params):
            overdraw = 0
    active = memory.overdraft if now < memory.overdraft_until else 0
    until = memory.overdraft_until
    if params.overdraft_cur < memory.overdraft_reported:
        active = 0  # the history was reset: end the reduction too
    if overdraw > 0:
        # Each overdraw, even a smaller one, restarts the hold of the larger amount.
        active = max(active, overdraw)
        until = now + OVERDRAFT_HOLD_S
    elif active == 0:
        until = 0.0
    return active, until, max(params.overdraft_cur, overdraw), over_since


def hold_peaks(
    history: tuple[LoadEntry, ...],
    load: Sequence[int],
    now: float,
    hold_s: float,
    credited: bool = False,
) -> tuple[list[int], tuple[LoadEntry, ...]]:
    """The highest other load per phase within the last `hold_s` seconds, and the history to
    keep. A new, higher load counts at once; a lower one only once the higher figures are
    older than `hold_s`. Meter noise and readings that a wallbox's next report has not yet
    caught up with would otherwise move the budgets, and with them the commands, at every
    reading (a meter that reads 0.3 A high for a second costs nothing; one that reads low
    would hand out current that is not there).

    `credited`: the figure was made while a car ramped up to a raised command (counted at
    that command, pairing) or followed a cut (its last report, older than the reading, may
    show more than it drew then), so it may be low by what they have yet to ramp. Such a
    figure never lowers the held load on its own: the newest figure made without one is
    kept beyond `hold_s` until another one comes, so that transitions that follow one
    another for longer than `hold_s` lend no budget."""
    entry: LoadEntry = (now, int(load[0]), int(load[1]), int(load[2]), credited)
    plain = [h for h in history if not h[4] and h[0] <= now]
    kept = [h for h in history if now - h[0] < hold_s and h[0] <= now]
    if not kept or kept[-1][1:] != entry[1:]:
        kept.append(entry)
    # A bounded memory: the oldest go first (a burst of runs within one hold time).
    kept = kept[-32:]
    if credited and plain and plain[-1] not in kept:
        kept.insert(0, plain[-1])
    held = [max(h[1] for h in kept), max(h[2] for h in kept), max(h[3] for h in kept)]
    return held, tuple(kept)


def _wish(
    v: _Vehicle,
    users: Mapping[str, User],
    ctx: RuleContext | None,
    min_only: bool,
    now: float,
) -> _Wish:
    """Target and reason of an EVSE with a vehicle. `ctx` None: its rules must not matter
    (the caller made sure it has none that apply)."""
    cfg = v.config
    mem = v.memory
    minimum = effective_minimum(cfg)
    ov = mem.overrides
    auth = mem.auth
    user_id = auth.user_id if auth is not None else None
    user = users.get(user_id) if user_id is not None else None
    needs_auth = bool(cfg.users) and (user is None or not may_charge(user, v.dev_id, cfg.users))
    target = v.max_current
    if ov.max_current is not None and ov.max_current < target:
        target = ov.max_current
    evse_state: RuleState | None = None
    user_state: RuleState | None = None
    rule_limited = False
    if ctx is not None and not needs_auth and not ov.charging_disabled:
        if cfg.charging_rules and not ov.evse_rules_disabled:
            asked, evse_state = evaluate_rule_set(
                cfg.charging_rules, ctx, minimum, mem.evse_rule, now
            )
            if asked is not None and asked < target:
                target, rule_limited = asked, True
        if user is not None and user.charging_rules and not ov.user_rules_disabled:
            asked, user_state = evaluate_rule_set(
                user.charging_rules, ctx, minimum, mem.user_rule, now
            )
            if asked is not None and asked < target:
                target, rule_limited = asked, True
    if v.disabled_min and target > minimum:
        target = minimum
    capped_min = False
    if min_only and target > minimum:
        target = minimum
        capped_min = True
    reason = ""
    if needs_auth:
        reason = R_AUTH
    elif ov.charging_disabled:
        reason = R_OVERRIDE
    elif target < minimum:
        if rule_limited:
            reason = R_RULE
        elif target >= cfg.min_charging_cur:
            reason = R_BATTERY_SAVE
        else:
            reason = R_TARGET
    elif mem.stopped_at is not None and now - mem.stopped_at < cfg.pause_min_time:
        reason = R_MIN_PAUSE
    if mem.evse_rule != evse_state or mem.user_rule != user_state:
        mem = mem._replace(evse_rule=evse_state, user_rule=user_state)
    return _Wish(v, mem, target, minimum, reason, needs_auth, capped_min, user_id)


def _solar_modes(v: _Vehicle, users: Mapping[str, User]) -> tuple[bool, bool]:
    """Whether the EVSE's rules (its own and its user's, unless switched off by override)
    charge from the production (modes 2-4) and from the surplus (mode 5)."""
    ov = v.memory.overrides
    rules = [] if ov.evse_rules_disabled else list(v.config.charging_rules)
    auth = v.memory.auth
    if auth is not None and auth.user_id is not None and not ov.user_rules_disabled:
        user = users.get(auth.user_id)
        if user is not None:
            rules.extend(user.charging_rules)
    modes = {r.mode for r in rules if r.enabled}
    return bool(modes & {MODE_SOLAR, MODE_RELATIVE_SOLAR, MODE_SOLAR_MINUS}), MODE_SURPLUS in modes


def _solar_pools(
    deferred: Sequence[_Vehicle], users: Mapping[str, User], production: int, surplus: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Per EVSE charging from it: its share of the production and of the surplus, mA per
    phase (see solar_share). EVSEs not listed see the whole figures."""
    by_production: list[tuple[_Vehicle, SolarCandidate]] = []
    by_surplus: list[tuple[_Vehicle, SolarCandidate]] = []
    for v in deferred:
        uses_production, uses_surplus = _solar_modes(v, users)
        if not (uses_production or uses_surplus):
            continue
        c = SolarCandidate(v.dev_id, PHASE_COUNT[v.local_mask], effective_minimum(v.config))
        if uses_production:
            by_production.append((v, c))
        if uses_surplus:
            by_surplus.append((v, c))

    def order(item: tuple[_Vehicle, SolarCandidate]) -> tuple[int, int, float, str]:
        v = item[0]
        m = v.memory
        return (-v.config.prio, 0 if m.charging else 1, m.plugged_at or 0.0, v.dev_id)

    return (
        split_pool([c for _, c in sorted(by_production, key=order)], production),
        split_pool([c for _, c in sorted(by_surplus, key=order)], surplus),
    )


def _has_rules(v: _Vehicle, users: Mapping[str, User]) -> bool:
    """Whether charging rules may shape this EVSE's target (they need the solar figures,
    which are known only after all EVSEs have been read)."""
    ov = v.memory.overrides
    if v.config.charging_rules and not ov.evse_rules_disabled:
        return True
    auth = v.memory.auth
    if auth is None or auth.user_id is None or ov.user_rules_disabled:
        return False
    user = users.get(auth.user_id)
    return user is not None and bool(user.charging_rules)


def allocate(inp: AllocationInput, memory: Memory) -> Allocation:
    params = inp.params
    now = inp.now
    stale = inp.stale_after_s
    notes: list[str] = []
    shapes = memory.shapes
    tree = shapes.tree
    if (
        tree is None
        or shapes.groups is not inp.groups
        or shapes.max_total_current != params.max_total_current
    ):
        tree = build_group_tree(inp.groups, params.max_total_current)
        shapes.groups, shapes.max_total_current, shapes.tree = (
            inp.groups, params.max_total_current, tree,
        )  # fmt: skip
        shapes.constraints = None
    notes.extend(tree.notes)
    n_groups = len(tree.ids)
    index = tree.index
    variables = numeric_variables(params.cm_vars)
    com_err: set[str] = set()
    meters = _read_meters(inp, index, notes, com_err)
    # A group whose load is unknown: its grid meter is lost, or without one a consumption
    # meter is.
    failed = [
        meters.grid_lost[g] or (not meters.has_grid[g] and meters.cons_lost[g])
        for g in range(n_groups)
    ]
    cons_key = (params.max_total_evse_current > 0, params.grid_fail_current, tuple(failed))
    cons_info = shapes.constraints
    if cons_info is None or shapes.constraints_key != cons_key:
        cons_info = shapes.constraints = _constraints(params, tree, failed)
        shapes.constraints_key = cons_key
    chain_cons = cons_info.chain
    min_only = cons_info.min_only
    policy = params.disable_policy
    users = inp.users
    context = shapes.context
    if (
        context is None
        or context.constraints is not cons_info
        or context.policy != policy
        or context.users is not users
    ):
        context = shapes.context = _Context(cons_info, policy, users)

    draw = [[0, 0, 0] for _ in range(n_groups)]
    fixed = [[0, 0, 0] for _ in range(n_groups)]
    results: dict[str, EvseResult] = {}
    pending: list[_Pending] = []
    demand_of: list[int] = []  # per pending entry: the index of its demand, -1 = none
    slot_of: list[tuple[int, ...]] = []  # per pending entry: the constraint slots it loads
    deferred: list[_Vehicle] = []
    demands: list[Demand] = []
    cells: dict[int, tuple[int, ...]] = {}
    old_mem = memory.evses
    old_get = old_mem.get
    # Collected here and merged at the end: most calls change few EVSEs' memory.
    changed_mem: dict[str, EvseMemory] = {}
    energy: dict[str, float] = {}
    cons_power = 0.0
    # What EVSEs that got no current in the last call still draw (a car that was just
    # paused, seen in a report older than the grid reading): not counted as surplus, or a
    # surplus car would restart from the grid at once and flap. Ramp credits neither: a car
    # ramping up is counted at its report, and only its own rules see its credit (below).
    idle_draw = 0
    credited_in: set[int] = set()  # groups with an EVSE in transition (see EvseInput)
    dt = 0.0
    if memory.last_now is not None:
        dt = min(max(0.0, now - memory.last_now), stale)
    hours = dt / 3600
    rfids = RfidIndex(users)
    index_get = index.get

    def slots_of(g: int, gmask: int) -> tuple[int, ...]:
        cell = g * 8 + gmask
        slots = cells.get(cell)
        if slots is None:
            phases = PHASES_OF[gmask]
            slots = tuple(k * 3 + p for k in chain_cons[g] for p in phases)
            cells[cell] = slots
        return slots

    def demand(
        dev_id: str, cfg: EvseConfig, mem: EvseMemory, g: int, gmask: int, minimum: int, target: int
    ) -> int:
        cell = g * 8 + gmask
        slots = slots_of(g, gmask)
        demands.append(
            _new(
                Demand,
                (
                    cfg.prio,
                    (0 if mem.charging else 1, mem.plugged_at or now, dev_id),
                    cell,
                    slots,
                    gmask,
                    minimum,
                    target,
                    class_key(cfg.prio, cell, minimum, target),
                ),
            )
        )
        return len(demands) - 1

    # A car that does not charge (waiting to start, or stopped for a pause) is admitted only
    # when its minimum plus this margin fits; one that charges keeps its place down to its
    # minimum (hysteresis): else a budget that just fits a minimum, moved by a reading,
    # starts and stops cars again and again, each time cutting the others to make room. The
    # budgets hold the other load's peak of load_hold_time, so "fits now" means "has fitted
    # that long".
    resume_margin = params.resume_margin

    def add_wish(w: _Wish) -> None:
        v = w.vehicle
        k = -1
        if not w.reason:
            minimum = w.minimum
            if not w.memory.charging:
                minimum = min(w.target, minimum + resume_margin)
            k = demand(v.dev_id, v.config, w.memory, v.group, v.grid_mask, minimum, w.target)
        pending.append(
            (v.dev_id, v.config.device_enabled, w.memory, v.local_mask, v.grid_mask,
             v.max_current, round(v.power), w.target, w.reason, w.needs_auth, w.capped_min,
             w.user_id, old_get(v.dev_id))
        )  # fmt: skip
        demand_of.append(k)
        slot_of.append(slots_of(v.group, v.grid_mask))

    views = memory.views
    state_views = memory.state_views
    prepared = memory.prepared
    settled = memory.settled
    if len(views) > 2 * len(inp.evses) + 64:
        views = {d: v for d, v in views.items() if d in inp.evses}
        state_views = {d: v for d, v in state_views.items() if d in inp.evses}
        prepared = {d: v for d, v in prepared.items() if d in inp.evses}
        settled = {d: v for d, v in settled.items() if d in inp.evses}
    for dev_id, ev in inp.evses.items():
        cfg = ev.config
        st = ev.state
        pre = prepared.get(dev_id)
        if pre is not None:
            # Unpacked at once: reading a NamedTuple's fields by name costs a descriptor call
            # each, and this runs for most EVSEs on every call.
            (p_cfg, p_st, p_mem, p_context, p_group, power, soft, d0, d1, d2, p_demand, entry,
             idle, rot, vehicle) = pre  # fmt: skip
            age = ev.state_age_s
            orig = old_get(dev_id)
            valid = (
                p_cfg is cfg
                and p_mem is orig
                and p_context is context
                and age is not None
                and age <= stale
            )
            if valid and p_st is not st:
                # A new state. In operation most of them only report moved measurements:
                # then the verdict holds, with the new figures.
                valid = False
                old_view = state_views.get(dev_id)
                if st is not None and old_view is not None and old_view[0] is p_st:
                    view = state_views[dev_id] = _state_view(st)
                    fresh = _refreshed(pre, old_view, view)
                    if fresh is not None:
                        pre = prepared[dev_id] = fresh
                        (_, _, _, _, _, power, soft, d0, d1, d2, _, entry, idle, _,
                         vehicle) = fresh  # fmt: skip
                        valid = True
            if valid:
                cons_power += power
                if soft and hours:
                    energy[dev_id] = soft * hours
                paired = ev.counted_current
                if paired is not None:
                    d0, d1, d2 = _grid_draw(rot, *paired)
                acc = draw[p_group]
                acc[0] += d0
                acc[1] += d1
                acc[2] += d2
                if orig is None or not orig[_M_CHARGING]:
                    # Not given current: what it still draws is no surplus (see below).
                    idle_draw += d0 + d1 + d2
                else:
                    idle_draw += ev.ramp_credit
                if ev.in_transition:
                    credited_in.add(p_group)
                if entry is None:
                    if idle is not None:
                        results[dev_id] = idle
                        continue
                    assert vehicle is not None
                    results[dev_id] = _PLACEHOLDER
                    if _has_rules(vehicle, users):
                        deferred.append(vehicle)
                    else:
                        add_wish(_wish(vehicle, users, None, min_only[p_group], now))
                    continue
                results[dev_id] = _PLACEHOLDER
                if p_demand is None:
                    demand_of.append(-1)
                    slot_of.append(slots_of(p_group, entry[4]))
                else:
                    demand_of.append(len(demands))
                    demands.append(p_demand)
                    slot_of.append(p_demand[3])
                pending.append(entry)
                continue
        notes_before = len(notes)
        cv = views.get(dev_id)
        if cv is None or cv.config is not cfg:
            cv = views[dev_id] = _config_view(cfg)
        (_, enabled, group_id, rot, used_phases, simple, min_floor, min_cur, pause_min,
         prio, static_max) = cv  # fmt: skip
        orig = old_get(dev_id)
        mem = EMPTY_EVSE_MEMORY if orig is None else orig
        if not enabled and policy == 0:
            results[dev_id] = _off_result(cfg, R_DISABLED)
            continue
        g = index_get(group_id)
        if g is None:
            notes.append(f"{dev_id}: group {group_id} does not exist; using group 0")
            g = 0
        age = ev.state_age_s
        sv = None
        if st is not None:
            sv = state_views.get(dev_id)
            if sv is None or sv.state is not st:
                sv = state_views[dev_id] = _state_view(st)
        # A draw that its maximum cannot explain is a fault, not a credit against the grid
        # reading (one that reported 60 A while drawing 6 A cancelled real load).
        unexplained = False
        if sv is not None:
            peak = max(sv[2], sv[3], sv[4])
            if peak > DRAW_TOLERANCE_MA:
                bound = _draw_bound(_draw_limit(static_max, sv[9]))
                if peak > bound:
                    unexplained = True
                    notes.append(
                        f"{dev_id}: reports {peak} mA on a phase, more than its maximum "
                        f"explains (at most {bound} mA); counted as lost, at its maximum"
                    )
        if sv is None or age is None or age > stale or sv.bad or unexplained:
            # Lost: assume it draws its maximum on the phases it may use.
            com_err.add(dev_id)
            max_cur, fallback = resolve_max_current(cfg, st, variables)
            if fallback:
                notes.append(_max_note(dev_id, cfg, max_cur))
                # Counted as load, the unknown maximum of an EVSE that may still draw is not
                # its minimum: what it reports, else 16 A.
                reported = st.max_charging_current if st is not None else None
                max_cur = max(max_cur, reported or FALLBACK_MAX_CURRENT)
            # With the phases it was last measured drawing on (learned): a setting never
            # hides a draw (see the vehicle branch below).
            local = assumed_mask(used_phases, rfids.phases(mem.auth), mem.learned_phases)
            local |= mem.learned_phases
            gmask = GRID_MASK[rot][local]
            acc = fixed[g]
            for p in PHASES_OF[gmask]:
                acc[p] += max_cur
            results[dev_id] = EvseResult(
                enabled, False, False, 0, 0, 0, 0, local, gmask, 0, R_COM_ERR,
                False, True, None, mem.overrides.bits, 0,
            )  # fmt: skip
            if mem.charging:
                changed_mem[dev_id] = mem._replace(charging=False)
            continue
        assert st is not None  # a view exists only for a state
        _, s, c0, c1, c2, _, rfid, power, metered, reported_max, measured = sv
        # Session events only when something that starts or ends one may have happened.
        if (
            s != mem.last_state
            or rfid != mem.seen_rfid
            or (s == 1 and mem.auth is not None)
            # Phases measured now: not none, and not what was learned.
            or ((s == 3 or s == 4) and 0 != measured != mem.learned_phases)
        ):
            m2 = _session(dev_id, mem, st, now, cfg, rfids)
        else:
            m2 = mem
        cons_power += power
        soft = _soft_power(power, metered)
        if soft and hours:
            energy[dev_id] = soft * hours
        # What it draws now, on the grid phases, to tell it apart from other load.
        gd = _grid_draw(rot, c0, c1, c2)
        paired = ev.counted_current
        acc = draw[g]
        gc = _grid_draw(rot, *paired) if paired is not None else gd
        acc[0] += gc[0]
        acc[1] += gc[1]
        acc[2] += gc[2]
        if not mem.charging:
            idle_draw += gc[0] + gc[1] + gc[2]
        else:
            idle_draw += ev.ramp_credit
        if ev.in_transition:
            credited_in.add(g)

        if (s == 2 or s == 3 or s == 4) and (enabled or policy == 1):
            # Holds the EVSE's place so that results keep the input order.
            results[dev_id] = _PLACEHOLDER
            if static_max is not None and not reported_max:
                max_cur = static_max
            else:
                max_cur, fallback = resolve_max_current(cfg, st, variables)
                if fallback:
                    notes.append(_max_note(dev_id, cfg, max_cur))
            auth = m2.auth
            local = used_phases
            if auth is not None and auth.rfid is not None:
                local = rfids.phases(auth) or local
            if not local:
                local = m2.learned_phases or ALL_PHASES
            # Every phase it is measured drawing on is budgeted, whatever a card (a user may
            # set used_phases on their own) or the configuration says.
            local |= measured
            gmask = GRID_MASK[rot][local]
            if simple and auth is None and m2.overrides is NO_OVERRIDES:
                # The common case, inline: what _wish does for an EVSE without users, rules
                # and overrides.
                minimum = min_floor
                target = max_cur
                if not enabled and target > minimum:
                    target = minimum
                capped = False
                if min_only[g] and target > minimum:
                    target = minimum
                    capped = True
                reason = ""
                if target < minimum:
                    reason = R_BATTERY_SAVE if target >= min_cur else R_TARGET
                elif m2.stopped_at is not None and now - m2.stopped_at < pause_min:
                    reason = R_MIN_PAUSE
                if not reason and not m2.charging:
                    minimum = min(target, minimum + resume_margin)
                if reason:
                    k = -1
                else:
                    cell = g * 8 + gmask
                    slots = cells.get(cell)
                    if slots is None:
                        slots = tuple(q * 3 + p for q in chain_cons[g] for p in PHASES_OF[gmask])
                        cells[cell] = slots
                    k = len(demands)
                    demands.append(
                        _new(
                            Demand,
                            (
                                prio,
                                (0 if m2.charging else 1, m2.plugged_at or now, dev_id),
                                cell,
                                slots,
                                gmask,
                                minimum,
                                target,
                                class_key(prio, cell, minimum, target),
                            ),
                        )
                    )
                made: _Pending = (
                    dev_id, enabled, m2, local, gmask, max_cur, round(power), target, reason,
                    False, capped, None, orig,
                )  # fmt: skip
                pending.append(made)
                demand_of.append(k)
                slot_of.append(slots_of(g, gmask))
                if (
                    m2 is mem
                    and m2.stopped_at is None
                    and m2.plugged_at is not None
                    # A maximum given as an expression reads the params' cm_vars, and a note
                    # (an unknown group) is made anew each call: such an EVSE takes the long
                    # way.
                    and static_max is not None
                    and len(notes) == notes_before
                ):
                    # Made without the clock: valid as long as its inputs stay the same.
                    prepared[dev_id] = _new(
                        _Prepared,
                        (cfg, st, orig, context, g, power, soft,
                         *gd, demands[k] if k >= 0 else None, made,
                         None, rot, None),
                    )  # fmt: skip
                continue
            vehicle = _Vehicle(dev_id, cfg, m2, g, local, gmask, max_cur, power, not enabled)
            if m2 is mem and static_max is not None and len(notes) == notes_before:
                # Users, rules or overrides: the vehicle is kept, its wish is made anew.
                prepared[dev_id] = _new(
                    _Prepared,
                    (cfg, st, orig, context, g, power, soft, *gd, None, None,
                     None, rot, vehicle),
                )  # fmt: skip
            if _has_rules(vehicle, users):
                deferred.append(vehicle)
            else:
                add_wish(_wish(vehicle, users, None, min_only[g], now))
            continue
        auth = m2.auth
        local = used_phases
        if auth is not None and auth.rfid is not None:
            local = rfids.phases(auth) or local
        if not local:
            local = m2.learned_phases or ALL_PHASES
        local |= measured  # as above
        gmask = GRID_MASK[rot][local]
        if not enabled and policy == -1:
            # Its maximum, outside the balancing; counted as load while a vehicle may draw it
            # (not in state 1 or 5).
            max_cur, fallback = resolve_max_current(cfg, st, variables)
            if fallback:
                notes.append(_max_note(dev_id, cfg, max_cur))
            counted = 0
            if s == 2 or s == 3 or s == 4:
                counted = max_cur
                acc = fixed[g]
                for p in PHASES_OF[gmask]:
                    acc[p] += max_cur
            results[dev_id] = EvseResult(
                False, True, False, max_cur, counted, max_cur, 0, local, gmask, round(power),
                R_UNLIMITED, False, False, None, m2.overrides.bits, max_cur,
            )  # fmt: skip
        else:
            ov = m2.overrides
            results[dev_id] = _new(
                EvseResult,
                (enabled, True, False, 0, 0, 0, 0, local, gmask, round(power),
                 R_NO_VEHICLE if s == STATE_NO_VEHICLE else R_ERROR, False, False,
                 auth.user_id if auth is not None else None,
                 0 if ov is NO_OVERRIDES else ov.bits, 0),
            )  # fmt: skip
        if m2.paused_since is not None or m2.charging or m2.stopped_at is not None:
            m2 = m2._replace(paused_since=None, charging=False, stopped_at=None)
        if m2 is not mem:
            if m2 == _IDLE_MEMORY:
                m2 = _IDLE_MEMORY
            if m2 != mem:
                changed_mem[dev_id] = m2
        elif (enabled or policy != -1) and m2.auth is None and len(notes) == notes_before:
            # No vehicle (or an error) on unchanged memory: the same verdict next call, but
            # for its ts. Many wallboxes of a car park are idle most of the time. (An RFID
            # shown before plugging in waits in auth, and expires by the clock.)
            prepared[dev_id] = _new(
                _Prepared,
                (cfg, st, orig, context, g, power, soft,
                 *gd, None, None, results[dev_id], rot, None),
            )  # fmt: skip

    # Group loads: what is not EVSE, bottom-up.
    draw_sub = sum_subtrees(tree, draw)
    fixed_sub = sum_subtrees(tree, fixed)
    non_evse = [[0, 0, 0] for _ in range(n_groups)]
    below = [[0, 0, 0] for _ in range(n_groups)]  # Σ non_evse of the groups directly below
    for g in tree.bottom_up:
        ne = non_evse[g]
        if meters.has_grid[g] and not meters.grid_lost[g]:
            gr, dr = meters.grid[g], draw_sub[g]
            for p in range(3):
                ne[p] = max(0, gr[p] - dr[p])
            mask = meters.grid_power_mask[g]
            if mask:
                # A meter that reports only power: the whole may sit on any of its phases,
                # less what the EVSEs draw on them (meter_power).
                whole = sum(gr) + meters.grid_power[g] - sum(dr[p] for p in PHASES_OF[mask])
                for p in PHASES_OF[mask]:
                    ne[p] = max(0, whole)
        else:
            co, bl = meters.cons[g], below[g]
            for p in range(3):
                ne[p] = max(0, co[p] + bl[p])
        parent = tree.parent[g]
        if parent >= 0:
            bp = below[parent]
            bp[0] += ne[0]
            bp[1] += ne[1]
            bp[2] += ne[2]

    active, until, reported, over_since = _overdraft(params, memory, meters, now)
    load_peaks: dict[int, tuple[LoadEntry, ...]] = {}
    if params.load_hold_time > 0:
        credited = {a for g in credited_in for a in tree.chains[g]}
        for g in range(n_groups):
            gid = tree.ids[g]
            non_evse[g], load_peaks[gid] = hold_peaks(
                memory.load_peaks.get(gid, ()),
                non_evse[g],
                now,
                params.load_hold_time,
                g in credited,
            )

    budgets = [0] * (cons_info.total * 3)
    group_budget: dict[int, tuple[int, int, int]] = {}
    main_limit = params.max_total_current - params.reserve_current - active
    grid_load = dict(memory.grid_load)
    for g in range(n_groups):
        limit = main_limit if g == 0 else tree.limits[g]
        ne, fx = non_evse[g], fixed_sub[g]
        if meters.has_grid[g]:
            gid = tree.ids[g]
            if not meters.grid_lost[g]:
                grid_load[gid] = (ne[0], ne[1], ne[2])
            elif params.grid_fail_current <= 0:
                # Without a grid reading nothing beyond grid_fail_current. At 0, minimums
                # only, beside the other load of the last fresh reading; before any reading
                # that load is unknown, up to the whole limit: nothing fits.
                held = grid_load.get(gid, (limit, limit, limit))
                ne = [max(ne[0], held[0]), max(ne[1], held[1]), max(ne[2], held[2])]
        b = (limit - ne[0] - fx[0], limit - ne[1] - fx[1], limit - ne[2] - fx[2])
        budgets[g * 3 : g * 3 + 3] = b
        group_budget[tree.ids[g]] = b
    if cons_info.evse_cap >= 0:
        k = cons_info.evse_cap
        cap, fx = params.max_total_evse_current, fixed_sub[0]
        budgets[k * 3 : k * 3 + 3] = (cap - fx[0], cap - fx[1], cap - fx[2])
    for g, k in cons_info.fail_cap.items():
        cap, fx = params.grid_fail_current, fixed_sub[g]
        budgets[k * 3 : k * 3 + 3] = (cap - fx[0], cap - fx[1], cap - fx[2])

    # Charging rules, now that the solar figures are known (totals over the phases).
    if deferred:
        surplus = 0
        if meters.has_grid[0]:
            if not meters.grid_lost[0]:
                surplus = max(
                    0,
                    sum(draw_sub[0]) - idle_draw - sum(meters.grid[0]) - meters.grid_power[0],
                )
        else:
            surplus = max(0, meters.production - sum(sum(c) for c in meters.cons))
        week_minute = minute_of_week(now, inp.utc_offset_s)
        from_production, from_surplus = _solar_pools(deferred, users, meters.production, surplus)
        for vehicle in deferred:
            n = PHASE_COUNT[vehicle.local_mask]
            dev_id = vehicle.dev_id
            # Its own ramp is not lost surplus (its report lags what it draws), but nobody
            # else may count on it: a second car would start on surplus that is the first
            # car's draw still to come.
            own_ramp = inp.evses[dev_id].ramp_credit // n
            ctx = RuleContext(
                week_minute,
                vehicle.max_current,
                from_production.get(dev_id, meters.production // n),
                from_surplus.get(dev_id, surplus // n) + own_ramp,
                variables,
            )
            add_wish(_wish(vehicle, users, ctx, min_only[vehicle.group], now))

    currents = share(budgets, demands, params.max_imbalance)

    observe = not params.lb_enabled
    settled_get = settled.get
    for entry, k in zip(pending, demand_of, strict=True):
        current = currents[k] if k >= 0 else 0
        last = settled_get(entry[0])
        if last is not None and last[0] is entry and last[1] == current and last[2] == observe:
            results[entry[0]] = last[3]
            continue
        (dev_id, enabled, mem, local, gmask, max_cur, watts, target, reason, needs_auth, capped,
         user_id, old) = entry  # fmt: skip
        if k >= 0:
            if current == 0:
                reason = R_NO_CURRENT
                paused = True
            else:
                paused = False
                if capped:
                    reason = R_GRID_LOST
                elif current >= target:
                    reason = R_OK
                else:
                    reason = R_LIMITED
        else:
            paused = reason in PAUSE_REASONS
        # By position: a NamedTuple field read by name is a descriptor call (see _M_*).
        since = mem[_M_PAUSED_SINCE]
        charging = mem[_M_CHARGING]
        if current > 0:
            if since is not None or not charging:
                mem = mem._replace(paused_since=None, charging=True, stopped_at=None)
        elif paused:
            if since is None or charging:
                mem = mem._replace(
                    paused_since=now if since is None else since,
                    charging=False,
                    stopped_at=now if charging else mem.stopped_at,
                )
        elif since is not None or charging:
            # Switched off (override, authorisation), not paused: no minimum pause follows.
            mem = mem._replace(paused_since=None, charging=False)
        since = mem[_M_PAUSED_SINCE]
        ov = mem[_M_OVERRIDES]
        enabled_cmd = reason != R_AUTH and reason != R_OVERRIDE
        if observe:
            # Observation does not steer the current, but access control still holds: an
            # EVSE waiting for a PIN/RFID or switched off by override C stays off.
            paused_cmd, current_cmd = False, max_cur if enabled_cmd else 0
        else:
            paused_cmd, current_cmd = paused, current
        result = results[dev_id] = _new(
            EvseResult,
            (enabled, enabled_cmd, paused_cmd, current_cmd, current, target,
             int(now - since) if since is not None else 0, local, gmask, watts, reason,
             needs_auth, False, user_id, 0 if ov is NO_OVERRIDES else ov.bits,
             max_cur if ov is NO_OVERRIDES or ov.max_current is None else ov.max_current),
        )  # fmt: skip
        if mem is old:
            if since is None:
                # Neither the clock nor a change of memory went into it: the same entry (the
                # very object, so the same inputs) with the same current gives it again.
                settled[dev_id] = (entry, current, observe, result)
        elif mem != old:
            changed_mem[dev_id] = mem

    if observe:
        # Observation: every EVSE gets its maximum (the computed figures stay visible),
        # except one with users that no user's session authorises (a car plugging in must
        # not charge before its card is shown).
        for dev_id, res in results.items():
            if res.reason in (R_NO_VEHICLE, R_ERROR, R_COM_ERR, R_DISABLED):
                ev = inp.evses[dev_id]
                if ev.config.users and res.user_id is None:
                    continue
                max_cur, _ = resolve_max_current(ev.config, ev.state, variables)
                results[dev_id] = res._replace(
                    charging_enabled=True, paused=False, charging_current=max_cur
                )

    new_mem: Mapping[str, EvseMemory] = old_mem
    # EVSEs that are gone (the key views compare in C).
    gone = not old_mem.keys() <= inp.evses.keys()
    if changed_mem or gone:
        merged = dict(old_mem)
        merged.update(changed_mem)
        if gone:
            # EVSEs that are gone are forgotten.
            merged = {d: m for d, m in merged.items() if d in inp.evses}
        new_mem = merged
    root = budgets[0:3]
    if cons_info.evse_cap >= 0:
        k = cons_info.evse_cap
        root = [min(a, b) for a, b in zip(root, budgets[k * 3 : k * 3 + 3], strict=True)]
    avail = sum(max(0, b) for b in root) * NOMINAL_VOLTAGE // 1000
    return Allocation(
        evses=results,
        cons_evse_power=round(cons_power),
        avail_evse_power=avail,
        budget_per_phase=group_budget,
        memory=Memory(
            evses=new_mem,
            last_now=now,
            overdraft=active,
            overdraft_until=until,
            overdraft_reported=reported,
            over_since=over_since,
            load_peaks=load_peaks,
            grid_load=grid_load,
            views=views,
            state_views=state_views,
            prepared=prepared,
            settled=settled,
            shapes=shapes,
        ),
        grid_meter_lost=meters.has_grid[0] and meters.grid_lost[0],
        overdraft_cur=reported,
        overdraft_active=active,
        com_err=frozenset(com_err),
        energy_wh=energy,
        notes=tuple(notes),
        budgets=tuple(budgets),
        slots={entry[0]: sl for entry, sl in zip(pending, slot_of, strict=True)},
    )
