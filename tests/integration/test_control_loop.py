"""The load balancer through a real broker: states in on the topics, commands out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.app import RunningService, running_service
from service.settings import Settings
from tests.integration.conftest import ADMIN_PASSWORD, IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver, Seen

pytestmark = pytest.mark.integration

GRID = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}
E1 = {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7, "min_charging_cur": 6000}
E2 = {"dev_type": "evse_ajax", "dev_id": "E2", "used_phases": 7, "min_charging_cur": 6000}


def state(observer: MqttObserver, base: str, dev_id: str, **fields: Any) -> float:
    ts = fields.setdefault("ts", time.time())
    observer.publish(f"{base}/devices/{dev_id}/state", json.dumps(fields))
    return float(ts)


def answers(ts: float) -> Callable[[Seen], bool]:
    return lambda m: bool(m.json()["state_ts"] == ts)


def current(message: Seen) -> int:
    return int(message.json()["charging_current"])


async def setup_site(api: Api, **params: Any) -> None:
    await api.set_params(
        {
            "max_total_current": 32000,
            "cycle_time": 500,
            **IMMEDIATE,
            **params,
            "devices": [GRID, E1, E2],
        }
    )


async def test_overload_on_the_grid_meter_reduces_the_commands(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await setup_site(api)
    state(observer, base_topic, "E1", state=3, current=[16000] * 3)
    state(observer, base_topic, "E2", state=3, current=[16000] * 3)
    # 32 A on the grid of which the EVSEs draw 32: no other load, 16 A each.
    ts = state(observer, base_topic, "M1", current=[32000] * 3)
    command = f"{base_topic}/devices/E1/command"
    before = await observer.wait(command, lambda m: current(m) == 16000)
    assert before.json()["charging_enabled"] is True and before.json()["paused"] is False

    # 10 A more on every phase that is not an EVSE: 22 A left to share.
    ts = state(observer, base_topic, "M1", current=[42000] * 3)
    after = {}
    for dev_id in ("E1", "E2"):
        seen = await observer.wait(
            f"{base_topic}/devices/{dev_id}/command",
            lambda m: m.json()["ts"] >= ts and current(m) < 16000,
        )
        after[dev_id] = current(seen)
    assert sum(after.values()) <= 22000
    assert all(6000 <= c <= 11000 for c in after.values()), after
    info = await observer.wait(
        f"{base_topic}/devices/E1/info", lambda m: m.json()["lreason"] == "limited"
    )
    assert info.json()["charging_current"] == after["E1"]


async def test_stale_grid_meter_falls_back_to_minimum_currents(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await setup_site(api, cycle_time=200, stale_time=800)
    command = f"{base_topic}/devices/E1/command"
    # The wallboxes report, then the meter reads what they draw: an EVSE report newer than
    # the grid reading is not subtracted from it (pairing).
    state(observer, base_topic, "E1", state=3, current=[8000] * 3)
    state(observer, base_topic, "E2", state=3, current=[8000] * 3)
    state(observer, base_topic, "M1", current=[16000] * 3)
    await observer.wait(command, lambda m: current(m) == 16000)
    # From now on the EVSEs keep reporting, the grid meter says nothing more.
    deadline = time.monotonic() + 10
    fallback = None
    while fallback is None and time.monotonic() < deadline:
        state(observer, base_topic, "E1", state=3, current=[8000] * 3)
        state(observer, base_topic, "E2", state=3, current=[8000] * 3)
        await asyncio.sleep(0.2)
        latest = observer.latest(command)
        if latest is not None and current(latest) == 6000:
            fallback = latest
    assert fallback is not None, "the core kept trusting a stale grid meter"
    e2 = observer.latest(f"{base_topic}/devices/E2/command")
    assert e2 is not None and current(e2) == 6000
    meter = await observer.wait(f"{base_topic}/devices/M1/info", lambda m: m.json()["com_err"])
    assert meter.json()["com_errors"] == 1 and "no data" in meter.json()["last_error"]
    # The meter is back: the budget is trusted again.
    state(observer, base_topic, "M1", current=[16000] * 3)
    since = fallback.json()["ts"]
    await observer.wait(command, lambda m: current(m) == 16000 and m.json()["ts"] > since)


async def test_every_state_gets_its_command_and_commands_refresh_each_cycle(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await setup_site(api, cycle_time=300, stale_time=60_000)
    state(observer, base_topic, "M1", current=[0, 0, 0])
    command = f"{base_topic}/devices/E1/command"
    # Unchanged state twice: the answer to each carries that state's ts.
    for _ in range(2):
        ts = state(observer, base_topic, "E1", state=2)
        answer = await observer.wait(command, answers(ts))
        assert answer.json()["charging_current"] == 16000
    # No news at all: the command is still sent again every cycle for the bridges' watchdogs.
    seen = len(observer.on(command))
    await observer.wait(command, lambda m: len(observer.on(command)) >= seen + 3, timeout=5)


async def test_rfid_authorises_and_override_limits(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    user = {"id": "1001", "name": "Ann", "rfids": [{"id": "4711"}]}
    status, _ = await api.post(user, api.admin, cmd="set_user")
    assert status == 200
    await api.set_params(
        {"cycle_time": 500, **IMMEDIATE, "devices": [GRID, {**E1, "users": ["1001"]}]}
    )
    command = f"{base_topic}/devices/E1/command"
    state(observer, base_topic, "M1", current=[0, 0, 0])
    ts = state(observer, base_topic, "E1", state=2)
    waiting = await observer.wait(command, answers(ts))
    assert waiting.json()["charging_enabled"] is False
    _, info = await api.get(cmd="get_dev_info")
    assert info["auth_cnt"] == 1

    status, answer = await api.get(cmd="enter_rfid", rfid="0000")
    assert status == 403 and "refused" in answer["error"]
    status, answer = await api.get(cmd="enter_rfid", rfid="4711")
    assert (status, answer) == (200, "ok")
    await observer.wait(command, lambda m: m.json()["charging_enabled"] and current(m) == 16000)

    # Home Assistant sends mamps as a float string.
    assert await api.ok(cmd="override_device", dev_id="E1", mamps="8000.0") == "ok"
    await observer.wait(command, lambda m: current(m) == 8000)
    _, info = await api.get(cmd="get_dev_info")
    assert info["devices"][1]["ov_cur"] == 8000

    # Without the admin password only the user's RFID may switch charging off, and only C/c/U/u.
    status, _ = await api.get(cmd="override_device", dev_id="E1", flags="C")
    assert status == 401
    status, _ = await api.get(cmd="override_device", dev_id="E1", flags="E", rfid="4711")
    assert status == 403
    status, _ = await api.get(cmd="override_device", dev_id="E1", flags="C", rfid="9999")
    assert status == 403
    status, answer = await api.get(cmd="override_device", dev_id="E1", flags="C", rfid="4711")
    assert (status, answer) == (200, "ok")
    await observer.wait(command, lambda m: m.json()["charging_enabled"] is False)
    status, _ = await api.get(api.admin, cmd="override_device", dev_id="E1", flags="X")
    assert status == 400

    # The vehicle leaves: authorisation and overrides end with the session.
    ts = state(observer, base_topic, "E1", state=1)
    await observer.wait(command, answers(ts))
    ts = state(observer, base_topic, "E1", state=2)
    again = await observer.wait(command, answers(ts))
    assert again.json()["charging_enabled"] is False


async def test_commands_come_back_after_a_broker_restart(
    restartable_broker: Any, tmp_path: Path, base_topic: str
) -> None:
    broker = restartable_broker
    settings = Settings(
        mqtt_url=broker.url,
        http_port=0,
        data_dir=tmp_path / "data",
        base_topic=base_topic,
        admin_password=ADMIN_PASSWORD,
    )
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        await running.state.set_params({"cycle_time": 300, **IMMEDIATE, "devices": [GRID, E1]})
        with MqttObserver(broker.host, broker.port, [f"{base_topic}/#"]) as seen:
            state(seen, base_topic, "E1", state=3, current=[6000] * 3)
            await seen.wait(f"{base_topic}/devices/E1/command")
        runs = running.control.stats.runs
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)  # empty: retained messages are gone
        await running.bus.wait_connected(20)
        with MqttObserver(broker.host, broker.port, [f"{base_topic}/#"]) as fresh:
            command = await fresh.wait(f"{base_topic}/devices/E1/command", timeout=20)
            assert "charging_current" in command.json()
            # Retained: a bridge that (re)subscribes gets the command at once.
            late = MqttObserver(broker.host, broker.port, [f"{base_topic}/devices/E1/command"])
            with late:
                assert (await late.wait(f"{base_topic}/devices/E1/command")).retain
            ts = state(fresh, base_topic, "E1", state=3, current=[6000] * 3)
            await fresh.wait(f"{base_topic}/devices/E1/command", answers(ts))
        assert running.control.stats.runs > runs
        assert running.control.stats.failures == 0
