"""The /cnf administration commands through a real HTTP port, checked on the real bus too."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.app import RunningService
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, Api, basic_auth
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

EVSE = {**GARAGE_EVSE, "prio": 2}
METER = GRID_METER


async def test_get_dev_info_has_the_spec_shape(api: Api) -> None:
    await api.set_params({"devices": [EVSE]})
    await api.set_params({"devices": [METER]})
    status, info = await api.get(cmd="get_dev_info")
    assert status == 200
    params = info["params"]
    for key in (
        "title",
        "desc",
        "max_total_current",
        "reserve_current",
        "overdraft_cur",
        "max_total_evse_current",
        "cons_evse_power",
        "avail_evse_power",
        "lb_enabled",
        "disable_policy",
        "cycle_time",
        "max_evses",
        "shareware_mode",
        "version",
        "time",
        "vsn",
        "ocpp_gateway_license_cnt",
        "ocpp_gateway_licenses_used",
    ):
        assert key in params, key
    major, minor, _ = params["version"].split(".")
    assert major == "1" and int(minor) >= 2
    assert params["vsn"]["vendorid"] == 52997
    evse, meter = info["devices"]
    assert evse["dev_id"] == "E1" and evse["is_evse"] is True
    assert evse["device_enabled"] == 1
    for key in (
        "com_err",
        "com_err_secs",
        "com_errors",
        "last_error",
        "used_phases",
        "label",
        "min_charging_cur",
        "max_charging_cur",
        "prio",
        "charging_enabled",
        "cur_charging_power",
        "power_w",
        "total_energy",
        "phases",
        "state",
        "model",
        "paused",
        "pause_time",
        "pause_min_time",
        "current_l1",
        "current_l2",
        "current_l3",
    ):
        assert key in evse, key
    assert evse["prio"] == 2 and evse["name"] == "Garage"
    assert meter["is_evse"] is False and meter["role"] == 3
    for key in ("is_va", "invert", "import", "export", "power_w", "current_l1", "voltage_l1"):
        assert key in meter, key


async def test_get_params_lists_device_types(api: Api) -> None:
    status, answer = await api.get(cmd="get_params")
    assert status == 200
    meta = answer["dev_meta"]
    assert meta["evse_ajax"] == "HTTP input" and meta["meter_ajax"] == "HTTP input"
    assert meta["evse_http"] == "HTTP input" and meta["meter_http"] == "HTTP input"
    assert meta["evse_powerbrain"] == "cFos Power Brain"
    # The params flat at the top level, as real installations answer (issue 17).
    assert "max_total_current" in answer and "devices" not in answer


async def test_set_params_changes_params_and_publishes_them(
    api: Api, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"params": {"max_total_current": 40000, "reserve_current": 2000}})
    # Old firmware names are accepted at top level too.
    await api.set_params({"max_total_evse_power": 30000})
    _, info = await api.get(cmd="get_dev_info")
    assert info["params"]["max_total_current"] == 40000
    assert info["params"]["reserve_current"] == 2000
    assert info["params"]["max_total_evse_current"] == 30000
    seen = await observer.wait(
        f"{base_topic}/params", lambda m: m.json()["max_total_evse_current"] == 30000
    )
    assert seen.json()["max_total_current"] == 40000


async def test_device_config_is_retained_on_the_bus(
    api: Api, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    config = await observer.wait(f"{base_topic}/devices/E1/config")
    assert config.retain or config.json()["dev_id"] == "E1"
    assert config.json()["dev_type"] == "evse_ajax"
    info = await observer.wait(f"{base_topic}/devices/E1/info")
    assert info.json()["dev_id"] == "E1"
    # A partial update merges into the existing device.
    await api.set_params({"devices": [{"dev_id": "E1", "max_charging_cur": 20000}]})
    updated = await observer.wait(
        f"{base_topic}/devices/E1/config", lambda m: m.json()["max_charging_cur"] == 20000
    )
    assert updated.json()["name"] == "Garage"


async def test_set_params_assigns_ids_to_new_devices(api: Api) -> None:
    await api.set_params({"devices": [{"dev_type": "evse_http", "name": "A"}]})
    await api.set_params({"devices": [{"dev_type": "evse_http", "name": "B"}]})
    await api.set_params({"devices": [{"dev_type": "meter_http", "name": "C"}]})
    _, info = await api.get(cmd="get_dev_info")
    assert [(d["dev_id"], d["name"]) for d in info["devices"]] == [
        ("E1", "A"),
        ("E2", "B"),
        ("M1", "C"),
    ]


async def test_answers_can_be_sent_back(api: Api) -> None:
    """Clients read a device, change a field and post the whole object back."""
    await api.set_params({"devices": [EVSE]})
    _, answer = await api.get(cmd="get_dev_info")
    device = answer["devices"][0]
    device["label"] = "plug me in"
    await api.set_params({"devices": [device]})
    _, after = await api.get(cmd="get_dev_info")
    assert after["devices"][0]["label"] == "plug me in"
    # And the params of get_params, edited and sent back whole.
    _, params = await api.get(cmd="get_params")
    params["title"] = "renamed"
    await api.set_params(params)
    _, after = await api.get(cmd="get_dev_info")
    assert after["params"]["title"] == "renamed"


async def test_del_device_clears_its_retained_topics(
    api: Api, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    await observer.wait(f"{base_topic}/devices/E1/config")
    assert await api.ok(cmd="del_device", dev_id="E1") == "ok"
    await observer.wait(f"{base_topic}/devices/E1/config", lambda m: m.payload == b"")
    await observer.wait(f"{base_topic}/devices/E1/info", lambda m: m.payload == b"")
    _, info = await api.get(cmd="get_dev_info")
    assert info["devices"] == []


async def test_reset_device_keeps_config_and_forgets_run_time(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    observer.publish(
        f"{base_topic}/devices/E1/state",
        json.dumps(
            {"state": 3, "current": [10000, 10000, 10000], "com_err": True, "last_error": "timeout"}
        ),
    )
    await _until(lambda: service.state.runtime["E1"].com_errors == 1)
    assert await api.ok(cmd="reset_device", dev_id="E1") == "ok"
    _, info = await api.get(cmd="get_dev_info")
    device = info["devices"][0]
    assert device["name"] == "Garage"
    assert device["com_errors"] == 0 and device["state"] == 6


async def test_users_round_trip(api: Api) -> None:
    status, new_id = await api.get(cmd="get_new_user_id")
    assert status == 200 and isinstance(new_id, str) and new_id.isdigit()
    user = {
        "id": new_id,
        "name": "wusel",
        "display": True,
        "dev_ids": ["E1"],
        "rfids": [
            {"id": "4711", "name": "TeSt", "ac_auth": True, "ac_ovch": False, "used_phases": 7}
        ],
        "charging_rules": [],
    }
    status, answer = await api.post(user, api.admin, cmd="set_user")
    assert (status, answer) == (200, "ok")
    assert await api.ok(cmd="get_user", id=new_id) == user
    assert await api.ok(cmd="get_users") == [user]
    # The user's own id authorises changes to the user's own record, but shows no PINs.
    status, answer = await api.post({"id": new_id, "name": "renamed"}, cmd="set_user")
    assert (status, answer) == (200, "ok")
    status, fetched = await api.get(cmd="get_user", id=new_id)
    assert status == 200 and fetched["name"] == "renamed" and "rfids" not in fetched
    assert (await api.ok(cmd="get_user", id=new_id))["rfids"] == user["rfids"]
    assert await api.ok(cmd="del_user", id=new_id) == "ok"
    assert await api.ok(cmd="get_users") == []


async def test_device_users_must_exist(api: Api) -> None:
    status, answer = await api.post(
        {"devices": [{**EVSE, "users": ["123"]}]}, api.admin, cmd="set_params"
    )
    assert status == 400 and "unknown user" in answer["error"]


async def test_accept_license(api: Api, service: RunningService) -> None:
    assert await api.ok(cmd="accept_license", acc=1, allow_usage_stats=0) == "ok"
    assert service.state.installation.license_accepted is True
    assert service.state.installation.allow_usage_stats is False


async def test_change_admin_password(api: Api) -> None:
    status, answer = await api.get(
        cmd="change_admin_pwd", old_pwd="test-admin-pw", new_pwd="n3w-password"
    )
    assert (status, answer) == (200, "ok")
    # The old password no longer works, the new one does.
    status, _ = await api.get(api.admin, cmd="get_users")
    assert status == 401

    status, users = await api.get(basic_auth("admin", "n3w-password"), cmd="get_users")
    assert (status, users) == (200, [])


async def test_diag_logging_writes_a_file_and_stops_by_itself(
    api: Api, service: RunningService
) -> None:
    assert await api.ok(cmd="set_diag_logging", enable=1) == "ok"
    await api.get(cmd="get_dev_info")
    diag_dir = service.settings.data_dir / "diag"
    files = list(diag_dir.glob("diag-*.log"))
    assert len(files) == 1
    # The fixture sets the automatic stop to 1 s (the product's 5 minutes is the default).
    await _until(lambda: "diagnostic logging stopped" in files[0].read_text(), timeout=5)
    size = files[0].stat().st_size
    await api.get(cmd="get_dev_info")
    assert files[0].stat().st_size == size


async def test_soft_meter_reads_and_sets(api: Api) -> None:
    await api.set_params({"devices": [EVSE]})
    status, old = await api.get(cmd="soft_meter", dev_id="E1")
    assert (status, old) == (200, 0)
    assert await api.ok(cmd="soft_meter", dev_id="E1", val=1234) == 0
    assert await api.ok(cmd="soft_meter", dev_id="E1", val=2000) == 1234
    _, info = await api.get(cmd="get_dev_info")
    assert info["devices"][0]["total_energy"] == 2000


async def test_set_cm_vars(api: Api, service: RunningService) -> None:
    assert await api.ok(cmd="set_cm_vars", name="solar_boost", val="2.5") == "ok"
    assert service.state.installation.params.cm_vars == {"solar_boost": 2.5}


async def test_post_form_parameters_work_like_query(api: Api) -> None:
    async with api.session.post(api.url, data={"cmd": "set_params"}) as resp:
        assert resp.status == 401  # set_params needs the admin: the form's cmd was read
    async with api.session.post(
        api.url,
        data={"cmd": "change_admin_pwd", "old_pwd": "test-admin-pw", "new_pwd": "via-form-1"},
    ) as resp:
        assert resp.status == 200 and await resp.json() == "ok"


async def _until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
