"""Every way a /cnf request can be wrong: a 4xx with a JSON error, and nothing changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.app import RunningService
from tests.integration.conftest import Api
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

EVSE = {"dev_type": "evse_ajax", "dev_id": "E1", "name": "Garage"}


def _snapshot(service: RunningService) -> tuple[str, str, str]:
    state = service.state
    return (
        state.installation.model_dump_json(),
        state.users.model_dump_json(),
        state.energy.model_dump_json(),
    )


def _disk(service: RunningService) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in service.settings.data_dir.glob("*.json")}


GET_ERRORS: list[tuple[dict[str, Any], int, str]] = [
    ({}, 400, "missing parameter 'cmd'"),
    ({"cmd": "no_such_cmd"}, 400, "unknown cmd"),
    ({"cmd": "del_device"}, 400, "missing parameter 'dev_id'"),
    ({"cmd": "del_device", "dev_id": "E9"}, 404, "unknown device"),
    ({"cmd": "reset_device", "dev_id": "M7"}, 404, "unknown device"),
    ({"cmd": "soft_meter", "dev_id": "E1", "val": "lots"}, 400, "must be a number"),
    ({"cmd": "soft_meter", "dev_id": "E1", "val": "-5"}, 400, "between"),
    ({"cmd": "soft_meter", "dev_id": "E1", "val": "nan"}, 400, "finite"),
    ({"cmd": "accept_license", "acc": "yes"}, 400, "must be an integer"),
    ({"cmd": "accept_license", "acc": "2"}, 400, "between 0 and 1"),
    ({"cmd": "set_diag_logging"}, 400, "missing parameter 'enable'"),
    ({"cmd": "change_admin_pwd", "old_pwd": "test-admin-pw"}, 400, "new_pwd"),
    ({"cmd": "change_admin_pwd", "old_pwd": "test-admin-pw", "new_pwd": "ab"}, 400, "at least"),
    ({"cmd": "change_admin_pwd", "old_pwd": "wrong", "new_pwd": "abcdef"}, 403, "old_pwd"),
    ({"cmd": "get_user", "id": "does-not-exist"}, 404, "unknown user"),
    ({"cmd": "del_user", "id": "nobody"}, 404, "unknown user"),
    ({"cmd": "set_cm_vars", "name": "not an identifier", "val": "1"}, 400, "identifier"),
    ({"cmd": "set_params"}, 405, "needs POST"),
]


@pytest.mark.parametrize(("params", "status", "message"), GET_ERRORS)
async def test_bad_get_requests(
    api: Api, service: RunningService, params: dict[str, Any], status: int, message: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    before, disk = _snapshot(service), _disk(service)
    got_status, answer = await api.get(api.admin, **params)
    assert got_status == status
    assert isinstance(answer, dict) and message in answer["error"]
    assert _snapshot(service) == before
    assert _disk(service) == disk


SET_PARAMS_ERRORS: list[tuple[Any, str]] = [
    ([1, 2], "JSON object"),
    ({}, "nothing to set"),
    ({"max_total_current": "32000"}, "max_total_current"),
    ({"max_total_current": -1}, "max_total_current"),
    ({"max_total_current": 3_000_000}, "max_total_current"),
    ({"cycle_time": 10}, "cycle_time"),
    ({"disable_policy": 2}, "disable_policy"),
    ({"lb_enabled": "yes"}, "lb_enabled"),
    ({"no_such_param": 1}, "no_such_param"),
    ({"params": {"bogus": 1}}, "bogus"),
    ({"params": []}, "params must be a JSON object"),
    ({"devices": {"dev_id": "E1"}}, "devices must be a JSON array"),
    ({"devices": ["E1"]}, "devices[0] must be a JSON object"),
    ({"devices": [{"dev_type": "no_such_type"}]}, "unknown device type"),
    ({"devices": [{"name": "no type"}]}, "dev_type"),
    ({"devices": [{"dev_type": "meter_ajax", "dev_id": "E5"}]}, "ids begin with M"),
    ({"devices": [{"dev_id": "E1", "min_charging_cur": 100_000}]}, "min_charging_cur"),
    ({"devices": [{"dev_id": "E1", "prio": "high"}]}, "prio"),
    ({"devices": [{"dev_id": "E1", "used_phases": 9}]}, "used_phases"),
    ({"devices": [{"dev_id": "E1", "surprise": True}]}, "surprise"),
    ({"devices": [{"dev_id": "E1", "charging_rules": [{"mode": 9}]}]}, "mode"),
    ({"devices": [{"dev_id": "E1", "attach": "M9"}]}, "attach"),
    ({"devices": [{"dev_type": "meter_ajax", "role": 5}]}, "role"),
    ({"devices": [{"dev_id": "E1", "soft_meter": -3}]}, "soft_meter"),
    # All or nothing: the valid first device is not applied when the second is bad.
    (
        {
            "max_total_current": 1000,
            "devices": [{"dev_id": "E1", "prio": 5}, {"dev_id": "E1", "prio": -1}],
        },
        "prio",
    ),
]


@pytest.mark.parametrize(("body", "message"), SET_PARAMS_ERRORS)
async def test_bad_set_params(
    api: Api,
    service: RunningService,
    observer: MqttObserver,
    base_topic: str,
    body: Any,
    message: str,
) -> None:
    await api.set_params({"devices": [EVSE]})
    await observer.wait(f"{base_topic}/devices/E1/config")
    before, disk = _snapshot(service), _disk(service)
    # The load balancer keeps publishing commands and info; configuration must not move.
    config_topic = f"{base_topic}/devices/E1/config"
    configs = len(observer.on(config_topic))
    status, answer = await api.post(body, api.admin, cmd="set_params")
    assert status == 400, answer
    assert message in answer["error"]
    assert _snapshot(service) == before
    assert _disk(service) == disk
    # A probe published after the request arrives after anything the request could have sent.
    await observer.roundtrip()
    assert len(observer.on(config_topic)) == configs


async def test_body_that_is_not_json(api: Api, service: RunningService) -> None:
    before = _snapshot(service)
    status, answer = await api.post(None, api.admin, raw=b"{not json", cmd="set_params")
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = await api.post(None, api.admin, raw=b"", cmd="set_user")
    assert status == 400 and "JSON body" in answer["error"]
    assert _snapshot(service) == before


async def test_oversized_body_is_refused(api: Api, service: RunningService) -> None:
    before = _snapshot(service)
    huge = json.dumps({"title": "x" * (service.settings.max_body_bytes + 10)}).encode()
    status, answer = await api.post(None, api.admin, raw=huge, cmd="set_params")
    assert status == 413 and "too large" in answer["error"]
    assert _snapshot(service) == before


async def test_bad_user_objects(api: Api, service: RunningService) -> None:
    before = _snapshot(service)
    for body, message in [
        ({"id": "1", "name": 5}, "name"),
        ({"id": "1", "rfids": [{"id": ""}]}, "rfids"),
        ({"id": "1", "rfids": [{"id": "1"}, {"id": "1"}]}, "twice"),
        ({"id": "1", "rfids": [{"id": "1", "used_phases": 8}]}, "used_phases"),
        ({"id": 7}, "id"),
        ([], "JSON user object"),
    ]:
        status, answer = await api.post(body, api.admin, cmd="set_user")
        assert status == 400, (body, answer)
        assert message in answer["error"], (body, answer)
    assert _snapshot(service) == before


async def test_rfid_cannot_belong_to_two_users(api: Api) -> None:
    rfid = [{"id": "4711"}]
    assert (await api.post({"id": "1001", "rfids": rfid}, api.admin, cmd="set_user"))[0] == 200
    status, answer = await api.post({"id": "1002", "rfids": rfid}, api.admin, cmd="set_user")
    assert status == 400 and "another user" in answer["error"]
    assert [u["id"] for u in await api.ok(cmd="get_users")] == ["1001"]
