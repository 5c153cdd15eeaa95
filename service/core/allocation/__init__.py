"""The load-balancing allocation: one pure function from measurements to EVSE commands.

`allocate(inp, memory, cache)` reads nothing but its arguments (time included) and returns the
commands, figures for display, and the `Memory` to pass to the next call. Same arguments,
same result; `cache` (an `AllocationCache` the caller keeps) only makes it faster.
`enter_rfid` and `override` apply user events to a `Memory`.

Stages
------
One run goes through these stages, each a module of this package:

1. Meters (budgets.read_meters): the fresh meters summed per group; groups whose load is
   unknown. With the group tree they give the constraints and the `Context` of the run.
2. Verdicts (verdict.classify): one function says what each EVSE is in this run
   (switched off, lost, idle, unlimited, or a vehicle that may ask for current), what it
   draws and what counts as fixed load. A verdict made from the same objects is cached.
3. Budgets (budgets.group_budgets): limit minus other load minus fixed load, per group,
   phase and cap.
4. Wishes (wishes.make_wish): each vehicle's target, minimum and the reason it pauses
   before sharing; those with charging rules after the solar figures are known.
5. Sharing (groups.share): minimums by priority, then water-filling per priority level.
6. Sessions (sessions.conclude): reasons after sharing, pauses in memory, the results.

model.py holds the types and reason codes, events.py the session events (plug, unplug,
RFID, phases learned; `enter_rfid`, `override`), cache.py the caches and when they hold,
run.py `allocate()` itself.

Budgets
-------
All currents are mA per grid phase. For every group *g* and phase:

    budget(g) = limit(g) - non_evse(g) - fixed(g)

* limit(0) = `max_total_current` - `reserve_current` - active overdraft; limit(g) = the
  group's `max_current` (0 is a real limit of 0 A).
* non_evse(g): with a fresh grid-demand meter (role 3) placed in *g*: its reading minus what
  the EVSEs below *g* measurably draw. Without one: the consumption meters (role 1) placed in
  *g* plus non_evse of the groups directly below. Each is clamped at ≥ 0 per phase, so solar
  export never lends budget. Several grid meters in one group are added up. With
  `params.load_hold_time` > 0 each group's non_evse is held at its highest figure of that
  many seconds (budgets.hold_peaks): a rise counts at once, a fall after the hold. An EVSE's
  draw is its state's currents, or `EvseInput.counted_current` (what it drew at the time of
  the grid reading, as the control loop pairs them).
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

An EVSE reporting more current on a phase than its maximum explains (`draw_bound`) is lost:
its report is a fault, not a credit against the grid reading.

Overdraft: when the main grid meter shows a phase above `max_total_current` for longer than
`overdraft_grace_s` (follow_time plus one cycle: cars still following a decrease are not a
fuse to cool down), the excess is subtracted from limit(0) for OVERDRAFT_HOLD_S seconds (the
cFos documentation: 5 minutes, "to allow the fuse to cool down"). Every new excess restarts
the hold; the larger of the held and the new amount applies. `Allocation.overdraft_cur` is
the largest excess seen, for `params.overdraft_cur`: the caller writes it back into the
params after each call. When the params come in lower than what was last returned (a user
set it to 0 with set_params), the history is reset and an active reduction ends too.

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
meters, and 0 while the main grid meter is lost. EVSEs whose rules charge from the
production (modes 2-4) or the surplus (mode 5) share that pool (wishes.solar_pools, see
solar_share.py); the others' rules see the whole figures.

Soft meter: for EVSEs whose state has no `total_energy`, `Allocation.energy_wh` holds the
energy since the previous call (power * elapsed time, the gap capped at `stale_after_s`).
"""

from service.core.allocation.budgets import hold_peaks, overdraft_grace_s
from service.core.allocation.cache import AllocationCache
from service.core.allocation.events import enter_rfid, override
from service.core.allocation.model import (
    CHARGING_STATES,
    EMPTY_EVSE_MEMORY,
    FALLBACK_MAX_CURRENT,
    MAX_EVSE_CURRENT,
    NOMINAL_VOLTAGE,
    OVERDRAFT_HOLD_S,
    PAUSE_REASONS,
    PREAUTH_S,
    R_AUTH,
    R_BATTERY_SAVE,
    R_COM_ERR,
    R_DISABLED,
    R_ERROR,
    R_GRID_LOST,
    R_LIMITED,
    R_MIN_PAUSE,
    R_NO_CURRENT,
    R_NO_VEHICLE,
    R_OK,
    R_OVERRIDE,
    R_RULE,
    R_TARGET,
    R_UNLIMITED,
    ROLE_CONSUMPTION,
    ROLE_GRID,
    ROLE_PRODUCTION,
    STATE_ERROR,
    STATE_NO_VEHICLE,
    STATE_OFFLINE,
    VEHICLE_STATES,
    Allocation,
    AllocationInput,
    EvseInput,
    EvseMemory,
    EvseResult,
    Memory,
    MeterInput,
    draw_bound,
    effective_minimum,
    resolve_max_current,
    stale_after_s,
)
from service.core.allocation.run import allocate

__all__ = [
    "CHARGING_STATES",
    "EMPTY_EVSE_MEMORY",
    "FALLBACK_MAX_CURRENT",
    "MAX_EVSE_CURRENT",
    "NOMINAL_VOLTAGE",
    "OVERDRAFT_HOLD_S",
    "PAUSE_REASONS",
    "PREAUTH_S",
    "ROLE_CONSUMPTION",
    "ROLE_GRID",
    "ROLE_PRODUCTION",
    "R_AUTH",
    "R_BATTERY_SAVE",
    "R_COM_ERR",
    "R_DISABLED",
    "R_ERROR",
    "R_GRID_LOST",
    "R_LIMITED",
    "R_MIN_PAUSE",
    "R_NO_CURRENT",
    "R_NO_VEHICLE",
    "R_OK",
    "R_OVERRIDE",
    "R_RULE",
    "R_TARGET",
    "R_UNLIMITED",
    "STATE_ERROR",
    "STATE_NO_VEHICLE",
    "STATE_OFFLINE",
    "VEHICLE_STATES",
    "Allocation",
    "AllocationCache",
    "AllocationInput",
    "EvseInput",
    "EvseMemory",
    "EvseResult",
    "Memory",
    "MeterInput",
    "allocate",
    "draw_bound",
    "effective_minimum",
    "enter_rfid",
    "hold_peaks",
    "overdraft_grace_s",
    "override",
    "resolve_max_current",
    "stale_after_s",
]
