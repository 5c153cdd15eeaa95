"""The /cnf answers in the shapes the spec gives (issue 14 item 5), on the real service."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from service.app import RunningService
from service.store import Store
from tests.broker import find_free_port
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def device(info: Any, dev_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in info["devices"] if d["dev_id"] == dev_id)
    return found


def report(observer: MqttObserver, base: str, dev_id: str, **fields: Any) -> float:
    ts = fields.setdefault("ts", time.time())
    observer.publish(f"{base}/devices/{dev_id}/state", json.dumps(fields))
    return float(ts)


async def test_read_commands_answer_post_as_the_spec_allows(api: Api) -> None:
    for cmd in ("get_dev_info", "get_params", "get_dev_types", "get_new_user_id"):
        status, _ = await api.post(None, cmd=cmd, raw=b"")
        assert status == 200, cmd
    for cmd in ("get_devices", "get_users"):
        status, answer = await api.post(None, api.admin, cmd=cmd, raw=b"")
        assert (status, answer) == (200, []), cmd
    # The command in a form body, as a browser form would send it.
    async with api.session.post(api.url, data={"cmd": "get_dev_info"}) as resp:
        assert resp.status == 200
        assert "devices" in await resp.json()


async def test_cmd_given_twice_is_refused(api: Api) -> None:
    async with api.session.get(f"{api.url}?cmd=get_dev_info&cmd=get_params") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "parameter 'cmd' given more than once"
    # Once in the query and once in a form body: refused too, not one of them guessed.
    async with api.session.post(
        f"{api.url}?cmd=get_dev_info", data={"cmd": "get_params"}
    ) as resp:
        assert resp.status == 400
        assert "more than once" in (await resp.json())["error"]


async def test_an_unreachable_power_brain_is_offline(api: Api) -> None:
    dead = find_free_port()  # nothing listens there
    await api.set_params(
        {
            "devices": [
                {
                    "dev_type": "evse_powerbrain",
                    "dev_id": "E1",
                    "address": f"127.0.0.1:{dead}",
                    "poll_interval": 200,
                }
            ]
        }
    )

    async def failing() -> bool:
        return bool(device(await api.ok(cmd="get_dev_info"), "E1")["com_err"])

    await eventually(failing, "E1 shows its communication error")
    info = device(await api.ok(cmd="get_dev_info"), "E1")
    assert info["state"] == 6, info
    assert info["evse"]["cp_state"] == "Offline"
    assert "127.0.0.1" in info["last_error"]


async def test_accept_license_can_be_read_back(api: Api) -> None:
    params = (await api.ok(cmd="get_dev_info"))["params"]
    assert (params["license_accepted"], params["allow_usage_stats"]) == (False, False)
    assert await api.ok(cmd="accept_license", acc=1, allow_usage_stats=1) == "ok"
    params = (await api.ok(cmd="get_dev_info"))["params"]
    assert (params["license_accepted"], params["allow_usage_stats"]) == (True, True)
    # And a get_params answer that carries them can still be sent back.
    await api.set_params(await api.ok(cmd="get_params"))


async def test_set_cm_vars_tmp_is_not_stored(api: Api, service: RunningService) -> None:
    config_file = service.settings.data_dir / Store.CONFIG

    def stored() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(config_file.read_text())["params"]["cm_vars"]
        return found

    assert await api.ok(cmd="set_cm_vars", name="kept", val="1") == "ok"
    assert await api.ok(cmd="set_cm_vars", name="pv", val="4200", tmp=1) == "ok"
    status, answer = await api.post(
        {"vars": [{"name": "price", "expr": 31}]}, api.admin, cmd="set_cm_vars", tmp=1
    )
    assert (status, answer) == (200, "ok")
    # In force (shown and used), but not on disk.
    shown = (await api.ok(cmd="get_dev_info"))["params"]["cm_vars"]
    assert shown == {"kept": 1.0, "pv": 4200.0, "price": 31.0}
    assert stored() == {"kept": 1.0}
    assert service.state.allocation_input(time.time()).params.cm_vars["pv"] == 4200.0
    # A set without tmp stores it.
    assert await api.ok(cmd="set_cm_vars", name="pv", val="5000") == "ok"
    assert stored() == {"kept": 1.0, "pv": 5000.0}
    assert (await api.ok(cmd="get_dev_info"))["params"]["cm_vars"]["pv"] == 5000.0
    # A bad name is refused with tmp too.
    status, answer = await api.get(api.admin, cmd="set_cm_vars", name="1x", val="1", tmp=1)
    assert status == 400 and "identifier" in answer["error"]


async def test_old_and_new_param_names_with_different_values_are_refused(api: Api) -> None:
    before = (await api.ok(cmd="get_dev_info"))["params"]["max_total_current"]
    for body in (
        {"max_total_current": 20_000, "max_total_power": 25_000},
        {"max_total_power": 25_000, "max_total_current": 20_000},
        {"params": {"reserve_current": 1000, "power_reserve": 2000}},
    ):
        status, answer = await api.post(body, api.admin, cmd="set_params")
        assert status == 400, body
        assert "send one name" in answer["error"]
    assert (await api.ok(cmd="get_dev_info"))["params"]["max_total_current"] == before
    # Both names with one value, as a get_params answer carries them: fine.
    await api.set_params({"max_total_current": 20_000, "max_total_power": 20_000})
    assert (await api.ok(cmd="get_dev_info"))["params"]["max_total_current"] == 20_000


async def test_reset_device_ends_the_session(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    """A reset starts the EVSE over like a new device: its session's user and overrides
    go with its run-time record (docs/api.md, reset_device)."""
    user = {"id": "1001", "name": "Ann", "rfids": [{"id": "4711"}]}
    status, answer = await api.post(user, api.admin, cmd="set_user")
    assert status == 200, answer
    await api.set_params(
        {
            "max_total_current": 32_000,
            **IMMEDIATE,
            "devices": [GRID_METER, {**GARAGE_EVSE, "used_phases": 7, "users": ["1001"]}],
        }
    )
    report(observer, base_topic, "M1", current=[0, 0, 0])
    report(observer, base_topic, "E1", state=2)
    await observer.roundtrip()
    await eventually(
        lambda: service.state.runtime["E1"].state is not None, "the core has E1's state"
    )
    assert await api.ok(cmd="enter_rfid", rfid="4711", dev_id="E1") == "ok"
    assert await api.ok(cmd="override_device", dev_id="E1", flags="C", mamps=8000) == "ok"

    async def in_session() -> bool:
        info = device(await api.ok(cmd="get_dev_info"), "E1")
        return bool(info["user"] == "1001" and info["overrides"] & 1 and info["ov_cur"] == 8000)

    await eventually(in_session, "E1's session shows its user and overrides")
    assert await api.ok(cmd="reset_device", dev_id="E1") == "ok"
    memory = service.state.memory.evse("E1")
    assert memory.auth is None and memory == type(memory)()
    info = device(await api.ok(cmd="get_dev_info"), "E1")
    assert info["user"] == "" and info["overrides"] == 0
    assert info["com_errors"] == 0
    # The configuration stays.
    assert info["users"] == ["1001"] and info["name"] == GARAGE_EVSE["name"]
