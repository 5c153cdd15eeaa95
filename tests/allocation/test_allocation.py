"""allocate(), enter_rfid() and override(): behaviour the scenarios do not pin down."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from service.core.allocation import (
    OVERDRAFT_HOLD_S,
    PREAUTH_S,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
    enter_rfid,
    overdraft_grace_s,
    override,
    stale_after_s,
)
from service.core.allocation.budgets import LATE_GRACE
from service.core.models import (
    EvseConfig,
    EvseState,
    MeterConfig,
    MeterState,
    Params,
    RfidEntry,
    User,
)
from tests.allocation.checker import checked_allocate

NOW = 1_700_000_000.0
USERS = {"u1": User(id="u1", rfids=[RfidEntry(id="R1")])}


def evse(dev_id: str, state: int | None = 2, age: float | None = 1.0, **config: Any) -> EvseInput:
    cfg = EvseConfig(dev_type="evse_ajax", dev_id=dev_id, **config)
    if state is None:
        return EvseInput(cfg)
    return EvseInput(cfg, EvseState(ts=NOW, state=state), age)


def run(
    evses: dict[str, EvseInput],
    memory: Memory | None = None,
    now: float = NOW,
    meters: dict[str, MeterInput] | None = None,
    **params: Any,
) -> Any:
    inp = AllocationInput(
        params=Params(**{"max_total_current": 32_000, **params}),
        groups=[],
        evses=evses,
        meters=meters or {},
        users=USERS,
        now=now,
        stale_after_s=9.0,
    )
    return checked_allocate(inp, memory or Memory(), _Runs.cache)


class _Runs:
    cache = AllocationCache()


@pytest.fixture(autouse=True)
def _new_cache() -> None:
    """Each test carries a cache of its own from run to run, as the service does."""
    _Runs.cache = AllocationCache()


def test_the_given_memory_is_never_changed() -> None:
    first = run({"E1": evse("E1")})
    frozen = dict(first.memory.evses)
    second = run({"E1": evse("E1", state=1)}, first.memory, NOW + 3)
    assert dict(first.memory.evses) == frozen
    assert second.memory.evses["E1"] != first.memory.evses["E1"]


def test_memory_is_shared_when_nothing_changed() -> None:
    first = run({"E1": evse("E1"), "E2": evse("E2", state=1)})
    second = run({"E1": evse("E1"), "E2": evse("E2", state=1)}, first.memory, NOW + 3)
    assert second.memory.evses is first.memory.evses


def test_removed_evses_are_forgotten() -> None:
    first = run({"E1": evse("E1"), "E2": evse("E2")})
    second = run({"E1": evse("E1")}, first.memory, NOW + 3)
    assert set(second.memory.evses) == {"E1"}


def test_preauthorisation_lasts_a_minute() -> None:
    evses = {"E1": evse("E1", state=1, users=["u1"])}
    memory = run(evses).memory
    memory, result = enter_rfid(memory, "R1", "E1", USERS, evses, NOW)
    assert result.accepted
    # The car arrives in time: authorised.
    arrived = {"E1": evse("E1", state=2, users=["u1"])}
    assert run(arrived, memory, NOW + PREAUTH_S - 1).evses["E1"].reason == "ok"
    # Nobody comes within the minute: the authorisation lapses.
    later = run(evses, memory, NOW + PREAUTH_S + 1).memory
    assert run(arrived, later, NOW + PREAUTH_S + 4).evses["E1"].reason == "auth"


def test_enter_rfid_for_an_unknown_evse() -> None:
    memory, result = enter_rfid(Memory(), "R1", "E9", USERS, {}, NOW)
    assert (result.accepted, result.action) == (False, "unknown_evse")
    assert memory == Memory()


def test_enter_rfid_skips_stale_evses() -> None:
    evses = {"E1": evse("E1", age=100, users=["u1"])}
    _, result = enter_rfid(Memory(), "R1", None, USERS, evses, NOW, stale_after_s=9)
    assert result.action == "no_evse"


def test_override_before_the_vehicle_holds_for_its_session() -> None:
    memory = run({"E1": evse("E1", state=1)}).memory
    memory = override(memory, "E1", "", 7000)
    allocation = run({"E1": evse("E1")}, memory, NOW + 3)
    assert allocation.evses["E1"].charging_current == 7000
    gone = run({"E1": evse("E1", state=1)}, allocation.memory, NOW + 6)
    back = run({"E1": evse("E1")}, gone.memory, NOW + 9)
    assert back.evses["E1"].charging_current == 16_000


def test_bad_override_flags_raise() -> None:
    with pytest.raises(ValueError, match="unknown override flags"):
        override(Memory(), "E1", "Z")


def test_a_lost_evse_keeps_its_session() -> None:
    evses = {"E1": evse("E1", users=["u1"])}
    memory, _ = enter_rfid(run(evses).memory, "R1", "E1", USERS, evses, NOW)
    lost = run({"E1": evse("E1", state=None, users=["u1"])}, memory, NOW + 3)
    assert lost.evses["E1"].com_err and lost.evses["E1"].reason == "com_err"
    back = run(evses, lost.memory, NOW + 6)
    assert back.evses["E1"].reason == "ok" and back.evses["E1"].user_id == "u1"


def test_a_com_err_flag_in_the_state_counts_as_lost() -> None:
    cfg = EvseConfig(dev_type="evse_ajax", dev_id="E1", used_phases=7)
    state = EvseState(ts=NOW, state=3, com_err=True, last_error="timeout")
    allocation = run({"E1": EvseInput(cfg, state, 1.0), "E2": evse("E2", used_phases=7)})
    assert "E1" in allocation.com_err
    assert allocation.evses["E2"].charging_current == 16_000  # 32 A minus E1's 16 A


def test_reported_maximum_caps_the_configured_one() -> None:
    cfg = EvseConfig(dev_type="evse_ajax", dev_id="E1", max_charging_cur=32_000)
    state = EvseState(ts=NOW, state=2, max_charging_current=13_000)
    assert run({"E1": EvseInput(cfg, state, 1.0)}).evses["E1"].charging_current == 13_000


GRID = MeterConfig(dev_type="meter_ajax", dev_id="M1", role=3)


def grid_at(now: float, l1_ma: int, lag: float = 0.0) -> dict[str, MeterInput]:
    """The grid meter's reading as the allocation at `now` sees it: taken `lag` s before it
    arrived, arrived 1 s ago."""
    return {"M1": MeterInput(GRID, MeterState(ts=now - 1.0 - lag, current=[l1_ma, 0, 0]), 1.0)}


def test_overdraft_hold_ends() -> None:
    grace = overdraft_grace_s(Params())
    seen = run({}, meters=grid_at(NOW, 35_000))  # the first reading over, seen at NOW
    # Within the grace time the excess may be cars still following a decrease. grid_at's
    # readings were taken 1 s before a run sees them.
    assert (seen.overdraft_active, seen.overdraft_cur) == (0, 0)
    just = run({}, seen.memory, NOW + grace + 0.9, grid_at(NOW + grace + 0.9, 35_000))
    assert just.overdraft_active == 0
    first = run({}, just.memory, NOW + grace + 1, grid_at(NOW + grace + 1, 35_000))
    assert (first.overdraft_active, first.overdraft_cur) == (3000, 3000)
    start = NOW + grace + 1
    t = start + OVERDRAFT_HOLD_S - 1
    during = run({}, first.memory, t, grid_at(t, 0), overdraft_cur=3000)
    assert during.overdraft_active == 3000
    t = start + OVERDRAFT_HOLD_S
    after = run({}, during.memory, t, grid_at(t, 0), overdraft_cur=3000)
    assert (after.overdraft_active, after.overdraft_cur) == (0, 3000)


def test_an_excess_that_ends_within_the_grace_time_is_no_overdraft() -> None:
    grace = overdraft_grace_s(Params())
    a = run({}, meters=grid_at(NOW, 35_000))
    b = run({}, a.memory, NOW + grace / 2, grid_at(NOW + grace / 2, 30_000))
    t = NOW + grace * 0.9
    c = run({}, b.memory, t, grid_at(t, 35_000))  # a new excess: its own grace time
    t = NOW + grace * 1.5
    d = run({}, c.memory, t, grid_at(t, 35_000))
    assert [x.overdraft_active for x in (a, b, c, d)] == [0, 0, 0, 0]
    t = NOW + grace * 1.9 + 1.0  # taken grace after c saw the new excess
    e = run({}, d.memory, t, grid_at(t, 35_000))
    assert e.overdraft_active == 3000


def test_an_excess_is_judged_by_when_the_reading_was_taken() -> None:
    """A reading that arrives late shows the cars before they followed: each reading is
    judged by when it was taken, not when it arrived."""
    grace = overdraft_grace_s(Params())
    a = run({}, meters=grid_at(NOW, 35_000))
    t = NOW + grace
    # Taken 2 s before the grace time was over, arriving now: still within it.
    late = run({}, a.memory, t, grid_at(t, 35_000, lag=2.0))
    assert late.overdraft_active == 0
    t = NOW + grace + 3.0  # taken grace after the first reading over was seen
    on_time = run({}, late.memory, t, grid_at(t, 35_000, lag=2.0))
    assert on_time.overdraft_active == 3000


def test_a_reading_seen_again_by_later_runs_is_judged_by_when_it_was_taken() -> None:
    """The cycle's runs see the same reading again until a newer one comes. Taken before the
    cars could have followed, it is no overdraft however long it has waited (seen on a
    simulated plant: a reading taken 6.6 s after the first one over the limit, seen again
    2 s after it arrived, took 6.6 A off the main limit and paused a car whose minimum
    fitted, although the next reading was within the fuse)."""
    grace = overdraft_grace_s(Params())
    a = run({}, meters=grid_at(NOW, 35_000))  # the first reading over, seen at NOW
    taken = NOW + grace - 0.4  # before the grace time is over
    t = NOW + grace + 2.0  # it arrived 0.1 s after it was taken, and is seen again now
    again = {"M1": MeterInput(GRID, MeterState(ts=taken, current=[35_000, 0, 0]), t - taken - 0.1)}
    assert run({}, a.memory, t, again).overdraft_active == 0
    # One taken at the end of the grace time is an overdraft.
    t = NOW + grace + 2.5
    on_time = {"M1": MeterInput(GRID, MeterState(ts=NOW + grace, current=[35_000, 0, 0]), 0.5)}
    assert run({}, a.memory, t, on_time).overdraft_active == 3000


def test_the_overdraft_grace_counts_from_when_the_core_saw_the_first_reading_over() -> None:
    """A meter that reports 2.5 s late: the core can cut the cars only once the first
    reading over the limit has come, and the cars then have follow_time. A reading taken
    within the grace of that run, though later than the grace after the first reading was
    taken, is the cars following, not an overdraft (seen on a simulated plant, out-of-order
    147: cars that followed within 5.5 s of their cut cost a 4 A overdraft for 5 minutes)."""
    grace = overdraft_grace_s(Params())
    late = {"M1": MeterInput(GRID, MeterState(ts=NOW - 2.5, current=[35_000, 0, 0]), 2.5)}
    a = run({}, meters=late)  # taken at NOW - 2.5, seen at NOW
    taken = NOW + grace - 1.0  # grace + 1.5 s after the first was taken, within grace of NOW
    t = taken + 2.5
    following = {"M1": MeterInput(GRID, MeterState(ts=taken, current=[35_000, 0, 0]), 2.5)}
    assert run({}, a.memory, t, following).overdraft_active == 0


def test_a_late_grid_reading_is_used_and_a_silent_meter_is_lost() -> None:
    """A grid reading older than the stale age but within LATE_GRACE of it still holds the
    load (nobody is raised meanwhile); an older one is lost and the EVSEs fail safe."""
    stale = 9.0  # run()'s stale_after_s
    e1 = {"E1": evse("E1", state=3, used_phases=7)}

    def reading(age: float) -> dict[str, MeterInput]:
        return {"M1": MeterInput(GRID, MeterState(ts=NOW - age, current=[20_000, 0, 0]), age)}

    fresh_run = run(e1, meters=reading(1.0))
    late = run(e1, meters=reading(stale * 1.5))
    lost = run(e1, meters=reading(stale * LATE_GRACE + 0.5))
    assert not fresh_run.grid_late and not fresh_run.grid_meter_lost
    assert late.grid_late and not late.grid_meter_lost
    assert "M1" not in late.com_err
    assert late.evses["E1"].charging_current == fresh_run.evses["E1"].charging_current == 12_000
    assert lost.grid_meter_lost and "M1" in lost.com_err
    assert lost.evses["E1"].charging_current <= 6_000  # its minimum at most


def test_disabled_meters_count_for_nothing() -> None:
    meters = {
        "M1": MeterInput(
            MeterConfig(dev_type="meter_ajax", dev_id="M1", role=1, device_enabled=False),
            MeterState(ts=NOW, current=[30_000, 30_000, 30_000]),
            1.0,
        )
    }
    allocation = run({"E1": evse("E1", used_phases=7)}, meters=meters)
    assert allocation.evses["E1"].charging_current == 16_000
    assert "M1" not in allocation.com_err


def test_observation_gives_lost_and_idle_evses_their_maximum_too() -> None:
    allocation = run(
        {"E1": evse("E1", state=None), "E2": evse("E2", state=5)}, max_total_current=0,
        lb_enabled=False,
    )  # fmt: skip
    for dev_id in ("E1", "E2"):
        assert allocation.evses[dev_id].charging_current == 16_000
        assert allocation.evses[dev_id].current == 0


def test_unlimited_without_a_vehicle_is_not_counted() -> None:
    allocation = run(
        {"E1": evse("E1", state=1, device_enabled=False), "E2": evse("E2", used_phases=7)},
        disable_policy=-1,
        max_total_current=16_000,
    )
    assert allocation.evses["E1"].charging_current == 16_000
    assert allocation.evses["E1"].current == 0
    assert allocation.evses["E2"].charging_current == 16_000


def test_min_pause_counts_and_ends() -> None:
    evses = {"E1": evse("E1", used_phases=7, pause_min_time=60)}
    charging = run(evses, max_total_current=32_000)
    assert charging.evses["E1"].charging_current == 16_000
    paused = run(evses, charging.memory, NOW, max_total_current=5000)
    assert paused.evses["E1"].reason == "no_current"
    held = run(evses, paused.memory, NOW + 59, max_total_current=32_000)
    assert (held.evses["E1"].reason, held.evses["E1"].pause_time) == ("min_pause", 59)
    free = run(evses, held.memory, NOW + 60, max_total_current=32_000)
    assert (free.evses["E1"].charging_current, free.evses["E1"].pause_time) == (16_000, 0)


def test_a_vehicle_that_never_charged_is_not_held_by_min_pause() -> None:
    # pause_min_time protects a car from stop-and-go; one still waiting for its first current
    # (at start-up, before the meters answered) starts as soon as there is room.
    evses = {"E1": evse("E1", used_phases=7, pause_min_time=60)}
    waiting = run(evses, max_total_current=5000)
    assert (waiting.evses["E1"].reason, waiting.evses["E1"].paused) == ("no_current", True)
    started = run(evses, waiting.memory, NOW + 5, max_total_current=32_000)
    assert started.evses["E1"].charging_current == 16_000


def test_avail_and_cons_power() -> None:
    cfg = EvseConfig(dev_type="evse_ajax", dev_id="E1")
    state = EvseState(ts=NOW, state=3, current=[10_000, 10_000, 10_000], voltage=[230, 230, 230])
    allocation = run({"E1": EvseInput(cfg, state, 1.0)}, max_total_evse_current=20_000)
    assert allocation.cons_evse_power == 6900
    assert allocation.avail_evse_power == 20_000 * 3 * 230 // 1000


def test_invalid_group_of_an_evse_is_reported() -> None:
    allocation = run({"E1": evse("E1", group=77)})
    assert any("E1: group 77 does not exist" in note for note in allocation.notes)
    assert allocation.evses["E1"].charging_current == 16_000


@pytest.mark.parametrize("state", [1, 5])
def test_disabled_minimum_policy_without_a_vehicle_gets_nothing(state: int) -> None:
    allocation = run({"E1": evse("E1", state=state, device_enabled=False)}, disable_policy=1)
    result = allocation.evses["E1"]
    assert (result.charging_current, result.device_enabled) == (0, False)
    assert result.reason == ("no_vehicle" if state == 1 else "error")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_power_falls_back_to_the_currents(bad: float) -> None:
    cfg = EvseConfig(dev_type="evse_ajax", dev_id="E1")
    # EvseState refuses non-finite numbers; allocate() still must not trust any it is given.
    state = EvseState(ts=NOW, state=3, current=[10_000, 0, 0]).model_copy(
        update={"power_w": bad}
    )
    first = run({"E1": EvseInput(cfg, state, 1.0)})
    assert first.cons_evse_power == 2300
    later = run({"E1": EvseInput(cfg, state, 1.0)}, first.memory, NOW + 3)
    assert later.energy_wh["E1"] == pytest.approx(2300 * 3 / 3600)
    assert later.evses["E1"].cur_charging_power == 2300


def test_stale_after() -> None:
    assert stale_after_s(Params()) == 9.0  # 3 cycles of 3000 ms
    assert stale_after_s(Params(stale_time=20_000)) == 20.0


def test_a_maximum_given_as_an_expression_follows_the_variables_from_call_to_call() -> None:
    # The same objects in every call (as in the service) but for the params: only the
    # params' cm_vars move.
    inp = AllocationInput(
        params=Params(max_total_current=32_000, cm_vars={"limit": 10}),
        groups=[],
        evses={"E1": evse("E1", max_charging_cur="limit * 1000", used_phases=7)},
        meters={},
        users=USERS,
        now=NOW,
        stale_after_s=9.0,
    )
    memory = Memory()
    for k in range(3):
        result = checked_allocate(dataclasses.replace(inp, now=NOW + 3 * k), memory, _Runs.cache)
        assert result.evses["E1"].charging_current == 10_000
        memory = result.memory
    params = inp.params.model_copy(update={"cm_vars": {"limit": 12}})
    changed = checked_allocate(
        dataclasses.replace(inp, params=params, now=NOW + 9), memory, _Runs.cache
    )
    assert changed.evses["E1"].charging_current == 12_000
