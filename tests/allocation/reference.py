"""An independent, slow restatement of the budget definitions in allocation's docstring.

The property tests check the allocation against this, so it deliberately shares no code with
service.core.allocation / groups beyond the models and the phase-rotation table (which
tests/allocation/test_phases.py checks on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.core.allocation import AllocationInput, EvseInput, Memory
from service.core.allocation.budgets import LATE_GRACE
from service.core.models import EvseConfig, EvseState
from service.core.phases import GRID_MASK

VEHICLE = (2, 3, 4)


def grid_phases(rotation: int, local_mask: int) -> list[int]:
    mask = GRID_MASK[rotation][local_mask]
    return [p for p in range(3) if mask >> p & 1]


@dataclass
class Budgets:
    """Everything a limit check needs, keyed by group id (0 = main group)."""

    parent: dict[int, int]
    limit: dict[int, int]
    non_evse: dict[int, list[int]]
    fixed: dict[int, list[int]]  # subtree sums of loads the allocation cannot steer
    failed: dict[int, bool]
    evse_cap: int  # 0 = none
    fixed_total: list[int]
    fail_current: int
    group_of: dict[str, int] = field(default_factory=dict)  # EVSE → its (located) group

    def chain(self, group: int) -> list[int]:
        out = [group]
        while group != 0:
            group = self.parent[group]
            out.append(group)
        return out

    def subtree(self, group: int, of: int) -> bool:
        return group in self.chain(of)


def fresh(state: object, age: float | None, stale: float) -> bool:
    return (
        state is not None
        and age is not None
        and age <= stale
        and not getattr(state, "com_err", False)
        and getattr(state, "state", 1) != 6
    )


def grid_fresh(state: object, age: float | None, stale: float) -> bool:
    """A grid meter's reading is used up to LATE_GRACE times the stale age (late, not
    lost: the control law then raises nobody)."""
    return fresh(state, age, LATE_GRACE * stale)


def explained(config: EvseConfig, state: EvseState) -> bool:
    """Whether the EVSE's maximum (80 A for an expression, capped by the maximum it reports)
    plus 10 % (at least 1 A) explains the largest current it reports."""
    raw = config.max_charging_cur
    limit = raw if isinstance(raw, int) else 80_000
    if state.max_charging_current and state.max_charging_current < limit:
        limit = state.max_charging_current
    return max(state.current) <= limit + max(1000, limit // 10)


def trusted(ev: EvseInput, stale: float) -> bool:
    """An EVSE the allocation trusts: a fresh state whose draw its maximum explains (else it
    counts as lost)."""
    return (
        ev.state is not None
        and fresh(ev.state, ev.state_age_s, stale)
        and explained(ev.config, ev.state)
    )


def measured(state: EvseState) -> int:
    return sum(1 << i for i, c in enumerate(state.current) if c >= 1000)


def learned_mask(inp: AllocationInput, memory: Memory, dev_id: str) -> int:
    """Phases the allocation knows for an EVSE after this call's measurements."""
    ev = inp.evses[dev_id]
    prev = memory.evse(dev_id)
    st = ev.state
    if st is not None and trusted(ev, inp.stale_after_s):
        if st.state in (3, 4):
            measured = sum(1 << i for i, c in enumerate(st.current) if c >= 1000)
            if measured:
                return measured
        if st.state == 1 and prev.last_state not in (None, 1):
            return 0
    return prev.learned_phases


def assumed_local(inp: AllocationInput, memory: Memory, dev_id: str) -> int:
    """The phases to assume (property tests use cards without used_phases): and always every
    phase it is measured drawing on."""
    ev = inp.evses[dev_id]
    local = ev.config.used_phases or learned_mask(inp, memory, dev_id) or 7
    if ev.state is not None and trusted(ev, inp.stale_after_s):
        local |= measured(ev.state)
    return local


def budgets(inp: AllocationInput, memory: Memory, overdraft_active: int) -> Budgets:
    params = inp.params
    stale = inp.stale_after_s
    parent = {0: 0}
    limit = {0: params.max_total_current - params.reserve_current - overdraft_active}
    for group_config in inp.groups:
        gid = group_config.id
        if gid not in parent:
            wanted = group_config.parent
            parent[gid] = wanted if wanted in parent else 0
            limit[gid] = group_config.max_current
    known = set(parent)

    def locate(group: int) -> int:
        return group if group in known else 0

    grid = {g: [0, 0, 0] for g in known}
    has_grid = dict.fromkeys(known, False)
    grid_lost = dict.fromkeys(known, False)
    cons = {g: [0, 0, 0] for g in known}
    cons_lost = dict.fromkeys(known, False)
    for meter in inp.meters.values():
        mcfg = meter.config
        if not mcfg.device_enabled or mcfg.role not in (1, 3):
            continue
        mg = locate(mcfg.group)
        if mcfg.role == 3:
            has_grid[mg] = True
        usable = grid_fresh if mcfg.role == 3 else fresh
        if not usable(meter.state, meter.state_age_s, stale) or meter.state is None:
            if mcfg.role == 3:
                grid_lost[mg] = True
            else:
                cons_lost[mg] = True
            continue
        sign = -1 if mcfg.invert else 1
        target = grid[mg] if mcfg.role == 3 else cons[mg]
        for local, phase in enumerate(grid_phases_of_rotation(mcfg.phase_rotation)):
            target[phase] += sign * meter.state.current[local]

    draw = {g: [0, 0, 0] for g in known}
    fixed_own = {g: [0, 0, 0] for g in known}
    group_of: dict[str, int] = {}
    for dev_id, ev in inp.evses.items():
        cfg = ev.config
        g = locate(cfg.group)
        group_of[dev_id] = g
        if not cfg.device_enabled and params.disable_policy == 0:
            continue
        max_cur = cfg.max_charging_cur if isinstance(cfg.max_charging_cur, int) else 16_000
        st = ev.state
        if st is not None and st.max_charging_current:
            max_cur = min(max_cur, st.max_charging_current)
        max_cur = max(0, min(max_cur, 80_000))
        if st is None or not trusted(ev, stale):
            learned = memory.evse(dev_id).learned_phases
            local = (cfg.used_phases or learned or 7) | learned
            for p in grid_phases(cfg.phase_rotation, local):
                fixed_own[g][p] += max_cur
            continue
        for local, phase in enumerate(grid_phases_of_rotation(cfg.phase_rotation)):
            draw[g][phase] += max(0, st.current[local])
        if not cfg.device_enabled and params.disable_policy == -1 and st.state in VEHICLE:
            for p in grid_phases(cfg.phase_rotation, assumed_local(inp, memory, dev_id)):
                fixed_own[g][p] += max_cur

    def subtree_sum(own: dict[int, list[int]], group: int) -> list[int]:
        total = [0, 0, 0]
        for g in known:
            if group in _chain(parent, g):
                for p in range(3):
                    total[p] += own[g][p]
        return total

    non_evse: dict[int, list[int]] = {}

    def non_evse_of(group: int) -> list[int]:
        if group in non_evse:
            return non_evse[group]
        if has_grid[group] and not grid_lost[group]:
            d = subtree_sum(draw, group)
            value = [max(0, grid[group][p] - d[p]) for p in range(3)]
        else:
            children = [g for g in known if g != 0 and parent[g] == group and g != group]
            below = [0, 0, 0]
            for child in children:
                sub = non_evse_of(child)
                for p in range(3):
                    below[p] += sub[p]
            value = [max(0, cons[group][p] + below[p]) for p in range(3)]
        non_evse[group] = value
        return value

    for g in known:
        non_evse_of(g)
    # Without a grid reading nothing beyond grid_fail_current: at 0 a lost grid meter's group
    # counts (for its own limit) the other load of its last fresh reading, unknown = all.
    if params.grid_fail_current <= 0:
        for g in known:
            if has_grid[g] and grid_lost[g]:
                last = memory.grid_load.get(g, (limit[g],) * 3)
                non_evse[g] = [max(non_evse[g][p], last[p]) for p in range(3)]
    failed = {g: grid_lost[g] or (not has_grid[g] and cons_lost[g]) for g in known}
    fixed = {g: subtree_sum(fixed_own, g) for g in known}
    return Budgets(
        parent=parent,
        limit=limit,
        non_evse=non_evse,
        fixed=fixed,
        failed=failed,
        evse_cap=params.max_total_evse_current,
        fixed_total=fixed[0],
        fail_current=params.grid_fail_current,
        group_of=group_of,
    )


def grid_phases_of_rotation(rotation: int) -> list[int]:
    """Grid phase of the device's own L1, L2, L3 (from the single-phase grid masks)."""
    return [GRID_MASK[rotation][1 << local].bit_length() - 1 for local in range(3)]


def _chain(parent: dict[int, int], group: int) -> list[int]:
    out = [group]
    while group != 0:
        group = parent[group]
        out.append(group)
    return out
