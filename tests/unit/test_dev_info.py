"""get_dev_info / get_params answer objects: shapes, field names, units."""

from __future__ import annotations

import re
from typing import Any

import pytest

import service
from service.core.allocation import EvseResult
from service.core.dev_info import (
    CFOS_VENDOR_ID,
    READONLY_DEVICE_KEYS,
    READONLY_PARAM_KEYS,
    device_info,
    evse_info,
    get_params_answer,
    meter_info,
    params_info,
    redact_device,
    version_number,
)
from service.core.device_types import DeviceTypeRegistry, builtin_registry
from service.core.models import (
    EvseConfig,
    EvseState,
    Installation,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from service.core.runtime import DeviceRuntime

NOW = 1_700_000_000.0


@pytest.fixture
def registry() -> DeviceTypeRegistry:
    return builtin_registry()


def make_evse(**fields: Any) -> EvseConfig:
    return EvseConfig.model_validate(
        {"dev_type": "evse_ajax", "dev_id": "E1", "name": "garage", **fields}
    )


def make_meter(**fields: Any) -> MeterConfig:
    return MeterConfig.model_validate(
        {"dev_type": "meter_ajax", "dev_id": "M1", "name": "grid", **fields}
    )


def with_state(state: EvseState | MeterState, now: float = NOW) -> DeviceRuntime:
    runtime = DeviceRuntime()
    runtime.record_state(state, now)
    return runtime


# -- params ---------------------------------------------------------------------------------

PARAM_FIELDS = [
    "title", "desc", "max_total_current", "reserve_current", "overdraft_cur",
    "max_total_evse_current", "cons_evse_power", "avail_evse_power", "lb_enabled",
    "disable_policy", "cycle_time", "max_evses", "shareware_mode", "version", "time", "vsn",
    "ocpp_gateway_license_cnt", "ocpp_gateway_licenses_used"
]


def test_params_info_has_section5_fields() -> None:
    info = params_info(Installation(), NOW)
    missing = [k for k in PARAM_FIELDS if k not in info]
    assert missing == []


def test_params_info_version_is_cfos_style() -> None:
    info = params_info(Installation(), NOW)
    match = re.fullmatch(r"1\.(\d+)\.(\d+)", info["version"])
    assert match is not None, info["version"]
    assert int(match.group(1)) >= 2
    assert info["chargebus_version"] == service.__version__
    # vsn.version is a number, as the product answers it (17696120 for 1.14.1656).
    assert info["vsn"]["version"] == version_number(info["version"])
    assert version_number("1.14.1656") == 17696376


def test_get_params_answer_is_flat_with_both_generations_of_names() -> None:
    params = params_info(Installation(), NOW, 1234.4, 5678.6)
    answer = get_params_answer(params, {"evse_ajax": "HTTP input"}, [])
    assert {k: answer[k] for k in params} == params
    assert answer["max_total_power"] == params["max_total_current"]
    assert answer["consumed_evse_power"] == 1234 and answer["remaining_evse_power"] == 5679
    assert answer["ocpp_srv_port"] == 19520 and answer["ocpp_srv_cacert_fn"] == []
    assert answer["dev_meta"] == {"evse_ajax": "HTTP input"} and answer["groups"] == []
    # Settings the params have of their own are never replaced by the defaults.
    assert get_params_answer({**params, "ocpp_srv_port": 9000}, {}, [])["ocpp_srv_port"] == 9000


def test_params_info_values() -> None:
    inst = Installation.model_validate({"params": {"title": "home", "max_total_current": 25_000}})
    info = params_info(inst, NOW + 0.9, cons_evse_power=1234.6)
    assert info["title"] == "home"
    assert info["max_total_current"] == 25_000
    assert info["time"] == int(NOW)
    assert isinstance(info["time"], int)
    assert info["cons_evse_power"] == 1235
    assert info["shareware_mode"] is False
    assert info["vsn"]["vendorid"] == CFOS_VENDOR_ID
    assert info["vsn"]["serialno"] == inst.serialno
    assert info["max_evses"] > 0


@pytest.mark.parametrize(
    ("params", "expected_w"),
    [
        ({"max_total_current": 32_000}, 22_080),  # 32 A x 230 V x 3
        ({"max_total_current": 32_000, "reserve_current": 2000}, 20_700),
        ({"max_total_current": 32_000, "max_total_evse_current": 16_000}, 11_040),
        ({"max_total_current": 1000, "reserve_current": 5000}, 0),
    ],
)
def test_params_info_avail_evse_power(params: dict[str, int], expected_w: int) -> None:
    inst = Installation(params=Params.model_validate(params))
    assert params_info(inst, NOW)["avail_evse_power"] == expected_w


def test_params_info_avail_evse_power_given() -> None:
    assert params_info(Installation(), NOW, avail_evse_power=99.4)["avail_evse_power"] == 99


def test_params_info_extra_keys_are_readonly() -> None:
    info = params_info(Installation(), NOW)
    extra = set(info) - set(Params.model_fields)
    assert extra <= READONLY_PARAM_KEYS


# -- EVSE -----------------------------------------------------------------------------------

EVSE_FIELDS = [
    "dev_type", "device_enabled", "name", "address", "id", "dev_id", "number", "desc",
    "com_err", "com_err_secs", "com_errors", "last_error", "is_evse", "used_phases", "label",
    "min_charging_cur", "max_charging_cur", "prio", "charging_enabled", "cur_charging_power",
    "total_energy", "phases", "state", "model", "paused", "pause_time", "pause_min_time",
    "current_l1", "current_l2", "current_l3", "power_w"
]


def test_evse_info_has_section5_fields(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(), DeviceRuntime(), registry, NOW)
    assert [k for k in EVSE_FIELDS if k not in info] == []
    assert info["is_evse"] is True
    assert info["dev_type_name"] == "HTTP input"


@pytest.mark.parametrize(("enabled", "expected"), [(True, 1), (False, 0)])
def test_device_enabled_is_int(
    registry: DeviceTypeRegistry, enabled: bool, expected: int
) -> None:
    for info in (
        evse_info(make_evse(device_enabled=enabled), DeviceRuntime(), registry, NOW),
        meter_info(make_meter(device_enabled=enabled), DeviceRuntime(), registry, NOW),
    ):
        assert info["device_enabled"] == expected
        assert type(info["device_enabled"]) is int


def test_evse_info_without_state_is_offline(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(), DeviceRuntime(), registry, NOW)
    assert info["state"] == 6
    assert info["power_w"] == 0
    assert info["cur_charging_power"] == 0
    assert info["last_set_charging_cur"] == -1
    assert info["com_err"] is False
    assert info["com_errors"] == 0
    assert info["com_err_secs"] == 0
    assert info["model"] == ""
    assert info["evse"]["cp_state"] == "Offline"


def test_evse_info_power_from_currents(registry: DeviceTypeRegistry) -> None:
    state = EvseState(ts=NOW, state=3, current=[16_000, 16_000, 0], total_energy=5000.4,
                      model="ACME,box,1,2,S1")
    info = evse_info(make_evse(), with_state(state), registry, NOW)
    assert info["power_w"] == 7360  # 2 x 16 A x 230 V
    assert info["cur_charging_power"] == info["power_w"]
    assert (info["current_l1"], info["current_l2"], info["current_l3"]) == (16_000, 16_000, 0)
    assert info["phases"] == 0b011
    assert info["state"] == 3
    assert info["total_energy"] == 5000
    assert info["model"] == "ACME,box,1,2,S1"
    assert info["evse"]["cp_state"] == "Charging"
    assert info["evse"]["charging"] is True
    assert info["evse"]["phases"] == 2


def test_evse_info_reported_power_wins(registry: DeviceTypeRegistry) -> None:
    state = EvseState(ts=NOW, state=3, current=[10_000, 0, 0], power_w=2222.4)
    info = evse_info(make_evse(), with_state(state), registry, NOW)
    assert info["power_w"] == 2222
    assert info["cur_charging_power"] == 2222


def test_evse_info_energy_from_soft_meter(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(), with_state(EvseState(ts=NOW)), registry, NOW,
                     soft_meter_wh=812.6)
    assert info["total_energy"] == 813
    assert info["soft_meter"] == 813


def test_evse_info_command_fields(registry: DeviceTypeRegistry) -> None:
    runtime = with_state(EvseState(ts=NOW, state=2))
    runtime.result = EvseResult(
        device_enabled=True, charging_enabled=False, paused=True, charging_current=6000,
        current=6000, target=6000, pause_time=0, phases=7, grid_phases=7, cur_charging_power=0,
        reason="min_pause", needs_auth=False, com_err=False, user_id=None, overrides=0,
        ov_cur=6000,
    )  # fmt: skip
    info = evse_info(make_evse(), runtime, registry, NOW)
    assert info["charging_enabled"] is False
    assert info["paused"] is True
    assert info["evse"]["current"] == 6000
    assert info["evse"]["charging"] is False
    # A verdict is no command: until one was sent, -1 (issue 14 item 5).
    assert info["last_set_charging_cur"] == -1
    runtime.commanded = 0  # the paused command that went out
    assert evse_info(make_evse(), runtime, registry, NOW)["last_set_charging_cur"] == 0


def test_evse_info_charging_enabled_follows_config_without_command(
    registry: DeviceTypeRegistry,
) -> None:
    info = evse_info(make_evse(device_enabled=False), DeviceRuntime(), registry, NOW)
    assert info["charging_enabled"] is False


def test_evse_info_max_power(registry: DeviceTypeRegistry) -> None:
    assert evse_info(make_evse(max_charging_cur=10_000), DeviceRuntime(), registry,
                     NOW)["max_power"] == 6900
    assert evse_info(make_evse(max_charging_cur="a+b"), DeviceRuntime(), registry,
                     NOW)["max_power"] == 0


def test_com_err_fields_from_runtime(registry: DeviceTypeRegistry) -> None:
    runtime = with_state(EvseState(ts=NOW, com_err=True, last_error="timeout"), now=NOW - 42)
    info = evse_info(make_evse(), runtime, registry, NOW)
    assert info["com_err"] is True
    assert info["com_errors"] == 1
    assert info["com_err_secs"] == 42
    assert info["last_error"] == "timeout"


def test_dev_type_name_absent_for_unregistered_type() -> None:
    info = evse_info(make_evse(dev_type="evse_other"), DeviceRuntime(), DeviceTypeRegistry(),
                     NOW)
    assert "dev_type_name" not in info
    assert info["dev_type"] == "evse_other"


def test_evse_info_config_fields(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(prio=3, users=["u1"], fixed_rfid="AB"), DeviceRuntime(),
                     registry, NOW)
    assert info["prio"] == 3
    assert info["users"] == ["u1"]
    assert info["fixed_rfid"] == "AB"
    assert info["needs_auth"] is True
    assert info["name"] == "garage"


def test_evse_info_keys_are_config_or_readonly(registry: DeviceTypeRegistry) -> None:
    runtime = with_state(EvseState(ts=NOW, state=3, current=[1000, 1000, 1000]))
    info = evse_info(make_evse(), runtime, registry, NOW)
    extra = set(info) - set(EvseConfig.model_fields) - {"soft_meter"}
    assert extra <= READONLY_DEVICE_KEYS, extra - READONLY_DEVICE_KEYS


def test_meter_info_keys_are_config_or_readonly(registry: DeviceTypeRegistry) -> None:
    info = meter_info(make_meter(), with_state(MeterState(ts=NOW)), registry, NOW)
    extra = set(info) - set(MeterConfig.model_fields)
    assert extra <= READONLY_DEVICE_KEYS, extra - READONLY_DEVICE_KEYS


# -- meter ----------------------------------------------------------------------------------

METER_FIELDS = [
    "dev_type", "device_enabled", "name", "address", "id", "dev_id", "number", "desc",
    "com_err", "com_err_secs", "com_errors", "last_error", "is_evse", "is_va", "invert",
    "import", "export", "power_w", "current_l1", "current_l2", "current_l3", "voltage_l1",
    "voltage_l2", "voltage_l3", "role", "model"
]


def test_meter_info_has_section5_fields(registry: DeviceTypeRegistry) -> None:
    info = meter_info(make_meter(), DeviceRuntime(), registry, NOW)
    assert [k for k in METER_FIELDS if k not in info] == []
    assert info["is_evse"] is False
    assert info["state"] == 6


def test_meter_info_values(registry: DeviceTypeRegistry) -> None:
    state = MeterState.model_validate(
        {"ts": NOW, "import": 1000.4, "export": 20.6, "power_w": 1500.2,
         "current": [2000, -1000, 0], "voltage": [231.4, 229.6, 0]}
    )
    info = meter_info(make_meter(role=3), with_state(state), registry, NOW)
    assert (info["import"], info["export"]) == (1000, 21)
    assert info["power_w"] == 1500
    assert (info["current_l1"], info["current_l2"], info["current_l3"]) == (2000, -1000, 0)
    assert (info["voltage_l1"], info["voltage_l2"], info["voltage_l3"]) == (231, 230, 0)
    assert info["role"] == 3
    assert info["state"] == 1


def test_meter_info_inverted_swaps_import_export(registry: DeviceTypeRegistry) -> None:
    state = MeterState.model_validate(
        {"ts": NOW, "import_wh": 1000, "export_wh": 20, "power_w": 1500,
         "current": [2000, -1000, 0]}
    )
    info = meter_info(make_meter(invert=True), with_state(state), registry, NOW)
    assert (info["import"], info["export"]) == (20, 1000)
    assert info["power_w"] == -1500
    assert (info["current_l1"], info["current_l2"]) == (-2000, 1000)
    assert info["invert"] is True


def test_meter_info_power_from_currents_when_not_reported(
    registry: DeviceTypeRegistry,
) -> None:
    state = MeterState(ts=NOW, current=[10_000, 10_000, 10_000])
    plain = meter_info(make_meter(), with_state(state), registry, NOW)
    inverted = meter_info(make_meter(invert=True), with_state(state), registry, NOW)
    assert plain["power_w"] == 6900
    assert inverted["power_w"] == -6900


def test_meter_info_is_va_from_state_or_config(registry: DeviceTypeRegistry) -> None:
    assert meter_info(make_meter(is_va=True), DeviceRuntime(), registry, NOW)["is_va"] is True
    state = MeterState(ts=NOW, is_va=False)
    assert meter_info(make_meter(is_va=True), with_state(state), registry, NOW)["is_va"] is False


# -- redaction and dispatch -----------------------------------------------------------------


def test_redact_device_removes_credentials(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(users=["u1"], fixed_rfid="AB"), DeviceRuntime(), registry, NOW)
    redacted = redact_device(info)
    assert "users" not in redacted
    assert "fixed_rfid" not in redacted
    assert redacted["name"] == "garage"
    assert set(info) - set(redacted) == {"users", "fixed_rfid", "ocpp_password"}
    assert info["users"] == ["u1"]  # the input is left alone


def test_device_info_dispatches(registry: DeviceTypeRegistry) -> None:
    assert device_info(make_evse(), DeviceRuntime(), registry, NOW)["is_evse"] is True
    assert device_info(make_meter(), DeviceRuntime(), registry, NOW)["is_evse"] is False
    assert device_info(make_evse(), DeviceRuntime(), registry, NOW,
                       soft_meter_wh=10)["total_energy"] == 10


def test_redaction_shows_a_user_by_name_never_by_id(registry: DeviceTypeRegistry) -> None:
    info = evse_info(make_evse(), DeviceRuntime(), registry, NOW)
    shown = User(id="6849319649", name="Anna", display=True)
    hidden = User(id="1234567890", name="Bert", display=False)
    users = {u.id: u for u in (shown, hidden)}
    assert redact_device({**info, "user": shown.id}, users)["user"] == "Anna"
    assert redact_device({**info, "user": hidden.id}, users)["user"] == ""
    assert redact_device({**info, "user": "gone"}, users)["user"] == ""
    assert redact_device({**info, "user": shown.id})["user"] == ""
