"""The control law between the allocation and the commands (service/core/control_law.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.allocation import (
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
    allocate,
)
from service.core.control_law import (
    CAR_LIMIT_MARGIN_MA,
    CAR_LIMIT_MIN_GAIN_MA,
    R_SETTLING,
    ControlMemory,
    ControlSettings,
    EvseControl,
    all_paused,
    govern,
)
from service.core.models import EvseConfig, EvseState, MeterConfig, MeterState, Params
from tests.allocation.checker import checked_allocate

T0 = 1_700_000_000.0
SETTINGS = ControlSettings()


def site(
    now: float,
    grid: list[int],
    evses: dict[str, tuple[int, list[int]]],
    *,
    max_total: int = 32_000,
    phases: dict[str, int] | None = None,
    pause_min_time: int = 300,
) -> AllocationInput:
    """Wallboxes (state, currents) behind one grid meter, all reported a second ago."""
    phases = phases or {}
    return AllocationInput(
        params=Params(max_total_current=max_total),
        groups=[],
        evses={
            d: EvseInput(
                EvseConfig(
                    dev_type="evse_ajax",
                    dev_id=d,
                    used_phases=phases.get(d, 7),
                    pause_min_time=pause_min_time,
                ),
                EvseState(ts=now - 1, state=s, current=c),
                1.0,
            )
            for d, (s, c) in evses.items()
        },
        meters={
            "M1": MeterInput(
                MeterConfig(dev_type="meter_ajax", dev_id="M1", role=3),
                MeterState(ts=now - 0.5, current=grid),
                0.5,
            )
        },
        users={},
        now=now,
        stale_after_s=9.0,
    )


class Loop:
    """allocate + govern, carrying both memories, as the control loop runs them."""

    def __init__(self, settings: ControlSettings = SETTINGS) -> None:
        self.memory = Memory()
        self.control = ControlMemory()
        self.cache = AllocationCache()
        self.settings = settings

    def run(self, inp: AllocationInput) -> Allocation:
        alloc = checked_allocate(inp, self.memory, self.cache)
        result, self.control = govern(alloc, inp, self.control, self.settings)
        self.memory = result.memory
        return result

    def current(self, inp: AllocationInput, dev_id: str) -> int:
        r = self.run(inp).evses[dev_id]
        return r.charging_current if r.charging_enabled and not r.paused else 0


def test_a_start_waits_for_the_settle_time_then_steps_up() -> None:
    loop = Loop()
    seen: list[int] = []
    drawn = 0
    for dt in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9):
        # The car follows each command within the second (its report is taken after it).
        inp = site(T0 + dt, [drawn] * 3, {"E1": (3 if drawn else 2, [drawn] * 3)})
        drawn = loop.current(inp, "E1")
        seen.append(drawn)
    # Offered 16 A from the first run: held 3 s, then the minimum step (6 A), 3 s later
    # +6 A, and 3 s after that the rest.
    assert seen == [0, 0, 0, 6000, 6000, 6000, 12_000, 12_000, 12_000, 16_000]
    held = Loop().run(site(T0, [0, 0, 0], {"E1": (2, [0, 0, 0])})).evses["E1"]
    assert held.paused and held.reason == R_SETTLING and held.current == 16_000


def test_a_raise_waits_until_the_car_took_up_the_last_one() -> None:
    loop = Loop()
    for dt in range(0, 4):
        loop.run(site(T0 + dt, [0, 0, 0], {"E1": (2, [0, 0, 0])}))
    assert loop.control.evse("E1").command == 6000
    # The car still draws nothing 4 s after its start: no further step.
    for dt in (4, 5, 6, 7, 8):
        assert loop.current(site(T0 + dt, [0, 0, 0], {"E1": (2, [0, 0, 0])}), "E1") == 6000
    # After follow_time without taking it up, its car limits itself: no more steps (they
    # would only be commands) ...
    assert loop.current(site(T0 + 9.5, [0, 0, 0], {"E1": (2, [0, 0, 0])}), "E1") == 6000
    assert loop.current(site(T0 + 20, [0, 0, 0], {"E1": (2, [0, 0, 0])}), "E1") == 6000
    # ... until a report shows it drawing what it has: then the next step.
    drawing = {"E1": (3, [6000, 6000, 6000])}
    assert loop.current(site(T0 + 21, [6000] * 3, drawing), "E1") == 12_000


def test_a_cut_goes_out_at_once_and_blocks_raises_until_the_car_followed() -> None:
    loop = Loop()
    # E1 charges at 16 A, E2 just plugged in: 28 A fuse, 10 A other load on every phase.
    evses = {"E1": (3, [16_000] * 3), "E2": (2, [0, 0, 0])}
    for dt in range(0, 12):
        loop.run(site(T0 + dt, [26_000] * 3, {"E1": (3, [16_000] * 3)}, max_total=28_000))
    assert loop.control.evse("E1").command == 16_000
    # E2 arrives: the allocation splits 18 A into 9 A each. E1's cut goes out at once.
    now = T0 + 12
    first = loop.run(site(now, [26_000] * 3, evses, max_total=28_000))
    # (Half a deadband below the budget, as every cut or raise up to a budget.)
    assert first.evses["E1"].charging_current == 9000 - SETTINGS.deadband // 2
    # E2 may not start while E1 may still draw its old 16 A (follow_time): 16 + 6 > 18,
    # even though the offer has held for settle_time.
    for dt in (1, 2, 3, 4):
        r = loop.run(site(now + dt, [26_000] * 3, evses, max_total=28_000))
        assert r.evses["E2"].paused and r.evses["E2"].current == 9000, dt
    # E1 reports it followed (a report after the cut): E2 starts.
    followed = {"E1": (3, [9000] * 3), "E2": (2, [0, 0, 0])}
    inp = site(now + 5, [19_000] * 3, followed, max_total=28_000)
    r = loop.run(_with_ts(inp, "E1", now + 4.8))
    assert r.evses["E2"].charging_current == 6000 and not r.evses["E2"].paused


def test_without_a_report_the_follow_time_ends_the_wait() -> None:
    loop = Loop()
    evses = {"E1": (3, [16_000] * 3), "E2": (2, [0, 0, 0])}
    for dt in range(0, 12):
        loop.run(site(T0 + dt, [26_000] * 3, {"E1": (3, [16_000] * 3)}, max_total=28_000))
    now = T0 + 12
    loop.run(site(now, [26_000] * 3, evses, max_total=28_000))
    # E1's reports keep their old time: nothing shows it followed. After follow_time E2 may
    # start, when its offer fits beside E1's new command.
    late = site(now + SETTINGS.follow_s - 0.1, [26_000] * 3, evses, max_total=28_000)
    assert loop.run(_with_ts(late, "E1", now - 1)).evses["E2"].paused
    after = site(now + SETTINGS.follow_s, [26_000] * 3, evses, max_total=28_000)
    assert loop.run(_with_ts(after, "E1", now - 1)).evses["E2"].charging_current == 6000


def test_a_resume_needs_the_margin_for_the_resume_time() -> None:
    s = ControlSettings(settle_s=0, resume_s=10, ramp_step=0)
    memory, control = Memory(), ControlMemory()
    cache = AllocationCache()

    def run(dt: float, grid: list[int], state: int, cur: int) -> int:
        nonlocal memory, control
        inp = site(T0 + dt, grid, {"E1": (state, [cur] * 3)}, pause_min_time=0)
        result, control = govern(checked_allocate(inp, memory, cache), inp, control, s)
        memory = result.memory
        r = result.evses["E1"]
        return r.charging_current if r.charging_enabled and not r.paused else 0

    assert run(0, [0, 0, 0], 2, 0) == 16_000
    # 28 A other load: only 4 A left, below the minimum: paused at once.
    assert run(1, [28_000 + 16_000] * 3, 3, 16_000) == 0
    # 6.5 A fit: the minimum, but not the minimum + 1 A margin: stays paused.
    assert run(20, [25_500] * 3, 2, 0) == 0
    # 7.5 A fit (once the higher other load is older than load_hold_time): the margin
    # holds; after resume_time it starts, half a deadband short of the budget.
    assert run(31, [24_500] * 3, 2, 0) == 0
    assert run(40, [24_500] * 3, 2, 0) == 0
    assert run(41.5, [24_500] * 3, 2, 0) == 7500 - SETTINGS.deadband // 2


def test_a_cut_below_the_deadband_waits_while_the_limits_hold() -> None:
    loop = Loop()
    draws = {"E1": (3, [14_000] * 3)}
    for dt in range(0, 12):
        loop.run(site(T0 + dt, [16_000 + 14_000] * 3, draws, max_total=30_000))
    # 14 A fit: a raise limited by the budget stops half a deadband short.
    assert loop.control.evse("E1").command == 13_850
    draws = {"E1": (3, [13_850] * 3)}
    # The other load reads 0.2 A lower: 14.2 A are offered, a raise below the deadband.
    r = loop.run(site(T0 + 20, [15_800 + 13_850] * 3, draws, max_total=30_000))
    assert r.evses["E1"].current == 14_200 and r.evses["E1"].charging_current == 13_850
    # 0.1 A higher: 13.9 A offered, the command still fits: no cut.
    r = loop.run(site(T0 + 21, [16_100 + 13_850] * 3, draws, max_total=30_000))
    assert r.evses["E1"].current == 13_900 and r.evses["E1"].charging_current == 13_850
    # 0.2 A higher: 13.8 A offered. 13.85 A no longer fit: the limit needs the cut, small
    # as it is, and it too goes half a deadband below the budget.
    r = loop.run(site(T0 + 22, [16_200 + 13_850] * 3, draws, max_total=30_000))
    assert r.evses["E1"].charging_current == 13_650


def test_observation_mode_passes_the_allocation_through() -> None:
    inp = _params(site(T0, [0, 0, 0], {"E1": (2, [0, 0, 0])}), lb_enabled=False)
    alloc = allocate(inp, Memory())
    result, control = govern(alloc, inp, ControlMemory(), SETTINGS)
    assert result.evses == alloc.evses
    assert control.evse("E1").command == alloc.evses["E1"].charging_current


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30_000),  # other load on L1
            st.lists(st.integers(0, 20_000), min_size=3, max_size=3),  # E1..E3 draws
            st.floats(0.2, 4.0),  # time step
        ),
        min_size=2,
        max_size=25,
    ),
    st.lists(st.sampled_from([1, 7]), min_size=3, max_size=3),
)
def test_no_raise_ever_takes_a_slot_past_its_budget(
    steps: list[tuple[int, list[int], float]], masks: list[int]
) -> None:
    """Whatever the readings: a command is never above what the allocation offers unless it
    is an unchanged command that still fits, and after every run, on every constraint slot
    that an EVSE was raised on, what the EVSEs are committed to (their command, or what a cut
    one may still draw) fits the slot's budget."""
    loop = Loop()
    now = T0
    phases = {f"E{i + 1}": masks[i] for i in range(3)}
    for other, draws, dt in steps:
        now += dt
        evses = {
            f"E{i + 1}": (3 if d else 2, [d, d if masks[i] == 7 else 0, d if masks[i] == 7 else 0])
            for i, d in enumerate(draws)
        }
        grid = [other + sum(draws), other, other]
        before = dict(loop.control.evses)
        inp = site(now, grid, evses, phases=phases)
        alloc = checked_allocate(inp, loop.memory, loop.cache)
        result, control = govern(alloc, inp, loop.control, SETTINGS)
        loop.memory, loop.control = result.memory, control
        usage = [0] * len(alloc.budgets)
        for d, ctl in control.evses.items():
            for s in alloc.slots.get(d, ()):
                usage[s] += max(ctl.command, ctl.lingering)
        for d, r in result.evses.items():
            offered = alloc.evses[d]
            cmd = r.charging_current if r.charging_enabled and not r.paused else 0
            was = before[d].command if d in before else 0
            offer = (
                offered.charging_current if offered.charging_enabled and not offered.paused else 0
            )
            assert cmd <= offer or cmd == was, (d, cmd, offer, was)
            if cmd > was:
                for s in alloc.slots.get(d, ()):
                    assert usage[s] <= alloc.budgets[s], (d, s, usage, alloc.budgets)


def _with_ts(inp: AllocationInput, dev_id: str, ts: float) -> AllocationInput:
    evses = dict(inp.evses)
    ev = evses[dev_id]
    assert ev.state is not None
    evses[dev_id] = EvseInput(ev.config, ev.state.model_copy(update={"ts": ts}), 0.2)
    return AllocationInput(
        params=inp.params, groups=inp.groups, evses=evses, meters=inp.meters,
        users=inp.users, now=inp.now, stale_after_s=inp.stale_after_s,
    )  # fmt: skip


def _params(inp: AllocationInput, **changes: Any) -> AllocationInput:
    return AllocationInput(
        params=inp.params.model_copy(update=changes), groups=inp.groups, evses=inp.evses,
        meters=inp.meters, users=inp.users, now=inp.now, stale_after_s=inp.stale_after_s,
    )  # fmt: skip


def test_after_a_fail_safe_pause_a_car_starts_again_through_the_settle_time() -> None:
    loop = Loop()
    drawn = 0
    for dt in range(0, 12):
        drawn = loop.current(site(T0 + dt, [drawn] * 3, {"E1": (3, [drawn] * 3)}), "E1")
    assert drawn == 16_000
    # A run failed: every EVSE was paused at 0 A outside the control law.
    loop.control = all_paused(loop.control, T0 + 12)
    assert loop.control.evse("E1").lingering == 16_000
    inp = site(T0 + 13, [16_000] * 3, {"E1": (3, [16_000] * 3)})
    assert loop.current(inp, "E1") == 0  # no jump back to 16 A
    assert loop.current(site(T0 + 16, [0] * 3, {"E1": (2, [0] * 3)}), "E1") == 6000


class LearningLoop(Loop):
    """Loop, with each EVSE's learned car limit handed to the allocation, as
    ServiceState.allocation_input does."""

    def run(self, inp: AllocationInput) -> Allocation:
        evses = {
            d: ev._replace(car_limit=self.control.evse(d).car_limit) for d, ev in inp.evses.items()
        }
        return super().run(dataclasses.replace(inp, evses=evses))


def _two_cars(
    loop: Loop, own: dict[str, int], start: float, seconds: int, max_total: int = 22_000
) -> dict[str, int]:
    """Two 3-phase wallboxes on a 22 A fuse (`max_total`), nothing else on it; each car takes
    its command up to its own maximum (`own`) within the second. The commands at the end."""
    cmd = {"E1": 0, "E2": 0}
    for dt in range(seconds):
        drawn = {d: min(c, own[d]) for d, c in cmd.items()}
        inp = site(
            start + dt,
            [drawn["E1"] + drawn["E2"]] * 3,
            {d: (3 if drawn[d] else 2, [drawn[d]] * 3) for d in cmd},
            max_total=max_total,
        )
        result = loop.run(inp).evses
        cmd = {
            d: r.charging_current if r.charging_enabled and not r.paused else 0
            for d, r in result.items()
        }
    return cmd


def test_a_car_that_takes_less_hands_its_share_to_the_other() -> None:
    own = {"E1": 8000, "E2": 16_000}
    # Without learning: E1 keeps its half (11 A) and draws 8 A; E2 gets 11 A: 19 of 22 A.
    plain = _two_cars(Loop(), own, T0, 60)
    assert plain["E2"] <= 11_000
    loop = LearningLoop()
    cmd = _two_cars(loop, own, T0, 60)
    limit = loop.control.evse("E1").car_limit
    assert limit == 8000 + CAR_LIMIT_MARGIN_MA
    assert cmd["E1"] == limit
    # E2 gets the rest (a little short of it, as every raise to a budget stops)
    used = min(cmd["E1"], own["E1"]) + min(cmd["E2"], own["E2"])
    assert used >= 0.9 * 22_000, cmd
    # Then it stays quiet.
    again = _two_cars(loop, own, T0 + 60, 30)
    assert again == cmd


def test_a_car_short_of_its_command_by_less_than_the_gain_learns_against_its_share() -> None:
    """A car that takes 9.4 A of a 13 A share, raised in steps of 2 A: it does not take up
    the raise to 10 A, so no raise follows, and its command stays less than
    CAR_LIMIT_MARGIN_MA + CAR_LIMIT_MIN_GAIN_MA above what it draws while its share is
    more. Judged against its command alone, no limit was learned and the other car stayed
    at its half (seen on a long plant, mixed 25: 89 % of the headroom)."""
    settings = dataclasses.replace(SETTINGS, ramp_step=2000)
    own = {"E1": 9400, "E2": 16_000}
    plain = _two_cars(Loop(settings), own, T0, 60, max_total=26_000)
    assert plain["E1"] < 9400 + CAR_LIMIT_MARGIN_MA + CAR_LIMIT_MIN_GAIN_MA
    assert plain["E2"] <= 13_000
    loop = LearningLoop(settings)
    cmd = _two_cars(loop, own, T0, 60, max_total=26_000)
    assert loop.control.evse("E1").car_limit == 9400 + CAR_LIMIT_MARGIN_MA
    # E2 gets the rest of E1's share: what the fuse leaves beside E1's car limit.
    assert cmd["E2"] >= 26_000 - (9400 + CAR_LIMIT_MARGIN_MA) - 500 > plain["E2"] + 2000, cmd


def test_a_car_that_draws_its_command_learns_no_limit() -> None:
    """A car that draws its command shows no limit of its own, whatever its share, even when
    its raise does not count as taken up because the allocation still credits its ramp (a
    grid reading older than its report). Seen on a long plant (out-of-order 106): such a car
    learned 7.6 A while it drew its 6.6 A command, and the site settled 12 s late."""

    class Credited(LearningLoop):
        def run(self, inp: AllocationInput) -> Allocation:
            ev = inp.evses["E1"]
            evses = {**inp.evses, "E1": ev._replace(ramp_credit=1500)}
            return super().run(dataclasses.replace(inp, evses=evses))

    loop = Credited()
    cmd = {"E1": 0, "E2": 0}
    for dt in range(40):
        inp = site(
            T0 + dt,
            [cmd["E1"] + cmd["E2"]] * 3,
            {d: (3 if cmd[d] else 2, [cmd[d]] * 3) for d in cmd},
            max_total=22_000,
        )
        result = loop.run(inp).evses
        cmd = {
            d: r.charging_current if r.charging_enabled and not r.paused else 0
            for d, r in result.items()
        }
        assert not loop.control.evse("E1").car_limit, (dt, cmd)
    assert cmd["E1"] > 0


def test_reports_taken_before_the_car_could_follow_teach_no_car_limit() -> None:
    """E2's car follows a new command 4.8 s late (IEC 61851 allows 5 s) and its wallbox
    reports 3 s late: after follow_time its reports still show the old current, steady,
    though taken before the car could have begun to follow. They prove no limit (seen on a
    long plant, late 286: a limit learned from them cut a ramping car from 11.2 to 7 A).
    E1's car, which takes 8 A, still teaches its limit."""
    loop = LearningLoop()
    own = {"E1": 8000, "E2": 16_000}
    delay = {"E1": 0.0, "E2": 4.8}
    lag = {"E1": 0.0, "E2": 3.0}
    history: dict[str, list[tuple[float, int]]] = {"E1": [(0.0, 0)], "E2": [(0.0, 0)]}

    def draw(d: str, t: float) -> int:
        # What the car draws at t: the last command at least its delay old, up to its own max.
        commanded = [c for at, c in history[d] if at <= t - delay[d]]
        return min(commanded[-1] if commanded else 0, own[d])

    t = 0.0
    while t < 90:
        now = T0 + t
        true = {d: draw(d, t) for d in own}
        seen = {d: draw(d, t - lag[d]) for d in own}
        inp = site(
            now,
            [true["E1"] + true["E2"]] * 3,
            {d: (3 if seen[d] else 2, [seen[d]] * 3) for d in own},
            max_total=22_000,
        )
        evses = dict(inp.evses)
        for d in own:
            ev = evses[d]
            assert ev.state is not None
            evses[d] = ev._replace(state=ev.state.model_copy(update={"ts": now - 0.1 - lag[d]}))
        result = loop.run(dataclasses.replace(inp, evses=evses)).evses
        for d, r in result.items():
            c = r.charging_current if r.charging_enabled and not r.paused else 0
            if c != history[d][-1][1]:
                history[d].append((t, c))
        assert not loop.control.evse("E2").car_limit, (t, history)
        t = round(t + 0.5, 1)
    assert loop.control.evse("E1").car_limit == 8000 + CAR_LIMIT_MARGIN_MA
    assert history["E2"][-1][1] >= 22_000 - 9000 - 500, history


def test_a_learned_car_limit_is_forgotten_when_the_car_takes_more() -> None:
    loop = LearningLoop()
    cmd = _two_cars(loop, {"E1": 8000, "E2": 16_000}, T0, 60)
    assert loop.control.evse("E1").car_limit == cmd["E1"] == 9000
    # The car warms up and takes all it is given: it draws its command, close to the limit,
    # so that the limit goes and both share the fuse equally again.
    cmd = _two_cars(loop, {"E1": 16_000, "E2": 16_000}, T0 + 60, 60)
    assert loop.control.evse("E1").car_limit == 0
    assert abs(cmd["E1"] - cmd["E2"]) <= 500 and cmd["E1"] >= 10_000, cmd


def test_a_learned_car_limit_goes_when_the_car_stops() -> None:
    loop = LearningLoop()
    _two_cars(loop, {"E1": 8000, "E2": 16_000}, T0, 60)
    assert loop.control.evse("E1").car_limit
    inp = site(T0 + 60, [11_000] * 3, {"E1": (1, [0] * 3), "E2": (3, [11_000] * 3)},
               max_total=22_000)  # fmt: skip
    loop.run(inp)
    assert loop.control.evse("E1").car_limit == 0


def test_a_car_raised_before_it_followed_a_cut_may_still_go_down_to_the_cut() -> None:
    """A raise that comes before the car followed a cut: until it turns, the car may still
    go down to the cut's command, so the least it may draw while it ramps (what the other
    load figure may be low by, pairing.draw_spread) is the cut's command, not the raise's.
    Seen on a long plant (mixed, seed 93): counted at the raise, the car's draw made the
    other load 0.8 A low for 14 s and a fuse 0.4 A over with no disturbance."""
    loop = Loop()
    for dt in range(0, 12):
        loop.run(site(T0 + dt, [26_000] * 3, {"E1": (3, [16_000] * 3)}))
    now = T0 + 12
    still_16 = {"E1": (3, [16_000] * 3)}
    # The other load rises to 22 A: E1 is cut; its car goes on drawing 16 A.
    cut = loop.current(site(now, [38_000] * 3, still_16), "E1")
    assert cut < 16_000
    assert loop.control.ramp_floor("E1", cut) == cut
    # The fuse is raised before the car followed: E1 may rise again after settle_time.
    raised = cut
    for dt in (1, 2, 3, 4):
        raised = loop.current(site(now + dt, [38_000] * 3, still_16, max_total=44_000), "E1")
    assert raised > cut
    assert loop.control.ramp_floor("E1", raised) == cut
    # A raise of a car that had followed has its own command as the floor.
    followed = Loop()
    for dt in range(0, 12):
        followed.run(site(T0 + dt, [0] * 3, {"E1": (3 if dt > 4 else 2, [0] * 3)}))
    c = followed.control.evse("E1").command
    assert c > 0 and followed.control.ramp_floor("E1", c) == c


def test_a_cut_before_the_car_took_up_its_raise_is_followed_only_after_the_raise_could_be() -> None:
    """Raised to 12 A, its car still at 6 A, then cut: its car may still take the raise up
    (it starts within follow_time and may ramp as long again) before it follows the cut, so
    a report at 6 A, below the cut, proves nothing until then; the cut's own follow_time
    still ends the wait. Seen on a simulated plant (out-of-order, seed 123): counted as
    followed at once, the car took up its raise 2 s later, beside two starts the room it
    had left allowed, 2.9 A over the fuse."""
    loop = Loop()
    at_6 = {"E1": (3, [6000] * 3)}
    for dt in range(0, 8):
        loop.run(site(T0 + dt, [16_000] * 3, at_6))
    raised = loop.control.evse("E1")
    assert raised.command == 12_000 and raised.raised_at is not None
    # The other load rises by 13 A: E1 is cut below its raise; its reports still show 6 A.
    loop.run(site(T0 + 8, [29_000] * 3, at_6))
    cut = loop.control.evse("E1")
    assert 6000 < cut.command < 12_000
    assert cut.lingering == 12_000
    for t in (9.0, 10.0, 11.0, 12.5, 13.5):
        loop.run(site(T0 + t, [29_000] * 3, at_6))
        assert loop.control.evse("E1").lingering == 12_000, t
    # The cut's follow_time is over: followed.
    loop.run(site(T0 + 14.5, [29_000] * 3, at_6))
    assert loop.control.evse("E1").lingering == 0


def _ramp_hides_a_rise() -> tuple[AllocationInput, Allocation]:
    """E1 and E2 charge at 10 A beside 5 A of other load on a 32 A fuse; then E1 ramps
    toward 16 A (counted at it, though it may still draw 10 A) while the grid shows 5 A
    more: the car that ramped, or other load that rose? (Not checked_allocate: its
    reference reads the reports, not the ramp-credited draw.)"""
    memory, cache = Memory(), AllocationCache()
    at_10 = {"E1": (3, [10_000] * 3), "E2": (3, [10_000] * 3)}
    memory = allocate(site(T0, [25_000] * 3, at_10), memory, cache).memory
    inp = site(T0 + 1, [30_000] * 3, at_10)
    ramping = inp.evses["E1"]._replace(
        counted_current=(16_000,) * 3, ramp_credit=18_000, draw_spread=(6000,) * 3
    )
    inp = dataclasses.replace(inp, evses={**inp.evses, "E1": ramping})
    return inp, allocate(inp, memory, cache)


def test_a_raise_allows_for_a_rise_of_other_load_a_ramp_may_hide() -> None:
    """Sharing goes by the held other load (5 A: the figure, 4 A, may be low by the ramp's
    6 A); a raise by the figure plus that spread (10 A), as the load may have risen while
    the car did not yet ramp. Seen on simulated plants (plugging, seeds 100 and 282): a base
    load step during one car's late start handed to another car, 0.3-0.4 A over the fuse
    until the ramp ended."""
    inp, alloc = _ramp_hides_a_rise()
    assert alloc.budgets[:3] == (27_000,) * 3
    assert alloc.raise_budgets[:3] == (22_000,) * 3
    assert alloc.evses["E2"].charging_current > 10_000  # the allocation offers E2 more
    settled = EvseControl(command=10_000, changed_at=T0 - 100, up_since=T0 - 100, charged=True)
    ramping = EvseControl(command=16_000, changed_at=T0, charged=True, raised_at=T0)
    control = ControlMemory({"E1": ramping, "E2": settled})
    result, _ = govern(alloc, inp, control, SETTINGS)
    assert result.evses["E2"].charging_current == 10_000  # no room for any raise
    # By the held load alone it would have been raised.
    result, _ = govern(dataclasses.replace(alloc, raise_budgets=()), inp, control, SETTINGS)
    assert result.evses["E2"].charging_current > 10_000
