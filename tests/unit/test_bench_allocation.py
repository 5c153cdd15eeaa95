"""bench/bench_allocation.py makes the kinds of run it says it makes."""

from __future__ import annotations

import pytest

from bench.bench_allocation import KINDS, build, inputs_for, measure


def _changed_states(before: dict[str, object], after: dict[str, object]) -> int:
    return sum(1 for dev_id, ev in after.items() if ev is not before[dev_id])


def test_each_kind_changes_what_it_says() -> None:
    inp = build(100)
    for kind in KINDS:
        steps = inputs_for(inp, kind, 4)
        assert [s.now for s in steps] == [inp.now + 3 * (k + 1) for k in range(4)]
        previous = inp
        for step in steps:
            meter_moved = step.meters["M1"] is not previous.meters["M1"]
            states = _changed_states(dict(previous.evses), dict(step.evses))
            if kind == "timer":
                assert (meter_moved, states) == (False, 0)
            elif kind == "meter":
                assert (meter_moved, states) == (True, 0)
            elif kind == "operation":
                assert meter_moved and states == 5  # 5 % of 100
            else:
                assert meter_moved and states == 100
            previous = step


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_measures_a_working_car_park(kind: str) -> None:
    median, p99, charging, paused = measure(100, 3, kind)
    assert 0 < median <= p99
    # The main fuse is tighter than the sub-distributions: most charge, some pause.
    assert charging > 50 and paused > 0
