"""Stage 1 and 3: the meters, and the budgets they leave for the balanced EVSEs.

`read_meters` sums the fresh meters per group and finds the groups whose load is unknown;
`constraints` turns the group tree into the limits (slots) that sharing must keep; after the
verdicts (which say what the EVSEs draw and what counts as fixed load), `group_budgets`
computes for every constraint and phase

    budget(g) = limit(g) - non_evse(g) - fixed(g)

as the package docstring defines it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from service.core.allocation.model import (
    NOMINAL_VOLTAGE,
    OVERDRAFT_HOLD_S,
    ROLE_CONSUMPTION,
    ROLE_GRID,
    ROLE_PRODUCTION,
    AllocationInput,
    LoadEntry,
    Memory,
    MeterInput,
    fresh,
)
from service.core.groups import GroupTree
from service.core.meter_power import power_current, power_only
from service.core.models import MeterState, Params
from service.core.phases import PHASE_COUNT, PHASES_OF, ROTATION

_ROLES = (ROLE_CONSUMPTION, ROLE_PRODUCTION, ROLE_GRID)


class Meters(NamedTuple):
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
    # Per group: its grid reading is late (older than stale, within LATE_GRACE of it); it is
    # used, but the control law raises nobody until a fresh one comes.
    grid_late: list[bool]
    # Per group: how old its grid reading is now (from its ts), at most LATE_GRACE times
    # the stale age: an over-limit reading is judged by when it was taken.
    grid_age: list[float]

    def failed(self) -> list[bool]:
        """Per group: its load is unknown (its grid meter is lost, or without one a
        consumption meter is)."""
        return [
            lost or (not has and cons_lost)
            for lost, has, cons_lost in zip(
                self.grid_lost, self.has_grid, self.cons_lost, strict=True
            )
        ]

    @property
    def main_grid_lost(self) -> bool:
        return self.has_grid[0] and self.grid_lost[0]


def read_meters(
    inp: AllocationInput, index: Mapping[int, int], notes: list[str], com_err: set[str]
) -> Meters:
    """The fresh meters summed per group and grid phase; stale ones go to `com_err` and mark
    their group's reading as lost."""
    n = len(index)
    meters = Meters(
        [[0, 0, 0] for _ in range(n)], [False] * n, [False] * n,
        [[0, 0, 0] for _ in range(n)], [False] * n, 0, [0] * n, [0] * n, [False] * n,
        [0.0] * n,
    )  # fmt: skip
    production = 0
    for dev_id, meter in inp.meters.items():
        if not meter.config.device_enabled:
            continue
        is_fresh = fresh(meter.state, meter.state_age_s, inp.stale_after_s)
        late = LATE_GRACE * inp.stale_after_s
        if (
            not is_fresh
            and meter.config.role == ROLE_GRID
            and fresh(meter.state, meter.state_age_s, late)
        ):
            # A grid meter whose readings reach us late (polled, then queued) misses the
            # stale age now and then: its last reading still holds the other load (a fall
            # in it is held anyway), so it is used and raises wait; only a meter silent for
            # LATE_GRACE times the stale age fails safe.
            is_fresh = True
            meters.grid_late[_group_of(meter, index)] = True
        if not is_fresh:
            com_err.add(dev_id)
        if meter.config.role in _ROLES:
            production += _add_meter(meters, dev_id, meter, is_fresh, index, notes)
        if is_fresh and meter.config.role == ROLE_GRID:
            g = _group_of(meter, index)
            meters.grid_age[g] = max(meters.grid_age[g], _age(meter, inp.now, inp.stale_after_s))
    return meters._replace(production=production)


# A grid reading up to this many times the stale age old is late, not lost (see read_meters).
LATE_GRACE = 2.0


def _age(meter: MeterInput, now: float, stale_after_s: float) -> float:
    """From the reading's ts to now, bounded (a wrong clock may not stretch it)."""
    state = meter.state
    if state is None or meter.state_age_s is None:
        return 0.0
    return min(max(0.0, now - state.ts), LATE_GRACE * stale_after_s)


def _group_of(meter: MeterInput, index: Mapping[int, int]) -> int:
    return index.get(meter.config.group, 0)


def _add_meter(
    meters: Meters,
    dev_id: str,
    meter: MeterInput,
    is_fresh: bool,
    index: Mapping[int, int],
    notes: list[str],
) -> int:
    """Adds a consumption or grid meter's reading to its group; returns what a production
    meter produces (0 for the others)."""
    cfg = meter.config
    role = cfg.role
    g = index.get(cfg.group)
    if g is None:
        notes.append(f"{dev_id}: group {cfg.group} does not exist; using group 0")
        g = 0
    if role == ROLE_GRID:
        meters.has_grid[g] = True
    state = meter.state
    if not is_fresh or state is None:
        if role == ROLE_GRID:
            meters.grid_lost[g] = True
        elif role == ROLE_CONSUMPTION:
            meters.cons_lost[g] = True
        return 0
    sign = -1 if cfg.invert else 1
    if power_only(state):
        return _add_power(meters, g, role, sign, state, cfg.phase_rotation)
    c = state.current
    if role == ROLE_PRODUCTION:
        return max(0, sign * (c[0] + c[1] + c[2]))
    rot = ROTATION[cfg.phase_rotation]
    acc = meters.grid[g] if role == ROLE_GRID else meters.cons[g]
    acc[rot[0]] += sign * c[0]
    acc[rot[1]] += sign * c[1]
    acc[rot[2]] += sign * c[2]
    return 0


def _add_power(
    meters: Meters, g: int, role: int, sign: int, state: MeterState, rotation: int
) -> int:
    """A meter that reports only power: load on an unknown phase, not no load (see
    meter_power). Returns what a production meter produces."""
    ma, mask = power_current(state, rotation)
    ma *= sign
    if role == ROLE_PRODUCTION:
        return max(0, ma)
    if role == ROLE_GRID:
        meters.grid_power[g] += ma
        meters.grid_power_mask[g] |= mask
    else:
        for p in PHASES_OF[mask]:
            meters.cons[g][p] += max(0, ma)
    return 0


class Constraints(NamedTuple):
    """The limits sharing must keep: one slot of three phases per group, then one for
    `max_total_evse_current` and one per failed group for `grid_fail_current`."""

    total: int
    evse_cap: int  # constraint index of max_total_evse_current, -1 = none
    fail_cap: dict[int, int]  # failed group index → its grid_fail_current constraint
    chain: list[tuple[int, ...]]  # per group: the constraints its EVSEs load
    min_only: list[bool]  # per group: only minimum currents below it


def constraints(params: Params, tree: GroupTree, failed: list[bool]) -> Constraints:
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
    return Constraints(count, evse_cap, fail_cap, chain, min_only)


def overdraft_grace_s(params: Params) -> float:
    """How long the grid may show more than max_total_current before it is an overdraft:
    after a decrease the cars take up to `follow_time` to follow, and the meter's next
    reading may come a cycle later. That excess is the control loop at work, not a fuse
    that needs to cool down; one that outlasts it is."""
    return params.follow_time + params.cycle_time / 1000


class Overdraft(NamedTuple):
    active: int  # the active reduction of the main limit, mA
    until: float  # when it ends
    reported: int  # overdraft_cur
    over_since: float | None  # since when the grid has been over the limit


def overdraft(params: Params, memory: Memory, meters: Meters, now: float) -> Overdraft:
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
        # Each reading is judged by when it was taken, against when the core first saw the
        # grid over the limit (the run that could first cut the cars): a reading that the
        # cycle's runs see again while no newer one has come, or one taken before the cars
        # had had follow_time since that cut, shows the cars as they were before they had
        # followed. Counted from when the first reading was taken instead, a meter that
        # reports 2.5 s late ate 2.5 s of the cars' follow time, and cars that followed in
        # time cost the site a 5-minute overdraft (out-of-order plant 147: 4 A, 75 % of the
        # headroom used).
        taken = now - meters.grid_age[0]
        over_since = memory.over_since if memory.over_since is not None else now
        if taken - over_since < overdraft_grace_s(params):
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
    return Overdraft(active, until, max(params.overdraft_cur, overdraw), over_since)


def hold_peaks(
    history: tuple[LoadEntry, ...],
    load: Sequence[int],
    now: float,
    hold_s: float,
    spread: Sequence[int] = (0, 0, 0),
) -> tuple[list[int], tuple[LoadEntry, ...]]:
    """The highest other load per phase within the last `hold_s` seconds, and the history to
    keep. A new, higher load counts at once; a lower one only once the higher figures are
    older than `hold_s`. Meter noise and readings that a wallbox's next report has not yet
    caught up with would otherwise move the budgets, and with them the commands, at every
    reading (a meter that reads 0.3 A high for a second costs nothing; one that reads low
    would hand out current that is not there).

    `spread`: per phase, how low the figure may be because EVSEs were in transition when it
    was made (a car ramping up counted at its raised command, one following a cut at its
    last report, see pairing.draw_spread). Such a figure lowers the held load no further
    than the figure plus its spread: what was held is carried on (as a figure of now) to
    that level, so that transitions that follow one another for longer than `hold_s` lend
    no budget, and a rise seen during them is kept until `hold_s` after them."""
    credited = any(spread)
    l0, l1, l2 = int(load[0]), int(load[1]), int(load[2])
    if len(history) == 1 and not credited:
        # The most common case, short (what the general way below gives): a steady load, the
        # one figure held still within its hold time, and no transition.
        h = history[0]
        steady = h[1] == l0 and h[2] == l1 and h[3] == l2 and not h[4]
        if steady and now - h[0] < hold_s and h[0] <= now:
            return [h[1], h[2], h[3]], history
    # The flag keeps a credited figure apart from an equal plain one before it (both stay).
    entry: LoadEntry = (now, l0, l1, l2, credited)
    kept = [h for h in history if now - h[0] < hold_s and h[0] <= now]
    past = [h for h in history if h[0] <= now]
    if credited and past:
        floor = (
            min(max(h[1] for h in past), entry[1] + spread[0]),
            min(max(h[2] for h in past), entry[2] + spread[1]),
            min(max(h[3] for h in past), entry[3] + spread[2]),
        )
        # Carried with the time of the figure it comes from: the hold's clock runs on, and
        # once the transitions are over an old peak goes as it would have gone.
        lifted = [p for p in range(3) if floor[p] > entry[p + 1]]
        if lifted:
            origin = max(
                (h[0] for h in past if any(h[p + 1] >= floor[p] for p in lifted)),
                default=now,
            )
            carried: LoadEntry = (origin, *floor, False)
            # Figures the carried one covers on every phase say nothing more.
            kept = [h for h in kept if _exceeds(h, carried)]
            kept.append(carried)
    if not kept or kept[-1][1:] != entry[1:]:
        kept.append(entry)
    # A bounded memory: the oldest go first (a burst of runs within one hold time).
    kept = kept[-32:]
    held = [max(h[1] for h in kept), max(h[2] for h in kept), max(h[3] for h in kept)]
    return held, tuple(kept)


def _exceeds(a: LoadEntry, b: LoadEntry) -> bool:
    return a[1] > b[1] or a[2] > b[2] or a[3] > b[3]


def held_loads(
    params: Params,
    tree: GroupTree,
    non_evse: list[list[int]],
    peaks: Mapping[int, tuple[LoadEntry, ...]],
    spread: list[list[int]],
    now: float,
) -> tuple[list[list[int]], dict[int, tuple[LoadEntry, ...]]]:
    """Per group, the other load held at its recent peak (params.load_hold_time; 0: the
    load as measured now), and the peaks to remember. `spread`: per group and grid phase,
    how low its figure may be by its EVSEs in transition (EvseInput.draw_spread); a group's
    figure is also that much less sure for the groups above it (see hold_peaks)."""
    kept: dict[int, tuple[LoadEntry, ...]] = {}
    if params.load_hold_time <= 0:
        return non_evse, kept
    up = [[0, 0, 0] for _ in non_evse]
    for g, sp in enumerate(spread):
        if sp[0] or sp[1] or sp[2]:
            for a in tree.chains[g]:
                u = up[a]
                u[0] += sp[0]
                u[1] += sp[1]
                u[2] += sp[2]
    held: list[list[int]] = []
    for g, load in enumerate(non_evse):
        gid = tree.ids[g]
        peak, kept[gid] = hold_peaks(peaks.get(gid, ()), load, now, params.load_hold_time, up[g])
        held.append(peak)
    return held, kept


def loads_for_raises(
    tree: GroupTree,
    meters: Meters,
    draw_sub: list[list[int]],
    spread_sub: list[list[int]],
    budgeted: list[list[int]],
) -> list[list[int]] | None:
    """The other load a raise must allow for while EVSEs are in transition; None when there
    are none (it is then the budgeted load).

    While a car ramps, a rise of the other load cannot be told from the car's draw that has
    not come yet: the figure, made with the car counted at its command, may be low by its
    spread (EvseInput.draw_spread), and the held load, which the figure cannot lower, may be
    below the truth by as much. Cuts and sharing go by the budgeted load (they would
    otherwise cut and pause cars at every ramp); a raise goes by the figure with every EVSE
    in transition counted at the least it may draw, where that is higher. A rise that came
    during a ramp is then never handed out again as headroom (simulated plants, plugging
    seeds 100 and 282: a base-load step during one car's late start given to another car,
    0.3-0.4 A over the fuse until the ramp ended). `spread_sub`: the spread per group and
    grid phase, summed over its subtree (as draw_sub)."""
    if not any(s[0] or s[1] or s[2] for s in spread_sub):
        return None
    least = [
        [d[0] - s[0], d[1] - s[1], d[2] - s[2]] for d, s in zip(draw_sub, spread_sub, strict=True)
    ]
    return [
        [max(b[p], w[p]) for p in range(3)]
        for b, w in zip(budgeted, non_evse_loads(tree, meters, least), strict=True)
    ]


def non_evse_loads(tree: GroupTree, meters: Meters, draw_sub: list[list[int]]) -> list[list[int]]:
    """Per group and grid phase, the load that is not an EVSE's, bottom-up: a fresh grid
    meter's reading minus what the EVSEs below draw, else the consumption meters plus the
    groups directly below. Never below 0 (export lends no budget)."""
    n_groups = len(tree.ids)
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
    return non_evse


def last_grid_loads(
    params: Params,
    tree: GroupTree,
    meters: Meters,
    non_evse: list[list[int]],
    remembered: Mapping[int, tuple[int, int, int]],
    active_overdraft: int,
) -> tuple[list[list[int]], dict[int, tuple[int, int, int]]]:
    """Without a grid reading nothing beyond grid_fail_current. At 0, minimums only, beside
    the other load of the group's last fresh grid reading (remembered per group id); before
    any reading that load is unknown, up to the whole limit: nothing fits. Returns the other
    loads to budget and the figures to remember."""
    grid_load = dict(remembered)
    out = list(non_evse)
    for g, ne in enumerate(non_evse):
        if not meters.has_grid[g]:
            continue
        gid = tree.ids[g]
        if not meters.grid_lost[g]:
            grid_load[gid] = (ne[0], ne[1], ne[2])
        elif params.grid_fail_current <= 0:
            limit = _limit(params, tree, g, active_overdraft)
            held = grid_load.get(gid, (limit, limit, limit))
            out[g] = [max(ne[0], held[0]), max(ne[1], held[1]), max(ne[2], held[2])]
    return out, grid_load


def _limit(params: Params, tree: GroupTree, g: int, active_overdraft: int) -> int:
    """limit(g): the group's max_current; for the main group max_total_current less the
    reserve and the active overdraft."""
    if g == 0:
        return params.max_total_current - params.reserve_current - active_overdraft
    return tree.limits[g]


class Budgets(NamedTuple):
    slots: list[int]  # per constraint and grid phase: what the balanced EVSEs may draw
    per_group: dict[int, tuple[int, int, int]]  # group id → its EVSE budget
    available_power: int  # W the balanced EVSEs may draw below the main group


def group_budgets(
    params: Params,
    tree: GroupTree,
    cons: Constraints,
    non_evse: list[list[int]],
    fixed_sub: list[list[int]],
    active_overdraft: int,
) -> Budgets:
    slots = [0] * (cons.total * 3)
    per_group: dict[int, tuple[int, int, int]] = {}
    for g in range(len(tree.ids)):
        limit = _limit(params, tree, g, active_overdraft)
        ne, fx = non_evse[g], fixed_sub[g]
        b = (limit - ne[0] - fx[0], limit - ne[1] - fx[1], limit - ne[2] - fx[2])
        slots[g * 3 : g * 3 + 3] = b
        per_group[tree.ids[g]] = b
    if cons.evse_cap >= 0:
        k = cons.evse_cap
        cap, fx = params.max_total_evse_current, fixed_sub[0]
        slots[k * 3 : k * 3 + 3] = (cap - fx[0], cap - fx[1], cap - fx[2])
    for g, k in cons.fail_cap.items():
        cap, fx = params.grid_fail_current, fixed_sub[g]
        slots[k * 3 : k * 3 + 3] = (cap - fx[0], cap - fx[1], cap - fx[2])
    root = slots[0:3]
    if cons.evse_cap >= 0:
        k = cons.evse_cap
        root = [min(a, b) for a, b in zip(root, slots[k * 3 : k * 3 + 3], strict=True)]
    available = sum(max(0, b) for b in root) * NOMINAL_VOLTAGE // 1000
    return Budgets(slots, per_group, available)


def solar_surplus(meters: Meters, draw_sub: list[list[int]], idle_draw: int) -> int:
    """The surplus the charging rules see (total over the phases): what the EVSEs draw
    (less `idle_draw`: what EVSEs given no current still draw, and ramp credits) minus the
    main grid meter's reading, or without one production minus consumption; 0 while the
    main grid meter is lost."""
    if meters.has_grid[0]:
        if meters.grid_lost[0]:
            return 0
        return max(0, sum(draw_sub[0]) - idle_draw - sum(meters.grid[0]) - meters.grid_power[0])
    return max(0, meters.production - sum(sum(c) for c in meters.cons))
