"""What the allocation reads of one EVSE (service/evse_inputs.py): the short way for a settled
EVSE gives the same answer as the general one."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service.core.control_law import ControlMemory, EvseControl
from service.core.models import EvseConfig, EvseState
from service.core.runtime import DeviceRuntime
from service.evse_inputs import Windows, evse_input, is_settled, settled_evse_input

NOW = 1_000.0
currents = st.lists(st.integers(0, 70_000), min_size=3, max_size=3)
reports = st.lists(st.tuples(st.floats(NOW - 20, NOW), currents), max_size=8)
controls = st.none() | st.builds(
    EvseControl,
    command=st.integers(0, 32_000),
    changed_at=st.floats(NOW - 60, NOW),
    lowered_at=st.none() | st.floats(NOW - 20, NOW),
    lingering=st.integers(0, 32_000),
    raised_at=st.none() | st.floats(NOW - 30, NOW),
    car_limit=st.integers(0, 32_000),
    cut_in_flight=st.none() | st.integers(0, 32_000),
)


@settings(max_examples=300, deadline=None)
@given(
    reports,
    controls,
    st.none() | st.floats(NOW - 20, NOW),
    st.sampled_from([6, 10]),
    st.sampled_from([0, 10]),
    st.integers(6000, 32_000),
    st.none() | st.integers(0, 32_000),
)
def test_a_settled_evse_reads_the_same_the_short_way(
    states: list[tuple[float, list[int]]],
    ctl: EvseControl | None,
    reading_ts: float | None,
    follow_time: int,
    load_hold_time: int,
    maximum: int,
    reported_max: int | None,
) -> None:
    config = EvseConfig(dev_type="evse_ajax", dev_id="E1", max_charging_cur=maximum)
    runtime = DeviceRuntime() if states else None
    for ts, current in states:
        assert runtime is not None
        state = EvseState(ts=ts, state=3, current=current, max_charging_current=reported_max)
        runtime.record_state(state, ts)
    control = ControlMemory({} if ctl is None else {"E1": ctl})
    ramp = 2 * follow_time if load_hold_time > 0 else 0  # as Windows.of
    windows = Windows(ramp, 3 * ramp, follow_time)
    assume(is_settled(ctl, NOW, windows.moving))  # else only the general way is asked
    short = settled_evse_input(config, runtime, ctl, reading_ts, NOW, windows.follow)
    general = evse_input("E1", config, runtime, control, reading_ts, NOW, windows)
    assert short == general


def test_a_raise_or_an_unfollowed_cut_is_no_settled_evse() -> None:
    assert is_settled(None, NOW, 12.0)
    assert not is_settled(EvseControl(command=10_000, raised_at=NOW - 5), NOW, 12.0)
    assert is_settled(EvseControl(command=10_000, raised_at=NOW - 13), NOW, 12.0)
    cut = EvseControl(command=6000, lowered_at=NOW - 5, lingering=16_000)
    assert not is_settled(cut, NOW, 12.0)
    assert is_settled(cut._replace(lingering=0), NOW, 12.0)  # it followed


def test_its_own_rules_see_the_ramp_to_its_command_though_a_later_report_bounds_it() -> None:
    """Raised to 12 A from 6 A; its first report after the grid reading still shows 6 A.
    Against the other load it counts at that report (no credit), but its own surplus rule
    sees the ramp up to its command (EvseInput.own_ramp): cut back by its own rule before its
    car took the raise up, it was raised and cut again for 20 s (solar plants 34, 216)."""
    config = EvseConfig(dev_type="evse_ajax", dev_id="E1", used_phases=1, max_charging_cur=16_000)
    runtime = DeviceRuntime()
    for ts in (NOW - 3, NOW - 2, NOW - 1):
        runtime.record_state(EvseState(ts=ts, state=3, current=[6000, 0, 0]), ts)
    raised = EvseControl(command=12_000, changed_at=NOW - 2.5, charged=True, raised_at=NOW - 2.5)
    control = ControlMemory({"E1": raised})
    windows = Windows(12.0, 36.0, 6.0)
    evse, _ = evse_input("E1", config, runtime, control, NOW - 1.5, NOW, windows)
    assert evse.counted_current == (6000, 0, 0)
    assert evse.ramp_credit == 0
    assert evse.own_ramp == 6000
    # Without a later report, both are the ramp to its command.
    evse, _ = evse_input("E1", config, runtime, control, NOW - 0.5, NOW, windows)
    assert evse.ramp_credit == evse.own_ramp == 6000
