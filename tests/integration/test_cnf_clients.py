"""What existing clients of the cFos product rely on beyond the documented API
(docs/research/cfos-clients.md): Home Assistant, ioBroker, py-powerbrain, EDOMI, scripts."""

from __future__ import annotations

import pytest

from service.app import RunningService
from tests.integration.conftest import ADMIN_PASSWORD, Api, basic_auth

pytestmark = pytest.mark.integration

EVSE = {"dev_type": "evse_powerbrain", "dev_id": "E1", "address": "evse", "id": 1}


async def test_home_assistant_checks_credentials_on_the_ui_page(api: Api) -> None:
    url = api.url.replace("/cnf", "/ui/en/sim.htm")
    async with api.session.get(url, headers=basic_auth("admin", ADMIN_PASSWORD)) as resp:
        assert resp.status == 200
    async with api.session.get(url, headers=basic_auth("admin", "wrong")) as resp:
        assert resp.status == 401
    async with api.session.get(url) as resp:
        assert resp.status == 401


async def test_entity_ids_can_be_built_from_serial_and_version(api: Api) -> None:
    """HA: unique_id = f"{vsn.serialno}_{dev_id}_{name}", version parsed as float(maj.min)."""
    await api.set_params({"devices": [EVSE]})
    status, info = await api.get(cmd="get_dev_info")
    assert status == 200
    params = info["params"]
    assert params["title"]
    serial = params["vsn"]["serialno"]
    assert isinstance(serial, str) and serial
    major, minor = params["version"].split(".")[:2]
    assert float(f"{major}.{minor}") >= 1.2
    assert info["auth_cnt"] == 0 and info["loadmgr_disabled"] is False
    device = info["devices"][0]
    assert device["name"] == "E1"  # a device without a name gets its id as name
    assert isinstance(device["charging_enabled"], bool)  # a JSON boolean (Cobot's schema)
    for key in ("lreason", "overrides", "ov_cur", "needs_auth", "evse"):
        assert key in device, key
    for key in (
        "cp_state",
        "pp_state",
        "charging",
        "current",
        "enabled",
        "set_current",
        "phases",
        "pause_reason",
        "pause_time",
    ):
        assert key in device["evse"], key
    _, again = await api.get(cmd="get_dev_info")
    assert again["params"]["vsn"]["serialno"] == serial


async def test_get_dev_types_is_a_flat_object(api: Api) -> None:
    status, types = await api.get(cmd="get_dev_types")
    assert status == 200
    assert types["evse_powerbrain"] == "cFos Power Brain"
    assert types["meter_ajax"] == "HTTP input"
    assert all(isinstance(v, str) for v in types.values())


async def test_get_devices_and_set_device(api: Api) -> None:
    await api.set_params({"devices": [EVSE]})
    devices = await api.ok(cmd="get_devices")
    assert isinstance(devices, list) and devices[0]["dev_id"] == "E1"
    device = devices[0] | {"max_charging_cur": 13000}
    status, answer = await api.post({"devices": [device]}, api.admin, cmd="set_device")
    assert (status, answer) == (200, "ok")
    _, info = await api.get(cmd="get_dev_info")
    assert info["devices"][0]["max_charging_cur"] == 13000
    status, answer = await api.post({"title": "x"}, api.admin, cmd="set_device")
    assert status == 400


async def test_set_cm_vars_by_get_and_post(api: Api, service: RunningService) -> None:
    assert await api.ok(cmd="set_cm_vars", name="boost", val="2.5") == "ok"
    status, answer = await api.post(
        {"vars": [{"name": "var1", "expr": 123}, {"name": "v2", "expr": "boost * 2"}]},
        api.admin,
        cmd="set_cm_vars",
        tmp=1,
    )
    assert (status, answer) == (200, "ok")
    assert service.state.params().cm_vars == {
        "boost": 2.5,
        "var1": 123.0,
        "v2": "boost * 2",
    }
    # tmp=1: in force, not stored (issue 14 item 5).
    assert service.state.installation.params.cm_vars == {"boost": 2.5}
    status, answer = await api.post({"vars": [{"expr": 1}]}, api.admin, cmd="set_cm_vars")
    assert status == 400 and "name" in answer["error"]


async def test_set_params_accepts_the_products_imbalance_and_pause_names(api: Api) -> None:
    await api.set_params({"max_imbalance": 16000, "min_pause_time": 120})
    await api.set_params({"devices": [{"dev_type": "evse_ajax"}]})
    _, info = await api.get(cmd="get_dev_info")
    assert info["params"]["max_imbalance"] == 16000
    assert info["devices"][0]["pause_min_time"] == 120


async def test_credentials_are_accepted_on_open_commands(api: Api) -> None:
    """ioBroker and EDOMI send basic auth on every read."""
    status, _ = await api.get(api.admin, cmd="get_dev_info")
    assert status == 200
