"""set_ajax_meter / set_ajax_evse input → state payloads (bridges/http_input.py, pure part)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from multidict import MultiDict

from bridges.http_input import (
    InputError,
    control_answer,
    parse_evse_input,
    parse_meter_input,
    single_values,
)

# The API's set_ajax_* examples, verbatim (docs/api.md).
SPEC_GET = (
    "cmd=set_ajax_meter&dev_id=M3&model=TestModell&import_wh=12345&export_wh=23456"
    "&voltage=231,232,233&current=10001,10002,10003"
)
SPEC_POST = (
    '{ "model": "TestModell", "import_wh": 12345, "export_wh": 23456, '
    '"voltage": [231, 232, 233], "current": [10001, 10002, 10003] }'
)
SPEC_METER = {
    "model": "TestModell",
    "import_wh": 12345,
    "export_wh": 23456,
    "voltage": [231, 232, 233],
    "current": [10001, 10002, 10003],
}


def query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text, keep_blank_values=True))


def meter_error(values: Any, *, from_query: bool) -> InputError:
    with pytest.raises(InputError) as caught:
        parse_meter_input(values, from_query=from_query)
    return caught.value


def evse_error(values: Any, *, from_query: bool) -> InputError:
    with pytest.raises(InputError) as caught:
        parse_evse_input(values, from_query=from_query)
    return caught.value


# -- meters ----------------------------------------------------------------------------------


def test_spec_get_example() -> None:
    assert parse_meter_input(query(SPEC_GET), from_query=True) == SPEC_METER


def test_spec_post_example() -> None:
    assert parse_meter_input(json.loads(SPEC_POST), from_query=False) == SPEC_METER


def test_get_and_post_give_the_same_payload() -> None:
    assert parse_meter_input(query(SPEC_GET), from_query=True) == parse_meter_input(
        json.loads(SPEC_POST), from_query=False
    )


def test_import_vah_is_import_wh() -> None:
    body = {"import_vah": 777.5, "is_va": True, "power_w": -1200}
    assert parse_meter_input(body, from_query=False) == {
        "import_wh": 777.5,
        "is_va": True,
        "power_w": -1200,
    }
    assert parse_meter_input({"import_vah": "777.5"}, from_query=True) == {"import_wh": 777.5}


def test_import_wh_and_import_vah_together_are_refused() -> None:
    error = meter_error({"import_wh": 1, "import_vah": 2}, from_query=False)
    assert error.status == 400
    assert "import_vah" in error.message


def test_currents_are_whole_milliamps_and_voltages_floats() -> None:
    payload = parse_meter_input({"current": "1.0,2,3", "voltage": "230.5,231,232"}, from_query=True)
    assert payload == {"current": [1, 2, 3], "voltage": [230.5, 231.0, 232.0]}
    assert all(type(c) is int for c in payload["current"])


def test_bracketed_array_in_query_is_accepted() -> None:
    assert parse_meter_input({"current": "[1, 2, 3]"}, from_query=True) == {"current": [1, 2, 3]}


@pytest.mark.parametrize(
    "flag, expected", [("1", True), ("true", True), ("0", False), ("False", False)]
)
def test_is_va_from_query(flag: str, expected: bool) -> None:
    assert parse_meter_input({"is_va": flag}, from_query=True) == {"is_va": expected}


def test_empty_input_is_an_empty_payload() -> None:
    assert parse_meter_input({"cmd": "set_ajax_meter", "dev_id": "M3"}, from_query=True) == {}


# -- EVSEs -----------------------------------------------------------------------------------


def test_evse_get() -> None:
    values = query(
        "cmd=set_ajax_evse&dev_id=E1&model=TestModell&state=3&max_charging_current=16000"
        "&current=6000,6001,6002&total_energy=1234.5&rfid=04AB"
    )
    assert parse_evse_input(values, from_query=True) == {
        "model": "TestModell",
        "state": 3,
        "max_charging_current": 16000,
        "current": [6000, 6001, 6002],
        "total_energy": 1234.5,
        "rfid": "04AB",
    }


def test_evse_post() -> None:
    body = {
        "state": 2,
        "max_charging_current": 32000,
        "current": [0, 0, 0],
        "total_energy": 10,
        "model": "Box",
        "rfid": "",
    }
    assert parse_evse_input(body, from_query=False) == body


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, field",
    [
        ({"import_wh": "abc"}, "import_wh"),
        ({"import_wh": ""}, "import_wh"),
        ({"power_w": "nan"}, "power_w"),
        ({"export_wh": "inf"}, "export_wh"),
        ({"current": "1,x,3"}, "current"),
        ({"voltage": "230,,230"}, "voltage"),
        ({"is_va": "maybe"}, "is_va"),
    ],
)
def test_malformed_query_numbers_name_the_field(values: dict[str, str], field: str) -> None:
    error = meter_error(values, from_query=True)
    assert error.status == 400
    assert field in error.message


@pytest.mark.parametrize("array", ["231,232", "231,232,233,234", "231", ""])
def test_query_array_needs_three_numbers(array: str) -> None:
    error = meter_error({"voltage": array}, from_query=True)
    assert error.status == 400
    assert "voltage" in error.message and "3" in error.message


@pytest.mark.parametrize("array", [[1, 2], [1, 2, 3, 4], []])
def test_json_array_needs_three_numbers(array: list[int]) -> None:
    error = meter_error({"current": array}, from_query=False)
    assert error.status == 400
    assert "current" in error.message and "3" in error.message


@pytest.mark.parametrize(
    "body, field",
    [
        ({"import_wh": "12345"}, "import_wh"),
        ({"power_w": True}, "power_w"),
        ({"power_w": None}, "power_w"),
        ({"current": "10001,10002,10003"}, "current"),
        ({"current": [1, "2", 3]}, "current"),
        ({"voltage": [230, True, 230]}, "voltage"),
        ({"model": 42}, "model"),
        ({"is_va": 1}, "is_va"),
        ({"is_va": "true"}, "is_va"),
    ],
)
def test_wrong_json_types_name_the_field(body: dict[str, Any], field: str) -> None:
    error = meter_error(body, from_query=False)
    assert error.status == 400
    assert field in error.message


@pytest.mark.parametrize(
    "body, field",
    [
        ({"state": "3"}, "state"),
        ({"state": 3.5}, "state"),
        ({"max_charging_current": "16000"}, "max_charging_current"),
        ({"total_energy": [1]}, "total_energy"),
        ({"rfid": 1234}, "rfid"),
    ],
)
def test_wrong_json_types_for_evses(body: dict[str, Any], field: str) -> None:
    error = evse_error(body, from_query=False)
    assert error.status == 400
    assert field in error.message


@pytest.mark.parametrize(
    "values, field",
    [
        ({"state": "0"}, "state"),
        ({"state": "7"}, "state"),
        ({"state": "three"}, "state"),
        ({"max_charging_current": "-1"}, "max_charging_current"),
        ({"total_energy": "-5"}, "total_energy"),
        # Fractions of a mA are rounded (issue 14 item 3); a negative EVSE current is not.
        ({"current": "-1,2,3"}, "current"),
        ({"rfid": "x" * 65}, "rfid"),
    ],
)
def test_out_of_range_evse_values_are_refused(values: dict[str, str], field: str) -> None:
    error = evse_error(values, from_query=True)
    assert error.status == 400
    assert field in error.message


@pytest.mark.parametrize(
    "body, field",
    [
        ({"import_wh": -1}, "import_wh"),
        ({"voltage": [230, 230, 1001]}, "voltage"),
        ({"current": [0, 0, 3_000_000]}, "current"),
        ({"model": "m" * 201}, "model"),
    ],
)
def test_out_of_range_meter_values_are_refused(body: dict[str, Any], field: str) -> None:
    error = meter_error(body, from_query=False)
    assert error.status == 400
    assert field in error.message


def test_unknown_fields_are_named() -> None:
    error = meter_error({"import_wh": 1, "frequency": 50, "phase": 1}, from_query=False)
    assert error.status == 400
    assert "frequency" in error.message and "phase" in error.message


def test_evse_fields_on_a_meter_are_unknown() -> None:
    assert "state" in meter_error({"state": "3"}, from_query=True).message
    assert "import_wh" in evse_error({"import_wh": "3"}, from_query=True).message


def test_cmd_and_dev_id_are_ignored() -> None:
    assert parse_evse_input({"cmd": "set_ajax_evse", "dev_id": "E1"}, from_query=False) == {}


@pytest.mark.parametrize("body", [[1, 2, 3], "text", 42, None, True])
def test_body_must_be_an_object(body: Any) -> None:
    error = meter_error(body, from_query=False)
    assert error.status == 400
    assert "object" in error.message
    assert "object" in evse_error(body, from_query=False).message


def test_a_parameter_given_twice_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        single_values(MultiDict([("state", "1"), ("state", "3")]))
    assert "state" in caught.value.message
    assert single_values(MultiDict([("state", "1")])) == {"state": "1"}


# -- answers ---------------------------------------------------------------------------------


def test_control_answer_is_the_four_control_fields() -> None:
    command = (
        b'{"device_enabled":true,"charging_enabled":false,"paused":true,'
        b'"charging_current":6000,"ts":1700000000.5,"state_ts":1700000000.25}'
    )
    assert control_answer(command) == (
        1700000000.25,
        {
            "device_enabled": True,
            "charging_enabled": False,
            "paused": True,
            "charging_current": 6000,
        },
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b'{"device_enabled":true,"charging_enabled":true,"paused":false,'
        b'"charging_current":6000,"ts":1.0,"state_ts":null}',
        b'{"device_enabled":true,"state_ts":5.0}',
    ],
)
def test_commands_that_answer_no_state(payload: bytes) -> None:
    assert control_answer(payload) is None


# -- what real clients send (docs/research/cfos-clients.md) ---------------------------------


def test_p1_gateway_get_with_decimals_and_power_va() -> None:
    values = query(
        "cmd=set_ajax_meter&dev_id=M3&model=HTTP input&import_wh=12345.00&export_wh=23456.00"
        "&voltage=231.00,232.00,233.00&current=10001.00,10002.00,10003.00&power_va=2300.00&is_va=1"
    )
    assert parse_meter_input(values, from_query=True) == {
        "model": "HTTP input",
        "import_wh": 12345.0,
        "export_wh": 23456.0,
        "voltage": [231.0, 232.0, 233.0],
        "current": [10001, 10002, 10003],
        "power_w": 2300.0,
        "is_va": True,
    }


def test_power_va_and_power_w_together_are_refused() -> None:
    assert "power_va" in meter_error({"power_w": 1, "power_va": 2}, from_query=False).message


def test_soc_is_passed_through_within_range() -> None:
    assert parse_meter_input({"soc": 55.5, "power_w": -300.0}, from_query=False) == {
        "soc": 55.5,
        "power_w": -300.0,
    }
    error = meter_error({"soc": "101"}, from_query=True)
    assert error.status == 400 and "soc" in error.message
    assert "soc" in meter_error({"soc": "full"}, from_query=False).message


def test_fractional_milliamps_are_rounded_half_away_from_zero() -> None:
    evse = parse_evse_input(
        {"current": "1000.5,2000,2999.49", "max_charging_current": "16000.5"}, from_query=True
    )
    assert evse == {"current": [1001, 2000, 2999], "max_charging_current": 16001}
    meter = parse_meter_input({"current": [-1000.5, 0.4, 12.5]}, from_query=False)
    assert meter == {"current": [-1001, 0, 13]}
