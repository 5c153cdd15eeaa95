"""Every allocation run in the tests, checked twice over.

`checked_allocate(inp, memory, cache)` runs `allocate()` as the service does (with the cache
it carries from run to run) and again plainly (no cache: everything made anew) on the same
input and memory. It asserts that both give the same result and the same memory, and that
the limits hold: every group's budget per phase, `max_total_evse_current`,
`grid_fail_current` and `max_imbalance`, restated independently in tests/allocation/reference.
It returns the cached run's allocation, so a test goes on as the service would.
"""

from __future__ import annotations

from service.core.allocation import (
    R_COM_ERR,
    R_DISABLED,
    R_UNLIMITED,
    Allocation,
    AllocationCache,
    AllocationInput,
    Memory,
    allocate,
    overdraft_grace_s,
)
from service.core.allocation.budgets import LATE_GRACE
from tests.allocation.reference import (
    Budgets,
    budgets,
    grid_fresh,
    grid_phases_of_rotation,
)

# dev_id → (allocated current, grid phases) of the EVSEs the allocation balances.
Balanced = dict[str, tuple[int, list[int]]]

_NOT_BALANCED = (R_UNLIMITED, R_COM_ERR, R_DISABLED)


def checked_allocate(inp: AllocationInput, memory: Memory, cache: AllocationCache) -> Allocation:
    cached = allocate(inp, memory, cache)
    plain = allocate(inp, memory)
    for dev_id, result in plain.evses.items():
        assert cached.evses.get(dev_id) == result, (dev_id, cached.evses.get(dev_id), result)
    assert list(cached.evses.items()) == list(plain.evses.items())
    assert cached.memory == plain.memory
    assert cached == plain
    assert_limits(inp, memory, plain)
    return cached


def balanced(result: Allocation) -> Balanced:
    return {
        dev_id: (res.current, [p for p in range(3) if res.grid_phases >> p & 1])
        for dev_id, res in result.evses.items()
        if res.current > 0 and res.reason not in _NOT_BALANCED
    }


def assert_limits(inp: AllocationInput, memory: Memory, result: Allocation) -> Budgets:
    """The active overdraft is what the main grid meter shows above the limit (once that has
    outlasted the grace time) or what was already held; no group, cap or phase balance is
    broken. Returns the reference budgets."""
    overdraw, age = main_overdraw(inp)
    # An excess counts once it has outlasted the grace time (cars following a decrease) since
    # the run that first saw it, judged by when the readings were taken (the reading's age,
    # bounded).
    taken = inp.now - age
    since = memory.over_since if memory.over_since is not None else inp.now
    if taken - since < overdraft_grace_s(inp.params):
        overdraw = 0
    assert result.overdraft_active >= overdraw
    assert result.overdraft_active <= max(overdraw, memory.overdraft)
    ref = budgets(inp, memory, result.overdraft_active)
    given = balanced(result)
    loads = group_loads(ref, given)
    for group, per_phase in loads.items():
        for p in range(3):
            base = ref.non_evse[group][p] + ref.fixed[group][p]
            if base <= ref.limit[group]:
                assert per_phase[p] + base <= ref.limit[group], (group, p, per_phase, base)
            else:
                assert per_phase[p] == 0, (group, p, "over-limit base, yet EVSEs charge")
    _assert_caps(inp, ref, loads[0], given)
    phase_load = [sum(c for c, ph in given.values() if p in ph) for p in range(3)]
    if inp.params.max_imbalance > 0:
        assert max(phase_load) - min(phase_load) <= inp.params.max_imbalance, phase_load
    return ref


def _assert_caps(inp: AllocationInput, ref: Budgets, total: list[int], given: Balanced) -> None:
    """max_total_evse_current; grid_fail_current below a lost grid meter (or, when that is
    0, exactly the minimum for every EVSE that charges there)."""
    if ref.evse_cap > 0:
        for p in range(3):
            if ref.fixed_total[p] <= ref.evse_cap:
                assert total[p] + ref.fixed_total[p] <= ref.evse_cap
            else:
                assert total[p] == 0
    for group, failed in ref.failed.items():
        if not failed:
            continue
        below = [d for d in given if ref.subtree(group, ref.group_of[d])]
        if ref.fail_current > 0:
            for p in range(3):
                drawn = sum(given[d][0] for d in below if p in given[d][1])
                if ref.fixed[group][p] <= ref.fail_current:
                    assert drawn + ref.fixed[group][p] <= ref.fail_current
                else:
                    assert drawn == 0
        else:
            for d in below:
                cfg = inp.evses[d].config
                assert given[d][0] == max(cfg.min_charging_cur, cfg.battery_save_threshold, 1)


def group_loads(ref: Budgets, given: Balanced) -> dict[int, list[int]]:
    loads = {g: [0, 0, 0] for g in ref.limit}
    for dev_id, (current, phases) in given.items():
        for g in ref.chain(ref.group_of[dev_id]):
            for p in phases:
                loads[g][p] += current
    return loads


def main_overdraw(inp: AllocationInput) -> tuple[int, float]:
    """How far the main grid meter reads above max_total_current (0 without a fresh one),
    and how old its reading is (from its ts, at most LATE_GRACE stale ages)."""
    readings = [0, 0, 0]
    found = False
    age = 0.0
    for m in inp.meters.values():
        cfg = m.config
        group = cfg.group if cfg.group in {g.id for g in inp.groups} else 0
        if not cfg.device_enabled or cfg.role != 3 or group != 0:
            continue
        if (
            not grid_fresh(m.state, m.state_age_s, inp.stale_after_s)
            or m.state is None
            or m.state_age_s is None
        ):
            return 0, 0.0
        found = True
        age = max(age, min(max(0.0, inp.now - m.state.ts), LATE_GRACE * inp.stale_after_s))
        sign = -1 if cfg.invert else 1
        for local, phase in enumerate(grid_phases_of_rotation(cfg.phase_rotation)):
            readings[phase] += sign * m.state.current[local]
    if not found:
        return 0, 0.0
    return max(0, max(readings) - inp.params.max_total_current), age
