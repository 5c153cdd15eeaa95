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
