"""DeviceRuntime: communication errors counted on rising edges."""

from __future__ import annotations

from service.core.models import EvseState, MeterState
from service.core.runtime import DeviceRuntime


def evse_state(com_err: bool, last_error: str = "") -> EvseState:
    return EvseState(ts=1.0, com_err=com_err, last_error=last_error)


def test_fresh_runtime() -> None:
    runtime = DeviceRuntime()
    assert runtime.state is None
    assert runtime.com_errors == 0
    assert runtime.com_err is False
    assert runtime.last_com_err_at is None


def test_record_state_keeps_state_and_time() -> None:
    runtime = DeviceRuntime()
    state = MeterState(ts=5.0, power_w=100.0)
    runtime.record_state(state, now=7.0)
    assert runtime.state is state
    assert runtime.received_at == 7.0
    assert runtime.com_errors == 0


def test_com_errors_counted_on_rising_edges_only() -> None:
    runtime = DeviceRuntime()
    sequence = [False, True, True, True, False, False, True, False, True]
    for now, err in enumerate(sequence):
        runtime.record_state(evse_state(err), now=float(now))
    assert runtime.com_errors == 3
    assert runtime.com_err is True
    assert runtime.last_com_err_at == 8.0


def test_last_com_err_at_is_start_of_error() -> None:
    runtime = DeviceRuntime()
    runtime.record_state(evse_state(True), now=10.0)
    runtime.record_state(evse_state(True), now=20.0)
    assert runtime.last_com_err_at == 10.0
    assert runtime.com_err_secs(25.0) == 15
    runtime.record_state(evse_state(False), now=30.0)
    assert runtime.com_err is False
    # Recovered: the time since the last error (issue 14 item 5), counted from its end.
    assert runtime.com_err_secs(40.0) == 10


def test_com_err_secs_without_any_error_counts_from_the_first_look() -> None:
    runtime = DeviceRuntime()
    assert runtime.com_err_secs(5.0) == 0  # not watched yet
    runtime.watched_since = 100.0
    runtime.record_state(evse_state(False), now=101.0)
    assert runtime.com_err_secs(570.0) == 470


def test_stale_data_is_a_com_error_until_fresh_data() -> None:
    runtime = DeviceRuntime()
    runtime.record_state(evse_state(False), now=10.0)
    runtime.set_com_err(True, 20.0, "no data for 9 s")
    runtime.set_com_err(True, 23.0, "no data for 12 s")
    assert (runtime.com_errors, runtime.com_err_secs(25.0)) == (1, 5)
    assert runtime.last_error == "no data for 12 s"
    runtime.record_state(evse_state(False), now=26.0)
    assert (runtime.com_err, runtime.com_err_secs(30.0)) == (False, 4)
    assert runtime.last_error == "no data for 12 s"


def test_last_error_kept_from_error_states() -> None:
    runtime = DeviceRuntime()
    runtime.record_state(evse_state(True, "timeout"), now=1.0)
    assert runtime.last_error == "timeout"
    runtime.record_state(evse_state(True), now=2.0)  # no text: keep the old one
    assert runtime.last_error == "timeout"
    runtime.record_state(evse_state(False, "ignored without com_err"), now=3.0)
    assert runtime.last_error == "timeout"
    runtime.record_state(evse_state(True, "crc"), now=4.0)
    assert runtime.last_error == "crc"
    assert runtime.com_errors == 2
