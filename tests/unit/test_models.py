"""The configuration and state models: aliases, strictness, ranges, device discrimination."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from service.core.models import (
    ChargingRule,
    DeviceConfig,
    EvseConfig,
    EvseState,
    Installation,
    MeterConfig,
    MeterState,
    Params,
    RfidEntry,
    User,
)

DEVICE = TypeAdapter(DeviceConfig)


def evse(**fields: Any) -> EvseConfig:
    return EvseConfig.model_validate({"dev_type": "evse_ajax", "dev_id": "E1", **fields})


# -- Params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_total_power", "max_total_current"),
        ("power_reserve", "reserve_current"),
        ("overdraft", "overdraft_cur"),
        ("max_total_evse_power", "max_total_evse_current"),
    ],
)
def test_params_accept_old_names_as_aliases(old: str, new: str) -> None:
    params = Params.model_validate({old: 12_345})
    assert getattr(params, new) == 12_345
    dumped = params.model_dump()
    assert dumped[new] == 12_345
    assert old not in dumped


def test_params_accept_current_names() -> None:
    params = Params.model_validate({"max_total_current": 40_000, "reserve_current": 1000})
    assert (params.max_total_current, params.reserve_current) == (40_000, 1000)


def test_params_defaults() -> None:
    params = Params()
    assert params.max_total_current == 32_000
    assert params.lb_enabled is True
    assert params.disable_policy == 1
    assert params.cycle_time == 3000
    assert params.cm_vars == {}


@pytest.mark.parametrize(
    "patch",
    [
        {"max_total_current": "16000"},  # strict: no str → int coercion
        {"max_total_current": 16000.0},  # strict: no float → int coercion
        {"max_total_current": True},  # strict: bool is not an int
        {"lb_enabled": 1},
        {"lb_enabled": "true"},
        {"max_total_current": -1},
        {"max_total_current": 2_000_001},
        {"cycle_time": 99},
        {"cycle_time": 60_001},
        {"disable_policy": 2},
        {"disable_policy": -2},
        {"stale_time": 3_600_001},
        {"title": "x" * 201},
        {"unknown_field": 1},
        {"cm_vars": {"not an identifier": 1.0}},
        {"cm_vars": {"x" * 65: 1.0}},
        {"cm_vars": {"x": True}},
    ],
)
def test_params_refuse_bad_values(patch: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Params.model_validate(patch)


@pytest.mark.parametrize("policy", [-1, 0, 1])
def test_params_disable_policy_values(policy: int) -> None:
    assert Params.model_validate({"disable_policy": policy}).disable_policy == policy


def test_params_cm_vars_take_numbers_and_expressions() -> None:
    params = Params.model_validate({"cm_vars": {"a": 3, "b": 2.5, "c": "a * 2"}})
    assert params.cm_vars == {"a": 3.0, "b": 2.5, "c": "a * 2"}


def test_params_validate_assignment() -> None:
    params = Params()
    with pytest.raises(ValidationError):
        params.cycle_time = 5


def test_params_cm_vars_refuse_non_finite_numbers() -> None:
    with pytest.raises(ValidationError):
        Params.model_validate({"cm_vars": {"x": math.nan}})


def test_params_json_round_trip() -> None:
    params = Params.model_validate({"max_total_power": 20_000, "cm_vars": {"a": 1.5, "b": "a"}})
    assert Params.model_validate_json(params.model_dump_json()) == params


# -- devices --------------------------------------------------------------------------------


def test_device_config_discriminated_by_dev_id_prefix() -> None:
    e = DEVICE.validate_python({"dev_type": "evse_ajax", "dev_id": "E7"})
    m = DEVICE.validate_python({"dev_type": "meter_ajax", "dev_id": "M3"})
    assert isinstance(e, EvseConfig)
    assert isinstance(m, MeterConfig)


def test_device_config_refuses_other_prefixes() -> None:
    with pytest.raises(ValidationError):
        DEVICE.validate_python({"dev_type": "evse_ajax", "dev_id": "X1"})
    with pytest.raises(ValidationError):
        DEVICE.validate_python({"dev_type": "evse_ajax"})


def test_meter_refuses_evse_only_fields() -> None:
    with pytest.raises(ValidationError):
        DEVICE.validate_python({"dev_type": "meter_ajax", "dev_id": "M1", "label": "x"})


def test_evse_refuses_meter_only_fields() -> None:
    with pytest.raises(ValidationError):
        DEVICE.validate_python({"dev_type": "evse_ajax", "dev_id": "E1", "invert": True})


@pytest.mark.parametrize("dev_id", ["E", "M", "e1", "E 1", "E1/x", "E" + "1" * 32])
def test_device_id_pattern(dev_id: str) -> None:
    with pytest.raises(ValidationError):
        EvseConfig.model_validate({"dev_type": "evse_ajax", "dev_id": dev_id})


@pytest.mark.parametrize(("given", "expected"), [(1, True), (0, False), (True, True)])
def test_device_enabled_from_int(given: int | bool, expected: bool) -> None:
    assert evse(device_enabled=given).device_enabled is expected


@pytest.mark.parametrize("given", [2, -1, "1", 1.0])
def test_device_enabled_refuses_other_values(given: Any) -> None:
    with pytest.raises(ValidationError):
        evse(device_enabled=given)


def test_evse_defaults() -> None:
    device = evse()
    assert device.min_charging_cur == 6000
    assert device.max_charging_cur == 16_000
    assert device.device_enabled is True
    assert device.users == []


def test_max_charging_cur_expression_kept() -> None:
    assert evse(max_charging_cur="solar * 2").max_charging_cur == "solar * 2"


def test_max_charging_cur_numeric_string_becomes_int() -> None:
    device = evse(max_charging_cur=" 10000 ")
    assert device.max_charging_cur == 10_000
    assert isinstance(device.max_charging_cur, int)


@pytest.mark.parametrize("value", ["", "   ", "x" * 1001, 80_001, -1])
def test_max_charging_cur_refuses(value: int | str) -> None:
    with pytest.raises(ValidationError):
        evse(max_charging_cur=value)


def test_max_charging_cur_numeric_string_obeys_range() -> None:
    with pytest.raises(ValidationError):
        evse(max_charging_cur="999999")


@pytest.mark.parametrize(
    "fields",
    [
        {"min_charging_cur": 80_001},
        {"used_phases": 8},
        {"id": 256},
        {"prio": 1001},
        {"phase_rotation": 6},
        {"battery_save_threshold": -1},
    ],
)
def test_evse_ranges(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        evse(**fields)


def test_meter_role_range() -> None:
    base = {"dev_type": "meter_ajax", "dev_id": "M1"}
    assert MeterConfig.model_validate({**base, "role": 5}).role == 5
    with pytest.raises(ValidationError):
        MeterConfig.model_validate({**base, "role": 6})


# -- rules, users ---------------------------------------------------------------------------


def test_charging_rule_defaults() -> None:
    rule = ChargingRule()
    assert (rule.days, rule.mode, rule.time, rule.dur, rule.enabled) == (127, 0, 0, 1440, True)


@pytest.mark.parametrize(
    "fields",
    [{"days": 128}, {"mode": 6}, {"time": 1440}, {"dur": 10_081}, {"solar": -1}, {"x": 1}],
)
def test_charging_rule_ranges(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChargingRule.model_validate(fields)


def test_user_with_rfids_and_rules() -> None:
    user = User.model_validate(
        {
            "id": "u1",
            "dev_ids": ["E1"],
            "rfids": [{"id": "04:A2:FF", "used_phases": 3}],
            "charging_rules": [{"mode": 2}],
        }
    )
    assert user.rfids[0].id == "04:A2:FF"
    assert user.rfids[0].ac_auth is True
    assert user.charging_rules[0].mode == 2


@pytest.mark.parametrize("user_id", ["", "a b", "x" * 33, "ü"])
def test_user_id_pattern(user_id: str) -> None:
    with pytest.raises(ValidationError):
        User.model_validate({"id": user_id})


@pytest.mark.parametrize("rfid", ["", "a b", "x" * 65])
def test_rfid_id_pattern(rfid: str) -> None:
    with pytest.raises(ValidationError):
        RfidEntry.model_validate({"id": rfid})


# -- installation ---------------------------------------------------------------------------


def test_installation_serialno_default() -> None:
    a, b = Installation(), Installation()
    assert re.fullmatch(r"CB-[0-9A-F]{8}", a.serialno)
    assert a.serialno != b.serialno


def test_installation_json_round_trip_keeps_device_kinds() -> None:
    inst = Installation.model_validate(
        {
            "params": {"max_total_current": 25_000},
            "devices": {
                "E1": {"dev_type": "evse_ajax", "dev_id": "E1", "max_charging_cur": "x+1"},
                "M1": {"dev_type": "meter_ajax", "dev_id": "M1", "invert": True},
            },
        }
    )
    again = Installation.model_validate_json(inst.model_dump_json())
    assert again == inst
    assert isinstance(again.devices["E1"], EvseConfig)
    assert isinstance(again.devices["M1"], MeterConfig)
    assert list(again.devices) == ["E1", "M1"]


def test_installation_refuses_key_differing_from_dev_id() -> None:
    with pytest.raises(ValidationError):
        Installation.model_validate(
            {"devices": {"E1": {"dev_type": "evse_ajax", "dev_id": "E2"}}}
        )


# -- states ---------------------------------------------------------------------------------


def test_evse_state_defaults_and_extra_ignored() -> None:
    state = EvseState.model_validate({"ts": 5, "something_new": 1})
    assert state.current == [0, 0, 0]
    assert state.voltage == [230.0, 230.0, 230.0]
    assert state.state == 1
    assert not hasattr(state, "something_new")


@pytest.mark.parametrize(
    "data",
    [
        {"ts": -1},
        {"ts": 1, "state": 7},
        {"ts": 1, "state": 0},
        {"ts": 1, "current": [1, 2]},
        {"ts": 1, "current": [1, 2, 3, 4]},
        {"ts": 1, "voltage": [230, 230, 1001]},
        {"ts": 1, "total_energy": -1},
    ],
)
def test_evse_state_refuses(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EvseState.model_validate(data)


def test_evse_state_refuses_non_finite_power() -> None:
    with pytest.raises(ValidationError):
        EvseState.model_validate(json.loads('{"ts": 1, "power_w": NaN}'))


@pytest.mark.parametrize("name", ["import_wh", "import_vah", "import"])
def test_meter_state_import_aliases(name: str) -> None:
    assert MeterState.model_validate({"ts": 1, name: 123.5}).import_wh == 123.5


@pytest.mark.parametrize("name", ["export_wh", "export"])
def test_meter_state_export_aliases(name: str) -> None:
    assert MeterState.model_validate({"ts": 1, name: 7}).export_wh == 7


def test_meter_state_refuses_negative_energy() -> None:
    with pytest.raises(ValidationError):
        MeterState.model_validate({"ts": 1, "import_wh": -1})
