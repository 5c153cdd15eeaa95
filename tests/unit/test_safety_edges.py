"""Safety at the shell's edges (issue 12, item 5): numbers bounded where they enter, the
command of a device that disable_policy lets charge, and what a failed run sends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bridges.http_input import InputError, parse_evse_input, parse_meter_input
from service.control_loop import Sent, commands_to_send, fail_safe_commands
from service.core.allocation import R_DISABLED, R_OK, R_UNLIMITED, EvseResult
from service.core.models import EvseState, MeterState

NOW = 1_000.0


# -- h: every number is bounded at the edge ------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (EvseState, "power_w", 1e308),
        (EvseState, "power_w", -1e308),
        (EvseState, "total_energy", 1e308),
        (EvseState, "ts", 1e308),
        (MeterState, "power_w", 1e308),
        (MeterState, "power_w", -1e308),
        (MeterState, "import_wh", 1e308),
        (MeterState, "export_wh", 1e308),
        (MeterState, "ts", 1e308),
    ],
)
def test_huge_measurements_are_refused(
    model: type[EvseState | MeterState], field: str, value: float
) -> None:
    with pytest.raises(ValidationError, match=field):
        model.model_validate({"ts": 1.0, field: value})


def test_plausible_measurements_pass() -> None:
    # A 22 kW wallbox, a 400 kW building, decades of energy.
    assert EvseState(ts=1.0, power_w=22_000, total_energy=5e7).power_w == 22_000
    assert MeterState(ts=1.0, power_w=-400_000, import_wh=1e9).power_w == -400_000


def test_http_input_refuses_huge_numbers_with_a_named_field() -> None:
    with pytest.raises(InputError) as meter:
        parse_meter_input({"power_w": 1e308}, from_query=False)
    assert meter.value.status == 400 and "power_w" in meter.value.message
    with pytest.raises(InputError) as evse:
        parse_evse_input({"total_energy": "1e308"}, from_query=True)
    assert evse.value.status == 400 and "total_energy" in evse.value.message


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_any_accepted_powers_add_up_to_a_finite_number(powers: list[float]) -> None:
    accepted = []
    for p in powers:
        try:
            accepted.append(EvseState(ts=1.0, power_w=p).power_w or 0.0)
        except ValidationError:
            continue
    # Ten thousand EVSEs of the largest accepted power still sum to a finite, roundable value.
    round(sum(accepted) * 10_000)


# -- a: a disabled device under disable_policy 1 / -1 is commanded to charge -----------------


def result(reason: str, *, device_enabled: bool, charging_enabled: bool, current: int) -> Any:
    return EvseResult(
        device_enabled=device_enabled, charging_enabled=charging_enabled, paused=False,
        charging_current=current, current=current, target=current, pause_time=0, phases=7,
        grid_phases=7, cur_charging_power=0, reason=reason, needs_auth=False, com_err=False,
        user_id=None, overrides=0, ov_cur=current,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "current"), [(R_OK, 6000), (R_UNLIMITED, 16_000)], ids=["policy 1", "policy -1"]
)
def test_a_disabled_device_that_the_policy_lets_charge_is_commanded_enabled(
    reason: str, current: int
) -> None:
    res = result(reason, device_enabled=False, charging_enabled=True, current=current)
    (out,) = commands_to_send({"E1": res}, {"E1": 1.0}, {}, NOW, refresh=False)
    command = json.loads(out.payload)
    assert command["device_enabled"] is True
    assert command["charging_enabled"] is True and command["charging_current"] == current


def test_policy_0_still_switches_the_device_off() -> None:
    res = result(R_DISABLED, device_enabled=False, charging_enabled=False, current=0)
    (out,) = commands_to_send({"E1": res}, {"E1": 1.0}, {}, NOW, refresh=False)
    assert json.loads(out.payload)["device_enabled"] is False


# -- h: a failed run leaves no EVSE on an old command ----------------------------------------


def test_a_failed_run_pauses_every_evse_at_0_a() -> None:
    previous = {
        "E1": Sent(True, True, False, 16_000, 1.0),
        "E2": Sent(False, False, False, 0, 1.0),  # switched off by policy 0
    }
    out = fail_safe_commands(["E1", "E2", "E3"], {"E1": 2.0, "E3": None}, previous, NOW)
    commands = {o.dev_id: json.loads(o.payload) for o in out}
    assert set(commands) == {"E1", "E2", "E3"}
    for command in commands.values():
        assert command["paused"] is True and command["charging_current"] == 0
    assert commands["E1"]["device_enabled"] is True and commands["E1"]["state_ts"] == 2.0
    assert commands["E2"]["device_enabled"] is False
    # Sent once: a second failure with nothing new sends nothing more.
    after = {**previous, **{o.dev_id: o.sent for o in out}}
    assert fail_safe_commands(["E1", "E2", "E3"], {"E1": 2.0, "E3": None}, after, NOW) == []
    # A new state is answered (set_ajax_evse waits for the answer to its own state).
    (again,) = fail_safe_commands(["E1"], {"E1": 3.0}, after, NOW)
    assert json.loads(again.payload)["state_ts"] == 3.0
