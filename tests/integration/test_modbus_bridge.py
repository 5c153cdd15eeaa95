"""The Modbus bridge against the simulated Power Brain over real TCP, with chargebus on a real
mosquitto: poll → state on the bus → command → register written → read back; cmd=modbus as
the spec's examples answer; a simulator killed and restarted; a broker restart; the
fail-safe when the core stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridges.modbus.runner import modbus_bridge
from bridges.sim.car import Car
from bridges.sim.server import SimSite, simulated_site
from service.app import running_service
from service.settings import MqttTarget, Settings
from tests.broker import MosquittoBroker, find_free_port
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def device(info: Any, dev_id: str) -> dict[str, Any]:
    return next(d for d in info["devices"] if d["dev_id"] == dev_id)


def powerbrain(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "dev_type": "evse_powerbrain",
        "dev_id": "E1",
        "address": f"{HOST}:{port}",
        "id": 1,
        "poll_interval": 200,
        "pause_min_time": 0,
        **extra,
    }


@pytest.fixture
async def site() -> AsyncIterator[tuple[SimSite, int]]:
    port = find_free_port()
    async with simulated_site(HOST, [port], None, cars=[Car(phases=3)], tick_s=0.1) as sim:
        yield sim, port


async def test_poll_state_command_register_and_read_back(
    site: tuple[SimSite, int], api: Api, observer: MqttObserver, base_topic: str
) -> None:
    sim, port = site
    pb = sim.powerbrains[0]
    await api.set_params({"max_total_current": 10_000, **IMMEDIATE, "devices": [powerbrain(port)]})
    # Polled: the plugged car shows as state 2 on the bus and in get_dev_info.
    state = await observer.wait(
        f"{base_topic}/devices/E1/state", lambda m: m.json().get("state", 0) >= 2
    )
    assert state.json()["model"].startswith("cFos,Power Brain,")

    async def charging() -> bool:
        info = device(await api.ok(cmd="get_dev_info"), "E1")
        return bool(info["state"] == 3 and info["current_l1"] > 0)

    await eventually(charging, "E1 charges")
    # The core's command reached the wallbox's registers: 10 A limit, charging enabled.
    command = (
        await observer.wait(
            f"{base_topic}/devices/E1/command", lambda m: m.json()["charging_current"] > 0
        )
    ).json()
    assert pb.charging_enabled
    assert pb.limit_ma == 10_000 == command["charging_current"]
    # Read back: the state reports what the wallbox applies.
    applied = await observer.wait(
        f"{base_topic}/devices/E1/state", lambda m: m.json().get("applied_current") == 10_000
    )
    assert applied.json()["applied_enabled"] is True
    assert applied.json()["failsafe"] is False

    # A smaller fuse: the command and the register follow.
    await api.set_params({"max_total_current": 7_000})
    await eventually(
        lambda: pb.limit_ma == 7_000, "the register follows the new limit"
    )


async def test_cmd_modbus_answers_the_spec_examples(
    site: tuple[SimSite, int], api: Api
) -> None:
    _, port = site
    await api.set_params({"devices": [powerbrain(port)]})

    async def answer(**query: Any) -> tuple[int, Any]:
        return await api.get(api.admin, cmd="modbus", **query)

    async def bridge_knows_device() -> bool:
        status, _ = await answer(device="meter1", read="8002")
        return status == 200

    await eventually(bridge_knows_device, "the bridge has learned E1")
    assert await answer(device="meter1", read="8002") == (200, 1)
    assert await answer(device="meter2", read="8062d") == (200, -1)
    assert await answer(device="meter1", read="8016s") == (200, "cFos Power Brain")
    assert await answer(device="meter1", read="8002", count=10) == (
        200,
        [1, 257, 256, 0, 256, 0, 26211, 26165, 11619, 13366],
    )
    status, everything = await answer(device="meter2", read="all")
    assert status == 200
    spec_example = {
        "8000d": -821755904, "8002": 1, "8003": 257, "8004d": 16777216, "8006": 256,
        "8007": 0, "8008s": "fcf5-c46d-310c", "8016s": "cFos Power Brain", "8041": 1,
        "8042d": 1000, "8044": 1, "8045": 230, "8046": 230, "8047": 230, "8050q": 0,
        "8054d": 0, "8056": 0, "8057": 0, "8058q": 0, "8062d": -1, "8064d": 0, "8066d": 0,
        "8068d": 0, "8070": 0, "8071": 0, "8120d": 0,
    }  # fmt: skip
    # 8040 is the Modbus id the meter answers at (3 here; the spec's device said 41).
    assert {k: v for k, v in everything.items() if k != "8040"} == spec_example
    assert everything["8040"] == 3
    assert await answer(device="evse", write="8044", value=7) == (200, "ok")
    assert await answer(device="evse", read="8044") == (200, 7)
    assert await answer(device="evse", write="8050q", value=1) == (200, "ok")
    assert await answer(device="evse", write="8044d", value=1) == (400, "bad modbus register size")
    assert await answer(device="evse", write="8044", values="[7,230,230,230 ]") == (200, "ok")
    # By device id too, and writes need the admin.
    assert await answer(device="E1", read="8002") == (200, 1)
    status, refused = await api.get(None, cmd="modbus", device="evse", write="8044", value=1)
    assert status == 401 and "admin" in refused["error"]
    status, unknown = await answer(device="E9", read="8002")
    assert status == 404 and "E9" in unknown["error"]


async def test_a_killed_simulator_gives_com_err_and_recovers(api: Api) -> None:
    port = find_free_port()
    async with simulated_site(HOST, [port], None, cars=[Car()], tick_s=0.1):
        await api.set_params({"devices": [powerbrain(port)]})

        async def state_is(value: int) -> bool:
            info = device(await api.ok(cmd="get_dev_info"), "E1")
            return bool(info["state"] == value and not info["com_err"])

        await eventually(lambda: state_is(2), "E1 polled")
    # The simulator is gone: the bridge says com_err, the core shows it.

    async def failing() -> bool:
        info = device(await api.ok(cmd="get_dev_info"), "E1")
        return bool(info["com_err"] and info["last_error"])

    await eventually(failing, "E1 in com_err")
    errors = device(await api.ok(cmd="get_dev_info"), "E1")["com_errors"]
    assert errors >= 1
    # Back on the same port: the same bridge reconnects by itself.
    async with simulated_site(HOST, [port], None, cars=[Car()], tick_s=0.1):
        await eventually(lambda: state_is(2), "E1 polled again", timeout=30)


async def test_the_bridge_survives_a_broker_restart(
    restartable_broker: MosquittoBroker, settings: Settings, base_topic: str
) -> None:
    port = find_free_port()
    settings = settings.model_copy(update={"mqtt_url": restartable_broker.url})
    async with (
        simulated_site(HOST, [port], None, cars=[Car()], tick_s=0.1),
        running_service(settings) as service,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, service.http_port)
        await api.set_params({"devices": [powerbrain(port)]})
        with MqttObserver(
            restartable_broker.host, restartable_broker.port, [f"{base_topic}/#"]
        ) as seen:
            await seen.wait(f"{base_topic}/devices/E1/state", timeout=15)
        restartable_broker.restart()
        # A new subscriber after the restart still gets fresh states from the same bridge.
        with MqttObserver(
            restartable_broker.host, restartable_broker.port, [f"{base_topic}/#"]
        ) as seen:
            after = time.time()
            fresh = await seen.wait(
                f"{base_topic}/devices/E1/state",
                lambda m: m.json()["ts"] > after,
                timeout=30,
            )
            assert fresh.json()["state"] in (2, 3)  # plugged in; charging once commanded


async def test_failsafe_when_the_core_stops(
    settings: Settings, mqtt_broker: Any, base_topic: str
) -> None:
    port = find_free_port()
    target = MqttTarget.from_url(mqtt_broker.url)
    core_settings = settings.model_copy(update={"modbus_bridge": False})
    async with (
        simulated_site(HOST, [port], None, cars=[Car()], tick_s=0.1) as sim,
        modbus_bridge(settings, target) as bridge,
    ):
        pb = sim.powerbrains[0]
        with MqttObserver(mqtt_broker.host, mqtt_broker.port, [f"{base_topic}/#"]) as seen:
            async with running_service(core_settings) as service, aiohttp.ClientSession() as s:
                api = Api(s, service.http_port)
                await api.set_params(
                    {
                        "max_total_current": 12_000,
                        **IMMEDIATE,
                        "devices": [powerbrain(port, failsafe_current=8_000)],
                    }
                )
                await eventually(
                    lambda: pb.limit_ma == 12_000 and pb.charging_enabled,
                    "the core's 12 A reach the wallbox",
                )
            # The core said goodbye ("offline"): the bridge applies the fail-safe on its own.
            await eventually(
                lambda: pb.limit_ma == 8_000, "the fail-safe current applies"
            )
            state = await seen.wait(
                f"{base_topic}/devices/E1/state", lambda m: bool(m.json().get("failsafe"))
            )
            assert json.loads(state.payload)["applied_current"] == 8_000
        assert bridge.workers["E1"].failsafe


async def test_a_dead_endpoint_does_not_delay_the_others(
    api: Api, observer: MqttObserver, base_topic: str
) -> None:
    live_port, dead_port = find_free_port(), find_free_port()
    async with simulated_site(HOST, [live_port], None, cars=[Car()], tick_s=0.1):
        await api.set_params(
            {
                "devices": [
                    powerbrain(live_port),
                    # Nothing listens there: every connect fails.
                    {**powerbrain(dead_port), "dev_id": "E2"},
                ]
            }
        )
        await observer.wait(f"{base_topic}/devices/E2/state", lambda m: m.json()["com_err"])
        start = time.time()
        await asyncio.sleep(3)
        polls = [
            m.json()["ts"]
            for m in observer.on(f"{base_topic}/devices/E1/state")
            if m.json()["ts"] >= start
        ]
    # E1 keeps its 200 ms period (15 polls in 3 s) while E2 fails beside it.
    assert len(polls) >= 6, polls
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert max(gaps) < 1.5, gaps


async def test_a_generic_meter_reads_the_registers_its_configuration_names(
    site: tuple[SimSite, int], api: Api, observer: MqttObserver, base_topic: str
) -> None:
    sim, port = site
    await api.set_params(
        {
            "max_total_current": 16_000,
            "devices": [
                powerbrain(port),
                {
                    # The Power Brain's own meter at Modbus id 2, read as a generic meter:
                    # energy 8058 (i64, Wh), currents 8064.. (i32, 0.1 A -> mA x 100).
                    "dev_type": "meter_modbus_generic",
                    "dev_id": "M2",
                    "address": f"{HOST}:{port}",
                    "id": 2,
                    "poll_interval": 200,
                    "modbus_registers": {
                        "import_wh": {"address": 8058, "kind": "i64"},
                        "current_l1": {"address": 8064, "kind": "i32", "scale": 100},
                        "voltage_l1": {"address": 8045, "kind": "u16"},
                    },
                },
            ],
        }
    )
    state = await observer.wait(
        f"{base_topic}/devices/M2/state",
        lambda m: m.json().get("current", [0])[0] > 0,
        timeout=20,
    )
    reading = state.json()
    assert reading["voltage"][0] == 230
    # Meter 1 measures the wallbox's draw: what the car takes on L1, in mA.
    assert abs(reading["current"][0] - sim.powerbrains[0].evse.get_int("current_l1") * 100) <= 2000
    status, refused = await api.post(
        {"devices": [{"dev_id": "M2", "modbus_registers": {"soc": {"address": 1}}}]},
        api.admin,
        cmd="set_params",
    )
    assert status == 400 and "modbus_registers" in refused["error"]
