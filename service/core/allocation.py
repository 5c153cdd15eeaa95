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
group limit still holds. `grid_meter_lost` reports this for the main group.

Overdraft: when the main grid meter shows a phase above `max_total_current`, the excess is
subtracted from limit(0) for OVERDRAFT_HOLD_S seconds (the cFos documentation: 5 minutes, "to
allow the fuse to cool down"); a larger excess in the meantime replaces it and restarts the
hold. `Allocation.overdraft_cur` is the largest excess seen, for `params.overdraft_cur`: the
caller writes it back into the params after each call. Setting `params.overdraft_cur` to 0
(set_params) resets that history and also ends an active reduction.

EVSEs
-----
Only EVSEs with a vehicle (state 2, 3, 4) that are authorised, not switched off by override C,
and whose target reaches their minimum ask for current. Target = the maximum current
(`max_charging_cur`; an expression is evaluated when trivial, else the EVSE's reported
`max_charging_current` or 16 A is used and reported) capped by the EVSE's reported
`max_charging_current`, the override `mamps` and the charging rules (see charging_rules). The
minimum is `min_charging_cur`, raised to `battery_save_threshold`: an EVSE that cannot get that
much pauses instead of charging slowly. Disabled EVSEs follow `params.disable_policy`: 0 off
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

Pauses: an EVSE with a vehicle that wants current but gets none is paused, and stays paused for
at least its `pause_min_time` (`pause_time` counts the seconds). `lb_enabled` false
(observation): everything is computed and reported, but the commands give every EVSE its
maximum current.

Soft meter: for EVSEs whose state has no `total_energy`, `Allocation.energy_wh` holds the
energy since the previous call (power * elapsed time, the gap capped at `stale_after_s`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    RuleContext,
    RuleState,
    evaluate_expression,
    evaluate_rule_set,
    minute_of_week,
    numeric_variables,
)
from service.core.groups import Demand, build_group_tree, share, sum_subtrees
from service.core.models import (
    EvseCommand,
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from service.core.phases import (
    GRID_MASK,
    PHASE_COUNT,
    PHASES_OF,
    ROTATION,
    assumed_mask,
    measured_mask,
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


# --- input ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvseInput:
    config: EvseConfig
    state: EvseState | None = None
    state_age_s: float | None = None  # None: never heard


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
    stale_after_s: float
    utc_offset_s: int = 0  # local time for charging rules = now + utc_offset_s


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


EMPTY_EVSE_MEMORY: Final = EvseMemory()
_IDLE_MEMORY: Final = EvseMemory(last_state=STATE_NO_VEHICLE)


@dataclass(frozen=True, slots=True)
class Memory:
    """Everything carried from one call to the next; never changed, always returned anew."""

    evses: Mapping[str, EvseMemory] = field(default_factory=dict)
    last_now: float | None = None
    overdraft: int = 0  # active reduction of the main limit, mA
    overdraft_until: float = 0.0
    overdraft_reported: int = 0

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
    ts: float

    @property
    def command(self) -> EvseCommand:
        return EvseCommand.model_construct(
            device_enabled=self.device_enabled,
            charging_enabled=self.charging_enabled,
            paused=self.paused,
            charging_current=self.charging_current,
            ts=self.ts,
        )


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
    com_err: Mapping[str, bool]  # every device
    energy_wh: Mapping[str, float]  # soft-meter energy since the last call
    notes: tuple[str, ...]


# --- helpers ----------------------------------------------------------------------------


def _fresh(state: EvseState | MeterState | None, age: float | None, stale: float) -> bool:
    return state is not None and age is not None and age <= stale and not state.com_err


def resolve_max_current(
    config: EvseConfig, state: EvseState | None, variables: Mapping[str, float]
) -> tuple[int, bool]:
    """An EVSE's maximum current and whether a fallback replaced its expression."""
    raw = config.max_charging_cur
    fallback = False
    if isinstance(raw, int):
        value = raw
    else:
        evaluated = evaluate_expression(raw, variables)
        if evaluated is None:
            fallback = True
            reported = state.max_charging_current if state is not None else None
            value = reported if reported else FALLBACK_MAX_CURRENT
        else:
            value = evaluated
    if state is not None and state.max_charging_current:
        value = min(value, state.max_charging_current)
    return max(0, min(value, MAX_EVSE_CURRENT)), fallback


def _power(state: EvseState) -> float:
    if state.power_w is not None:
        return state.power_w
    c, v = state.current, state.voltage
    return (max(0, c[0]) * v[0] + max(0, c[1]) * v[1] + max(0, c[2]) * v[2]) / 1000


class _Candidate(NamedTuple):
    dev_id: str
    config: EvseConfig
    state: EvseState
    group: int
    local_mask: int
    grid_mask: int
    max_current: int
    memory: EvseMemory
    disabled_min: bool  # device disabled under disable_policy 1


class _Wish(NamedTuple):
    candidate: _Candidate
    memory: EvseMemory
    target: int
    reason: str  # set when it does not take part in sharing
    needs_auth: bool
    capped_min: bool  # limited to its minimum because a grid meter is lost
    user_id: str | None


def _off_result(config: EvseConfig, now: float, reason: str) -> EvseResult:
    return EvseResult(
        config.device_enabled, False, False, 0, 0, 0, 0, 0, 0, 0, reason, False, False, None,
        0, 0, now,
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


def allocate(inp: AllocationInput, memory: Memory) -> Allocation:
    params = inp.params
    now = inp.now
    stale = inp.stale_after_s
    notes: list[str] = []
    tree = build_group_tree(inp.groups, params.max_total_current)
    notes.extend(tree.notes)
    n_groups = len(tree.ids)
    index = tree.index
    variables = numeric_variables(params.cm_vars)

    # Meters.
    grid = [[0, 0, 0] for _ in range(n_groups)]
    has_grid = [False] * n_groups
    grid_lost = [False] * n_groups
    cons = [[0, 0, 0] for _ in range(n_groups)]
    cons_lost = [False] * n_groups
    production = 0
    com_err: dict[str, bool] = {}
    for dev_id, meter in inp.meters.items():
        mcfg = meter.config
        if not mcfg.device_enabled:
            com_err[dev_id] = False
            continue
        mstate = meter.state
        fresh = _fresh(mstate, meter.state_age_s, stale)
        com_err[dev_id] = not fresh
        role = mcfg.role
        if role not in (ROLE_CONSUMPTION, ROLE_PRODUCTION, ROLE_GRID):
            continue
        g = index.get(mcfg.group)
        if g is None:
            notes.append(f"{dev_id}: group {mcfg.group} does not exist; using group 0")
            g = 0
        if role == ROLE_GRID:
            has_grid[g] = True
        if not fresh or mstate is None:
            if role == ROLE_GRID:
                grid_lost[g] = True
            elif role == ROLE_CONSUMPTION:
                cons_lost[g] = True
            continue
        mrot = ROTATION[mcfg.phase_rotation]
        sign = -1 if mcfg.invert else 1
        mc = mstate.current
        if role == ROLE_PRODUCTION:
            production += max(0, sign * (mc[0] + mc[1] + mc[2]))
            continue
        acc = grid[g] if role == ROLE_GRID else cons[g]
        acc[mrot[0]] += sign * mc[0]
        acc[mrot[1]] += sign * mc[1]
        acc[mrot[2]] += sign * mc[2]

    # EVSEs, first pass: sessions, measurements, fixed loads, candidates.
    draw = [[0, 0, 0] for _ in range(n_groups)]
    fixed = [[0, 0, 0] for _ in range(n_groups)]
    results: dict[str, EvseResult] = {}
    candidates: list[_Candidate] = []
    old_mem = memory.evses
    # Copied on the first change only: most calls change few EVSEs' memory.
    changed_mem: dict[str, EvseMemory] = {}
    energy: dict[str, float] = {}
    cons_power = 0.0
    dt = 0.0
    if memory.last_now is not None:
        dt = min(max(0.0, now - memory.last_now), stale)
    observe = not params.lb_enabled
    policy = params.disable_policy
    users = inp.users
    rfids = RfidIndex(users)
    seen_old = 0

    for dev_id, ev in inp.evses.items():
        cfg = ev.config
        st = ev.state
        enabled = cfg.device_enabled
        if not enabled and policy == 0:
            com_err[dev_id] = False
            results[dev_id] = _off_result(cfg, now, R_DISABLED)
            continue
        mem = old_mem.get(dev_id)
        if mem is None:
            mem = EMPTY_EVSE_MEMORY
        else:
            seen_old += 1
        g = index.get(cfg.group)
        if g is None:
            notes.append(f"{dev_id}: group {cfg.group} does not exist; using group 0")
            g = 0
        rot = cfg.phase_rotation
        fresh = (
            st is not None
            and ev.state_age_s is not None
            and ev.state_age_s <= stale
            and not st.com_err
            and st.state != STATE_OFFLINE
        )
        com_err[dev_id] = not fresh
        if not fresh or st is None:
            # Lost: assume it draws its maximum on the phases it may use.
            max_cur, fallback = resolve_max_current(cfg, st, variables)
            if fallback:
                notes.append(f"{dev_id}: max_charging_cur not evaluated; using {max_cur} mA")
            local = assumed_mask(cfg.used_phases, rfids.phases(mem.auth), mem.learned_phases)
            gmask = GRID_MASK[rot][local]
            acc = fixed[g]
            for p in PHASES_OF[gmask]:
                acc[p] += max_cur
            results[dev_id] = EvseResult(
                enabled, False, False, 0, 0, 0, 0, local, gmask, 0, R_COM_ERR,
                False, True, None, mem.overrides.bits, 0, now,
            )  # fmt: skip
            if mem.charging:
                changed_mem[dev_id] = mem._replace(charging=False)
            continue

        s = st.state
        m2 = _session(dev_id, mem, st, now, cfg, rfids)
        power = _power(st)
        cons_power += power
        if st.total_energy is None and dt > 0 and power > 0:
            energy[dev_id] = power * dt / 3600
        # What it draws now, on the grid phases, so that it can be told apart from other load.
        c = st.current
        r = ROTATION[rot]
        acc = draw[g]
        if c[0] > 0:
            acc[r[0]] += c[0]
        if c[1] > 0:
            acc[r[1]] += c[1]
        if c[2] > 0:
            acc[r[2]] += c[2]

        if not enabled and policy == -1:
            max_cur, fallback = resolve_max_current(cfg, st, variables)
            if fallback:
                notes.append(f"{dev_id}: max_charging_cur not evaluated; using {max_cur} mA")
            local = assumed_mask(cfg.used_phases, rfids.phases(m2.auth), m2.learned_phases)
            gmask = GRID_MASK[rot][local]
            if s not in (STATE_NO_VEHICLE, STATE_ERROR):
                acc = fixed[g]
                for p in PHASES_OF[gmask]:
                    acc[p] += max_cur
            results[dev_id] = EvseResult(
                False, True, False, max_cur, max_cur, max_cur, 0, local, gmask, round(power),
                R_UNLIMITED, False, False, None, m2.overrides.bits, max_cur, now,
            )  # fmt: skip
            m2 = m2._replace(paused_since=None, charging=False)
        elif s in VEHICLE_STATES:
            max_cur, fallback = resolve_max_current(cfg, st, variables)
            if fallback:
                notes.append(f"{dev_id}: max_charging_cur not evaluated; using {max_cur} mA")
            local = assumed_mask(cfg.used_phases, rfids.phases(m2.auth), m2.learned_phases)
            candidates.append(
                _Candidate(
                    dev_id, cfg, st, g, local, GRID_MASK[rot][local], max_cur, m2, not enabled
                )
            )
        else:
            reason = R_NO_VEHICLE if s == STATE_NO_VEHICLE else R_ERROR
            local = assumed_mask(cfg.used_phases, rfids.phases(m2.auth), m2.learned_phases)
            results[dev_id] = EvseResult(
                enabled, True, False, 0, 0, 0, 0, local, GRID_MASK[rot][local], round(power),
                reason, False, False, m2.auth.user_id if m2.auth else None, m2.overrides.bits,
                0, now,
            )  # fmt: skip
            if m2.paused_since is not None or m2.charging:
                m2 = m2._replace(paused_since=None, charging=False)
        if m2 is not mem:
            if m2 == _IDLE_MEMORY:
                m2 = _IDLE_MEMORY
            if m2 != mem:
                changed_mem[dev_id] = m2

    # Group loads.
    draw_sub = sum_subtrees(tree, draw)
    fixed_sub = sum_subtrees(tree, fixed)
    non_evse = [[0, 0, 0] for _ in range(n_groups)]
    failed = [False] * n_groups
    below = [[0, 0, 0] for _ in range(n_groups)]  # Σ non_evse of the groups directly below
    for g in tree.bottom_up:
        ne = non_evse[g]
        if has_grid[g] and not grid_lost[g]:
            gr, dr = grid[g], draw_sub[g]
            for p in range(3):
                ne[p] = max(0, gr[p] - dr[p])
        else:
            failed[g] = grid_lost[g] or cons_lost[g]
            co, bl = cons[g], below[g]
            for p in range(3):
                ne[p] = max(0, co[p] + bl[p])
        parent = tree.parent[g]
        if parent >= 0:
            bp = below[parent]
            bp[0] += ne[0]
            bp[1] += ne[1]
            bp[2] += ne[2]

    # Overdraft on the main group.
    overdraw = 0
    if has_grid[0] and not grid_lost[0]:
        overdraw = max(0, max(grid[0]) - params.max_total_current)
    active = memory.overdraft if now < memory.overdraft_until else 0
    until = memory.overdraft_until
    if params.overdraft_cur < memory.overdraft_reported:
        active = 0  # the history was reset: end the reduction too
    if overdraw > 0:
        # Each overdraw (even a smaller one) restarts the hold of the larger amount.
        active = max(active, overdraw)
        until = now + OVERDRAFT_HOLD_S
    elif active == 0:
        until = 0.0
    reported = max(params.overdraft_cur, overdraw)

    # Constraints: groups, then the EVSE cap, then one per failed group (grid_fail_current).
    n_cons = n_groups
    evse_cap = -1
    if params.max_total_evse_current > 0:
        evse_cap = n_cons
        n_cons += 1
    fail_cap: dict[int, int] = {}
    fail_current = params.grid_fail_current
    if fail_current > 0:
        for g in range(n_groups):
            if failed[g]:
                fail_cap[g] = n_cons
                n_cons += 1
    budgets = [0] * (n_cons * 3)
    group_budget: dict[int, tuple[int, int, int]] = {}
    main_limit = params.max_total_current - params.reserve_current - active
    for g in range(n_groups):
        limit = main_limit if g == 0 else tree.limits[g]
        ne, fx = non_evse[g], fixed_sub[g]
        b = (limit - ne[0] - fx[0], limit - ne[1] - fx[1], limit - ne[2] - fx[2])
        budgets[g * 3 : g * 3 + 3] = b
        group_budget[tree.ids[g]] = b
    if evse_cap >= 0:
        fx = fixed_sub[0]
        cap = params.max_total_evse_current
        budgets[evse_cap * 3 : evse_cap * 3 + 3] = (cap - fx[0], cap - fx[1], cap - fx[2])
    for g, k in fail_cap.items():
        fx = fixed_sub[g]
        budgets[k * 3 : k * 3 + 3] = (
            fail_current - fx[0],
            fail_current - fx[1],
            fail_current - fx[2],
        )
    # Per group: its constraints, and whether only minimums are allowed below it.
    chain_cons: list[tuple[int, ...]] = []
    min_only: list[bool] = []
    for g in range(n_groups):
        chain = tree.chains[g]
        extra = [fail_cap[a] for a in chain if a in fail_cap]
        if evse_cap >= 0:
            extra.append(evse_cap)
        chain_cons.append(chain + tuple(extra))
        min_only.append(fail_current <= 0 and any(failed[a] for a in chain))

    # Solar figures for charging rules (totals over the phases).
    surplus = 0
    if has_grid[0]:
        if not grid_lost[0]:
            surplus = max(0, sum(draw_sub[0]) - sum(grid[0]))
    else:
        surplus = max(0, production - sum(sum(c) for c in cons))

    # EVSEs, second pass: targets and demands.
    week_minute = minute_of_week(now, inp.utc_offset_s)
    demands: list[Demand] = []
    wanting: list[_Wish] = []
    cells: dict[int, tuple[int, ...]] = {}
    for cand in candidates:
        cfg = cand.config
        mem = cand.memory
        minimum = max(cfg.min_charging_cur, cfg.battery_save_threshold)
        ov = mem.overrides
        user_id = mem.auth.user_id if mem.auth is not None else None
        user = users.get(user_id) if user_id is not None else None
        needs_auth = bool(cfg.users) and (
            user is None or not may_charge(user, cand.dev_id, cfg.users)
        )
        target = cand.max_current
        if ov.max_current is not None and ov.max_current < target:
            target = ov.max_current
        evse_state: RuleState | None = None
        user_state: RuleState | None = None
        rule_limited = False
        if not needs_auth and not ov.charging_disabled:
            evse_rules = cfg.charging_rules if not ov.evse_rules_disabled else ()
            user_rules = (
                user.charging_rules if user is not None and not ov.user_rules_disabled else ()
            )
            if evse_rules or user_rules:
                n = PHASE_COUNT[cand.local_mask]
                ctx = RuleContext(
                    week_minute, cand.max_current, production // n, surplus // n, variables
                )
                if evse_rules:
                    asked, evse_state = evaluate_rule_set(
                        evse_rules, ctx, minimum, mem.evse_rule, now
                    )
                    if asked is not None and asked < target:
                        target, rule_limited = asked, True
                if user_rules:
                    asked, user_state = evaluate_rule_set(
                        user_rules, ctx, minimum, mem.user_rule, now
                    )
                    if asked is not None and asked < target:
                        target, rule_limited = asked, True
        if cand.disabled_min and target > minimum:
            target = minimum
        capped_min = False
        if min_only[cand.group] and target > minimum:
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
        elif mem.paused_since is not None and now - mem.paused_since < cfg.pause_min_time:
            reason = R_MIN_PAUSE
        if mem.evse_rule != evse_state or mem.user_rule != user_state:
            mem = mem._replace(evse_rule=evse_state, user_rule=user_state)
        wanting.append(_Wish(cand, mem, target, reason, needs_auth, capped_min, user_id))
        if reason:
            continue
        cell = cand.group * 8 + cand.grid_mask
        slots = cells.get(cell)
        if slots is None:
            phases = PHASES_OF[cand.grid_mask]
            slots = tuple(k * 3 + p for k in chain_cons[cand.group] for p in phases)
            cells[cell] = slots
        demands.append(
            Demand(
                cfg.prio,
                (0 if mem.charging else 1, mem.plugged_at or now, cand.dev_id),
                cell,
                slots,
                cand.grid_mask,
                minimum,
                target,
            )
        )

    currents = share(budgets, demands, params.max_imbalance)

    # Results and memory of the EVSEs with a vehicle.
    k = 0
    for wish in wanting:
        cand = wish.candidate
        mem = wish.memory
        reason = wish.reason
        target = wish.target
        current = 0
        if not reason:
            current = currents[k]
            k += 1
            if current == 0:
                reason = R_NO_CURRENT
            elif current >= target:
                reason = R_OK
            else:
                reason = R_LIMITED
            if wish.capped_min and current > 0:
                reason = R_GRID_LOST
        paused = reason in PAUSE_REASONS
        if current > 0:
            m2 = mem._replace(paused_since=None, charging=True)
        elif paused:
            since = mem.paused_since if mem.paused_since is not None else now
            m2 = mem._replace(paused_since=since, charging=False)
        else:
            m2 = mem._replace(paused_since=None, charging=False)
        pause_time = int(now - m2.paused_since) if m2.paused_since is not None else 0
        ov = mem.overrides
        if observe:
            enabled_cmd, paused_cmd, current_cmd = True, False, cand.max_current
        else:
            enabled_cmd = reason not in (R_AUTH, R_OVERRIDE)
            paused_cmd, current_cmd = paused, current
        results[cand.dev_id] = EvseResult(
            cand.config.device_enabled, enabled_cmd, paused_cmd, current_cmd, current, target,
            pause_time, cand.local_mask, cand.grid_mask, round(_power(cand.state)), reason,
            wish.needs_auth, False, wish.user_id, ov.bits,
            ov.max_current if ov.max_current is not None else cand.max_current, now,
        )  # fmt: skip
        if m2 != old_mem.get(cand.dev_id):
            changed_mem[cand.dev_id] = m2
        else:
            changed_mem.pop(cand.dev_id, None)

    # Observation mode: every EVSE gets its maximum (the computed figures stay visible).
    if observe:
        for dev_id, res in results.items():
            if res.reason in (R_NO_VEHICLE, R_ERROR, R_COM_ERR, R_DISABLED):
                ev = inp.evses[dev_id]
                max_cur, _ = resolve_max_current(ev.config, ev.state, variables)
                results[dev_id] = res._replace(
                    charging_enabled=True, paused=False, charging_current=max_cur
                )

    evses_out = {d: results[d] for d in inp.evses}
    new_mem: Mapping[str, EvseMemory] = old_mem
    if changed_mem or seen_old != len(old_mem):
        merged = dict(old_mem)
        merged.update(changed_mem)
        if seen_old != len(old_mem):
            # EVSEs that are gone are forgotten.
            merged = {d: m for d, m in merged.items() if d in inp.evses}
        new_mem = merged
    root = budgets[0:3]
    if evse_cap >= 0:
        cap_budget = budgets[evse_cap * 3 : evse_cap * 3 + 3]
        root = [min(a, b) for a, b in zip(root, cap_budget, strict=True)]
    avail = sum(max(0, b) for b in root) * NOMINAL_VOLTAGE // 1000
    new_memory = Memory(
        evses=new_mem,
        last_now=now,
        overdraft=active,
        overdraft_until=until,
        overdraft_reported=reported,
    )
    return Allocation(
        evses=evses_out,
        cons_evse_power=round(cons_power),
        avail_evse_power=avail,
        budget_per_phase=group_budget,
        memory=new_memory,
        grid_meter_lost=has_grid[0] and grid_lost[0],
        overdraft_cur=reported,
        overdraft_active=active,
        com_err=com_err,
        energy_wh=energy,
        notes=tuple(notes),
    )
