"""Safety properties of the fixes of issue 12, item 5, over random sites: what the EVSEs are
given, drawn on the phases they really use, plus the true other load stays within the fuse.

Unlike test_properties (which checks the allocation against a restatement of its budgets),
these check the physics: the load each phase would carry once the EVSEs follow their
commands, where the allocation only sees readings — an EVSE's report that may be false
(g), a grid meter that gives only its power (b), a card that names fewer phases than the
car uses (f), a grid meter that goes silent (i).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.allocation import (
    R_COM_ERR,
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
)
from service.core.allocation.budgets import LATE_GRACE
from service.core.models import EvseConfig, EvseState, MeterConfig, MeterState, Params, User
from tests.allocation.checker import checked_allocate

NOW = 1_700_000_000.0
STALE = 9.0
VOLTAGE = 230
FUSES = st.sampled_from([16_000, 32_000, 63_000])
OTHER = st.lists(st.integers(0, 40_000), min_size=3, max_size=3)


def params(fuse: int, **extra: Any) -> Params:
    # Snapshots: the hold of the other load over time is a control-loop matter.
    return Params(max_total_current=fuse, load_hold_time=0, **extra)


def evse(dev_id: str, maximum: int, used_phases: int = 7, users: list[str] | None = None) -> Any:
    return EvseConfig(
        dev_type="evse_ajax", dev_id=dev_id, used_phases=used_phases,
        max_charging_cur=maximum, users=users or [],
    )  # fmt: skip


def grid(state: MeterState | None, age: float | None = 1.0) -> dict[str, MeterInput]:
    config = MeterConfig(dev_type="meter_ajax", dev_id="M1", role=3)
    return {"M1": MeterInput(config, state, age if state is not None else None)}


def run(
    p: Params,
    evses: dict[str, EvseInput],
    meters: dict[str, MeterInput],
    memory: Memory | None = None,
    users: dict[str, User] | None = None,
) -> Allocation:
    inp = AllocationInput(p, [], evses, meters, users or {}, NOW, STALE)
    # Checked: cached against plain, and the limits (tests/allocation/checker).
    return checked_allocate(inp, memory or Memory(), AllocationCache())


def phase_load(result: Allocation, other: list[int], phases: dict[str, int]) -> list[int]:
    """Per grid phase: the other load plus what each EVSE draws once it follows its command,
    on the phases it really uses (`phases`, a mask)."""
    load = list(other)
    for dev_id, res in result.evses.items():
        for q in range(3):
            if phases[dev_id] >> q & 1:
                load[q] += res.current
    return load


@settings(max_examples=300, deadline=None)
@given(
    fuse=FUSES,
    other=OTHER,
    maxima=st.lists(st.sampled_from([16_000, 32_000]), min_size=1, max_size=4),
    data=st.data(),
)
def test_whatever_an_evse_reports_the_fuse_holds(
    fuse: int, other: list[int], maxima: list[int], data: st.DataObject
) -> None:
    """(g) E1 reports any draw; it truly draws at most its maximum. A report its maximum
    cannot explain makes it lost (counted at its maximum, no credit), so the fuse holds;
    an over-report within the tolerance can only cost what it over-reports."""
    ids = [f"E{i + 1}" for i in range(len(maxima))]
    true = {d: data.draw(st.integers(0, m)) for d, m in zip(ids, maxima, strict=True)}
    reported = dict(true)
    reported["E1"] = data.draw(st.integers(0, 200_000))
    evses = {
        d: EvseInput(evse(d, m), EvseState(ts=NOW, state=3, current=[reported[d]] * 3), 1.0)
        for d, m in zip(ids, maxima, strict=True)
    }
    reading = [o + sum(true.values()) for o in other]
    result = run(params(fuse), evses, grid(MeterState(ts=NOW, current=reading)))
    lost = result.evses["E1"].reason == R_COM_ERR
    bound = maxima[0] + max(1000, maxima[0] // 10)
    assert lost == (reported["E1"] > bound)
    # A lost EVSE may go on drawing up to its maximum; the others draw what they are given.
    base = [o + (maxima[0] if lost else 0) for o in other]
    slack = 0 if lost else max(0, reported["E1"] - true["E1"])
    load = phase_load(result, base, dict.fromkeys(ids, 7))
    for q in range(3):
        # Within the fuse, or nothing added to a base that alone exceeds it.
        assert load[q] <= max(fuse, base[q]) + slack, (q, load, base, slack)


@settings(max_examples=300, deadline=None)
@given(
    fuse=FUSES,
    other=OTHER,
    cars=st.lists(
        st.tuples(st.sampled_from([1, 2, 4, 3, 5, 6, 7]), st.integers(0, 16_000)),
        min_size=1,
        max_size=4,
    ),
)
def test_a_power_only_grid_meter_holds_the_fuse_however_its_load_is_split(
    fuse: int, other: list[int], cars: list[tuple[int, int]]
) -> None:
    """(b) the meter gives the power of the other load, split over the phases in any way,
    plus the EVSEs' draw; no currents."""
    ids = [f"E{i + 1}" for i in range(len(cars))]
    evses = {}
    phases = {}
    milliamps = sum(other)
    for d, (mask, draw) in zip(ids, cars, strict=True):
        current = [draw if mask >> q & 1 else 0 for q in range(3)]
        milliamps += sum(current)
        evses[d] = EvseInput(evse(d, 16_000, mask), EvseState(ts=NOW, state=3, current=current))
        evses[d] = EvseInput(evses[d].config, evses[d].state, 1.0)
        phases[d] = mask
    power = milliamps * VOLTAGE / 1000
    result = run(params(fuse), evses, grid(MeterState(ts=NOW, power_w=power)))
    load = phase_load(result, other, phases)
    for q in range(3):
        if sum(other) <= fuse:
            assert load[q] <= fuse, (q, load, other)


@settings(max_examples=300, deadline=None)
@given(
    fuse=FUSES,
    other=OTHER,
    cars=st.lists(
        st.tuples(
            st.sampled_from([1, 2, 4, 3, 5, 6, 7]),  # the phases the car really draws on
            st.sampled_from([0, 1, 2, 4, 3, 7]),  # the EVSE's used_phases
            st.sampled_from([0, 1, 2, 4]),  # the card's used_phases
            st.integers(1000, 16_000),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_no_setting_of_phases_hides_a_draw(
    fuse: int, other: list[int], cars: list[tuple[int, int, int, int]]
) -> None:
    """(f) configured and card phases that name fewer phases than the car draws on."""
    ids = [f"E{i + 1}" for i in range(len(cars))]
    users = {
        d: User(id=f"u{d}", rfids=[{"id": f"C{d}", "used_phases": card}])  # type: ignore[list-item]
        for d, (_, _, card, _) in zip(ids, cars, strict=True)
    }
    evses = {}
    drawn = list(other)
    for d, (real, configured, _, draw) in zip(ids, cars, strict=True):
        current = [draw if real >> q & 1 else 0 for q in range(3)]
        drawn = [a + b for a, b in zip(drawn, current, strict=True)]
        state = EvseState(ts=NOW, state=3, current=current, rfid=f"C{d}")
        evses[d] = EvseInput(evse(d, 16_000, configured, [f"u{d}"]), state, 1.0)
    book = {u.id: u for u in users.values()}
    result = run(params(fuse), evses, grid(MeterState(ts=NOW, current=drawn)), users=book)
    for d, (real, _, _, _) in zip(ids, cars, strict=True):
        if result.evses[d].current:
            assert result.evses[d].grid_phases & real == real, (d, result.evses[d])
    load = phase_load(result, other, {d: c[0] for d, c in zip(ids, cars, strict=True)})
    for q in range(3):
        if other[q] <= fuse:
            assert load[q] <= fuse, (q, load, other)


@settings(max_examples=200, deadline=None)
@given(
    fuse=FUSES,
    other=OTHER,
    draws=st.lists(st.integers(0, 16_000), min_size=1, max_size=5),
    heard=st.booleans(),
)
def test_without_a_grid_reading_nothing_beyond_what_fits(
    fuse: int, other: list[int], draws: list[int], heard: bool
) -> None:
    """(i) grid_fail_current 0: a grid meter never heard gives nothing; one lost after a
    reading holds that reading's other load, so the minimums fit beside it."""
    ids = [f"E{i + 1}" for i in range(len(draws))]
    evses = {
        d: EvseInput(evse(d, 16_000), EvseState(ts=NOW, state=3, current=[c] * 3), 1.0)
        for d, c in zip(ids, draws, strict=True)
    }
    memory = Memory()
    if heard:
        reading = [o + sum(draws) for o in other]
        memory = run(params(fuse), evses, grid(MeterState(ts=NOW, current=reading))).memory
        # Lost, not only late (a late reading is still used, see budgets.LATE_GRACE).
        silent = grid(MeterState(ts=NOW, current=reading), age=STALE * LATE_GRACE + 1)
    else:
        silent = grid(None)
    result = run(params(fuse), evses, silent, memory)
    assert result.grid_meter_lost
    load = phase_load(result, other, dict.fromkeys(ids, 7))
    if not heard:
        assert load == other
    for q in range(3):
        if other[q] <= fuse:
            assert load[q] <= fuse, (q, load, other)
