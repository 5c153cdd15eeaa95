"""Properties of allocate() over random installations, checked against tests/allocation/reference.

Installations: up to a few hundred EVSEs, 1-, 2- and 3-phase, all rotations, nested groups,
devices in unknown groups, random meter readings (stale and never heard included), charging
rules, users, overrides, disabled devices under every disable_policy, and several calls in a
row so that pauses, learned phases and sessions carry over in memory.

The properties, for every call:

1. Limits. For every group g and grid phase p, let base = non-EVSE load + fixed load (EVSEs
   the allocation cannot steer: lost ones and disable_policy -1 ones, at their maximum), and
   budget = limit(g) - base, where limit(0) = max_total_current - reserve - active overdraft.
   If base <= limit(g): the balanced EVSEs below g together draw at most `budget` on p.
   Otherwise (the non-steerable load alone exceeds the limit) every balanced EVSE below g that
   uses p gets 0. The same holds for max_total_evse_current (base = fixed loads of all EVSEs)
   and, while a group's grid meter is lost, for grid_fail_current; with grid_fail_current 0
   such EVSEs get exactly their minimum or nothing.
2. Each EVSE gets 0 or a current in [min_charging_cur, its target], the target never exceeds
   its maximum (capped by what the EVSE reports and by the override), and a positive current
   is at least the battery_save_threshold.
3. Priority: an EVSE paused for lack of current would not fit — its minimum added to what all
   EVSEs of equal or higher priority get breaks a limit of (1) or max_imbalance. So no lower
   priority EVSE holds current it needs.
4. The same input gives the same output, whatever the order of the devices.
5. max_imbalance: the balanced EVSEs load the most loaded grid phase at most max_imbalance
   more than the least loaded one.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.core.allocation import (
    PAUSE_REASONS,
    R_COM_ERR,
    R_DISABLED,
    R_MIN_PAUSE,
    R_NO_CURRENT,
    R_UNLIMITED,
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
    allocate,
    override,
)
from service.core.models import (
    ChargingRule,
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    RfidEntry,
    User,
)
from tests.allocation.checker import assert_limits, checked_allocate, group_loads
from tests.allocation.reference import (
    Budgets,
    assumed_local,
    fresh,
    grid_phases,
    grid_phases_of_rotation,
    trusted,
)

STALE = 9.0
UNKNOWN_GROUP = 99

USERS = {
    "u1": User(id="u1", rfids=[RfidEntry(id="R1")]),
    "u2": User(
        id="u2",
        rfids=[RfidEntry(id="R2", ac_ovch=True)],
        charging_rules=[ChargingRule(mode=0, current=9000)],
    ),
}

rules = st.lists(
    st.builds(
        ChargingRule,
        days=st.integers(0, 127),
        mode=st.integers(0, 5),
        current=st.integers(-5000, 40_000),
        enabled=st.booleans(),
        udur=st.sampled_from([0, 0, 60, 600]),
        time=st.integers(0, 1439),
        dur=st.sampled_from([0, 60, 600, 1440, 10_080]),
        solar=st.sampled_from([0, 0, 3000]),
    ),
    min_size=1,
    max_size=2,
)

# Drawn as one choice each so that hundreds of EVSEs stay within hypothesis' data budget.
# (min_charging_cur, max_charging_cur, battery_save_threshold)
CURRENTS = [
    (6000, 16_000, 0),
    (6000, 16_000, 0),
    (6000, 32_000, 0),
    (6000, 10_000, 0),
    (8000, 16_000, 0),
    (16_000, 16_000, 0),
    (6000, 16_000, 12_000),
    (6000, 6000, 0),
    (0, 16_000, 0),
    (10_000, 6000, 0),
    (6000, 0, 0),
]
STATES = [
    EvseState(ts=0, state=s, current=c, rfid=r, max_charging_current=m, total_energy=e)
    for s in (1, 2, 2, 3, 3, 3, 3, 4, 5, 6)
    for c in ([0, 0, 0], [9000, 9000, 9000], [16_000, 0, 0], [0, 6000, 6000], [500, 0, 0])
    for r, m, e in (("", None, None), ("", None, 1000.0), ("R1", None, None), ("R2", 10_000, None))
] + [EvseState(ts=0, state=3, current=[6000, 6000, 6000], com_err=True)]


@st.composite
def evse_config(draw: st.DrawFn, dev_id: str, group_ids: Sequence[int]) -> EvseConfig:
    minimum, maximum, threshold = draw(st.sampled_from(CURRENTS))
    extra = draw(st.integers(0, 29))  # 0: rules, 1-2: users, 3: disabled, else plain
    return EvseConfig(
        dev_type="evse_ajax",
        dev_id=dev_id,
        group=draw(st.sampled_from(group_ids)),
        used_phases=draw(st.sampled_from([0, 0, 0, 1, 2, 4, 3, 7, 7])),
        phase_rotation=draw(st.integers(0, 5)),
        min_charging_cur=minimum,
        max_charging_cur=maximum,
        prio=draw(st.integers(0, 3)),
        pause_min_time=(0, 60, 300)[extra % 3],
        device_enabled=extra != 3,
        battery_save_threshold=threshold,
        charging_rules=draw(rules) if extra == 0 else [],
        users=(["u1"], ["u1", "u2"])[extra - 1] if extra in (1, 2) else [],
    )


@st.composite
def evse_state(draw: st.DrawFn) -> tuple[EvseState | None, float | None]:
    kind = draw(st.integers(0, 39))
    if kind == 0:
        return None, None  # never heard
    state = draw(st.sampled_from(STATES))
    return state, (STALE + 1 if kind == 1 else float(kind % 9))


@st.composite
def meter(draw: st.DrawFn, dev_id: str, group_ids: Sequence[int]) -> MeterInput:
    config = MeterConfig(
        dev_type="meter_ajax",
        dev_id=dev_id,
        role=draw(st.sampled_from([0, 1, 1, 2, 3, 3, 3, 4, 5])),
        group=draw(st.sampled_from(group_ids)),
        invert=draw(st.booleans()),
        phase_rotation=draw(st.integers(0, 5)),
        device_enabled=draw(st.integers(0, 9)) != 0,
    )
    kind = draw(st.sampled_from(["fresh"] * 8 + ["stale", "never"]))
    if kind == "never":
        return MeterInput(config)
    phase = st.sampled_from([-20_000, -5000, 0, 3000, 10_000, 25_000, 60_000])
    state = MeterState(ts=0, current=draw(st.lists(phase, min_size=3, max_size=3)))
    age = 1.0 if kind == "fresh" else STALE + 1
    return MeterInput(config, state, age)


def _follow(meter: MeterInput, evses: dict[str, EvseInput]) -> MeterInput:
    """A grid meter that reads its house load plus what the fresh EVSEs draw (as a real one
    would), so that overdraws happen."""
    if meter.state is None or meter.config.role != 3:
        return meter
    reading = list(meter.state.current)
    for ev in evses.values():
        if fresh(ev.state, ev.state_age_s, STALE) and ev.state is not None:
            for local, phase in enumerate(grid_phases_of_rotation(ev.config.phase_rotation)):
                reading[phase] += max(0, ev.state.current[local])
    sign = -1 if meter.config.invert else 1
    rot = grid_phases_of_rotation(meter.config.phase_rotation)
    local_reading = [sign * reading[rot[i]] for i in range(3)]
    return MeterInput(meter.config, MeterState(ts=0, current=local_reading), meter.state_age_s)


@st.composite
def scenarios(draw: st.DrawFn, max_evses: int) -> dict[str, Any]:
    n = draw(st.integers(1, max_evses))
    # Limits from ample to scarce for n EVSEs, so that some share, some pause.
    per_evse = st.sampled_from([0, 3000, 8000, 12_000, 20_000, 40_000])
    groups: list[GroupConfig] = []
    for gid in range(1, draw(st.integers(0, 5)) + 1):
        parent = draw(st.sampled_from([0] + [g.id for g in groups]))
        limit = min(2_000_000, draw(per_evse) * max(1, n // 3) + draw(st.integers(0, 9)) * 1000)
        groups.append(GroupConfig(id=gid, parent=parent, max_current=limit))
    group_ids = [0, 0] + [g.id for g in groups] + [UNKNOWN_GROUP]
    params = Params(
        max_total_current=min(2_000_000, draw(per_evse) * n + draw(st.integers(0, 20)) * 1000),
        reserve_current=draw(st.sampled_from([0, 2000, 10_000])),
        max_total_evse_current=min(2_000_000, draw(st.sampled_from([0, 0, 0, 6000, 12_000])) * n),
        max_imbalance=draw(st.sampled_from([0, 0, 4600, 10_000, 20_000])),
        disable_policy=draw(st.sampled_from([-1, 0, 1])),
        grid_fail_current=draw(st.sampled_from([0, 0, 12_000, 50_000])),
        lb_enabled=draw(st.integers(0, 9)) != 0,
        # The reference restates snapshot budgets; the hold of the other load over time is
        # checked on its own (test_held_load_*).
        load_hold_time=0,
    )
    configs = [draw(evse_config(f"E{i}", group_ids)) for i in range(1, n + 1)]
    meters = {
        f"M{i}": draw(meter(f"M{i}", group_ids)) for i in range(1, draw(st.integers(0, 4)) + 1)
    }
    following = {d for d in meters if draw(st.booleans())}
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        states = [draw(evse_state()) for _ in configs]
        events = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([c.dev_id for c in configs]),
                    st.sampled_from(["", "C", "c", "E", "e", "U", "u"]),
                    st.sampled_from([None, None, 5000, 12_000, -1]),
                ),
                max_size=2,
            )
        )
        steps.append((draw(st.sampled_from([1, 3, 60, 301])), states, events))
    return {"params": params, "groups": groups, "configs": configs, "meters": meters,
            "following": following, "steps": steps,
            "seed": draw(st.integers(0, 2**32))}  # fmt: skip


def _run(scenario: dict[str, Any]) -> None:
    memory = Memory()
    cache = AllocationCache()
    now = 1_700_000_000.0
    # Car limits the control law learned, coming and going (wishes.make_wish caps at them).
    limits = random.Random(scenario["seed"])
    for delta, states, events in scenario["steps"]:
        now += delta
        for dev_id, flags, mamps in events:
            memory = override(memory, dev_id, flags, mamps)
        evses = {
            c.dev_id: EvseInput(
                c, state, age, car_limit=limits.choice([0, 0, 0, 4000, 9000, 13_000])
            )
            for c, (state, age) in zip(scenario["configs"], states, strict=True)
        }
        meters = {
            d: _follow(m, evses) if d in scenario["following"] else m
            for d, m in scenario["meters"].items()
        }
        inp = AllocationInput(
            params=scenario["params"],
            groups=scenario["groups"],
            evses=evses,
            meters=meters,
            users=USERS,
            now=now,
            stale_after_s=STALE,
        )
        result = checked_allocate(inp, memory, cache)
        _check(inp, memory, result, scenario["seed"])
        _check_caches(inp, result, scenario["seed"], cache)
        memory = result.memory


def _check_caches(
    inp: AllocationInput, result: Allocation, seed: int, cache: AllocationCache
) -> None:
    """The per-object views, verdicts and settled results kept in the cache are a cache
    only: the next call answers as it would without them, with the same state objects and
    with new ones (most only with moved measurements, as in operation)."""
    rng = random.Random(seed)
    moved: dict[str, EvseInput] = {}
    for dev_id, ev in inp.evses.items():
        state = ev.state
        if state is not None and rng.random() < 0.7:
            update: dict[str, Any] = {
                "current": [max(0, c + rng.randint(-800, 800)) for c in state.current],
                "ts": state.ts + 1,
            }
            if rng.random() < 0.1:
                update["state"] = rng.randint(1, 6)
            if rng.random() < 0.1:
                update["max_charging_current"] = rng.choice([None, 0, 6_000, 20_000])
            state = state.model_copy(update=update)
        moved[dev_id] = ev._replace(state=state)
    for later in (
        dataclasses.replace(inp, now=inp.now + 1),
        dataclasses.replace(inp, now=inp.now + 1, evses=moved),
    ):
        checked_allocate(later, result.memory, cache)


def _check(inp: AllocationInput, memory: Memory, result: Allocation, seed: int) -> None:
    # (4) determinism, also when the devices come in another order.
    assert allocate(inp, memory) == result
    shuffled = list(inp.evses.items())
    random.Random(seed).shuffle(shuffled)
    other = allocate(
        AllocationInput(
            params=inp.params,
            groups=inp.groups,
            evses=dict(shuffled),
            meters=inp.meters,
            users=inp.users,
            now=inp.now,
            stale_after_s=inp.stale_after_s,
        ),
        memory,
    )
    assert other.evses == result.evses
    assert list(result.evses) == list(inp.evses)

    params = inp.params
    # (1) limits, (5) balance, and the active overdraft: at least what the main grid meter
    # shows above the limit now (once it has outlasted the grace time: cars following a
    # decrease), and never more than that or what was already active.
    ref = assert_limits(inp, memory, result)

    balanced: dict[str, tuple[int, list[int]]] = {}  # dev_id → current, grid phases
    for dev_id, res in result.evses.items():
        ev = inp.evses[dev_id]
        cfg = ev.config
        # Every reason matches the facts it claims.
        assert res.device_enabled == cfg.device_enabled
        off = not cfg.device_enabled and params.disable_policy == 0
        is_fresh = trusted(ev, inp.stale_after_s)
        assert (res.reason == R_DISABLED) == off, (dev_id, res)
        assert (res.reason == R_COM_ERR) == (not off and not is_fresh), (dev_id, res)
        assert (dev_id in result.com_err) == (res.reason == R_COM_ERR)
        if res.reason == R_UNLIMITED:
            assert not cfg.device_enabled and params.disable_policy == -1
        if res.reason not in (R_DISABLED, R_COM_ERR) and ev.state is not None:
            vehicle = ev.state.state in (2, 3, 4)
            steered = cfg.device_enabled or params.disable_policy == 1
            assert (res.reason == "no_vehicle") == (ev.state.state == 1 and steered)
            assert (res.reason == "error") == (ev.state.state == 5 and steered)
            if res.reason not in ("no_vehicle", "error", R_UNLIMITED):
                assert vehicle, (dev_id, res)
        minimum = max(cfg.min_charging_cur, cfg.battery_save_threshold, 1)
        # (2) 0 or within [minimum, target]; target within the maximum and the caps.
        if res.reason in (R_UNLIMITED, R_COM_ERR, R_DISABLED):
            continue
        assert res.current == 0 or minimum <= res.current <= res.target, (dev_id, res)
        cap = cfg.max_charging_cur if isinstance(cfg.max_charging_cur, int) else 80_000
        if ev.state is not None and ev.state.max_charging_current:
            cap = min(cap, ev.state.max_charging_current)
        assert res.target <= max(cap, 0), (dev_id, res)
        assert res.target <= res.ov_cur, (dev_id, res)
        if res.current:
            assert ev.state is not None and ev.state.state in (2, 3, 4), (dev_id, res)
            assert res.phases == assumed_local(inp, memory, dev_id), (dev_id, res)
            phases = grid_phases(cfg.phase_rotation, res.phases)
            assert res.grid_phases == sum(1 << p for p in phases)
            balanced[dev_id] = (res.current, phases)
        if params.lb_enabled:
            assert res.charging_current == res.current
            assert res.paused == (res.reason in PAUSE_REASONS)
        if res.reason == R_MIN_PAUSE:
            before = memory.evse(dev_id).paused_since
            assert before is not None and inp.now - before < cfg.pause_min_time

    phase_load = [sum(c for c, ph in balanced.values() if p in ph) for p in range(3)]

    # (3) priority.
    reasons = {res.reason for res in result.evses.values()}
    for reason in sorted(reasons):
        event(f"reason {reason}")
    if any(
        ref.non_evse[g][p] + ref.fixed[g][p] > ref.limit[g] for g in ref.limit for p in range(3)
    ):
        event("a group's base load exceeds its limit")
    if result.overdraft_active:
        event("overdraft active")
    if params.max_imbalance and max(phase_load) - min(phase_load) > params.max_imbalance // 2:
        event("balance limit more than half used")
    for dev_id, res in result.evses.items():
        if res.reason != R_NO_CURRENT:
            continue
        if any(inp.evses[d].config.prio < inp.evses[dev_id].config.prio for d in balanced):
            event("paused while a lower priority charges")
        cfg = inp.evses[dev_id].config
        minimum = max(cfg.min_charging_cur, cfg.battery_save_threshold, 1)
        if not memory.evse(dev_id).charging:
            # Hysteresis: an EVSE that does not charge is admitted with minimum + margin.
            minimum = min(res.target, minimum + params.resume_margin)
        phases = grid_phases(cfg.phase_rotation, res.phases)
        peers = {
            d: v
            for d, v in balanced.items()
            if inp.evses[d].config.prio >= cfg.prio and d != dev_id
        }
        peers[dev_id] = (minimum, phases)
        assert _violates(inp, ref, peers), (
            f"{dev_id} (prio {cfg.prio}) paused although its minimum fits beside all EVSEs "
            "of equal and higher priority"
        )


def _violates(
    inp: AllocationInput, ref: Budgets, allocation: dict[str, tuple[int, list[int]]]
) -> bool:
    loads = group_loads(ref, allocation)
    for group, per_phase in loads.items():
        for p in range(3):
            base = ref.non_evse[group][p] + ref.fixed[group][p]
            if per_phase[p] and per_phase[p] + base > ref.limit[group]:
                return True
    if ref.evse_cap > 0:
        for p in range(3):
            if loads[0][p] and loads[0][p] + ref.fixed_total[p] > ref.evse_cap:
                return True
    for group, failed in ref.failed.items():
        if not failed:
            continue
        below = [d for d in allocation if ref.subtree(group, ref.group_of[d])]
        if ref.fail_current > 0:
            for p in range(3):
                drawn = sum(allocation[d][0] for d in below if p in allocation[d][1])
                if drawn and drawn + ref.fixed[group][p] > ref.fail_current:
                    return True
    phase_load = [sum(c for c, ph in allocation.values() if p in ph) for p in range(3)]
    return 0 < inp.params.max_imbalance < max(phase_load) - min(phase_load)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_evses=12))
def test_small_installations(scenario: dict[str, Any]) -> None:
    _run(scenario)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.data_too_large])  # fmt: skip
@given(scenarios(max_evses=300))
def test_large_installations(scenario: dict[str, Any]) -> None:
    _run(scenario)
