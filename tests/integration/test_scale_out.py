"""Scale-out: every part a process of its own, two sites on one broker.

Against one private mosquitto, as separate processes: site A's core (base topic `siteA`,
set_ajax_* forwarded over the bus), two HTTP-input bridge processes sharing site A's requests
through a shared subscription, a Modbus bridge process for site A, and site B's core (base
topic `siteB`, its HTTP-input bridge in-process). Both sites have the same device ids: only
the base topic keeps them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.broker import MosquittoBroker, find_mosquitto
from tests.integration.bridge_process import BridgeProcess
from tests.integration.conftest import ADMIN_PASSWORD, IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration

MAX_TOTAL = 32_000
EVSE_MAX = 16_000
M1 = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}
EVSES = [
    {"dev_type": "evse_ajax", "dev_id": dev_id, "used_phases": 7, "min_charging_cur": 6000}
    for dev_id in ("E1", "E2")
]
CONTROL_KEYS = {"device_enabled", "charging_enabled", "paused", "charging_current"}
# Each EVSE charges at 6 A on three phases: a grid reading of 12 A is the EVSEs alone.
EVSE_DRAW = 6000
CHARGING = {"state": 3, "current": [EVSE_DRAW] * 3, "max_charging_current": EVSE_MAX}
QUIET_GRID = 2 * EVSE_DRAW
# 18 A of other loads: 14 A are left for both EVSEs, less than their 2 x 16 A.
BUSY_GRID = 2 * EVSE_DRAW + 18_000


@dataclass
class Deployment:
    broker: MosquittoBroker
    site_a: ServiceProcess
    site_b: ServiceProcess
    http_bridges: list[BridgeProcess]
    modbus_bridge: BridgeProcess


def _core(
    broker: MosquittoBroker, workdir: Path, base: str, extra: dict[str, str]
) -> ServiceProcess:
    env = {
        "CHARGEBUS_MQTT_URL": broker.url,
        "CHARGEBUS_BASE_TOPIC": base,
        "CHARGEBUS_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CHARGEBUS_MODBUS_BRIDGE": "false",
        "CHARGEBUS_HA_DISCOVERY": "false",
        **extra,
    }
    return ServiceProcess(workdir / f"data-{base}", workdir / f"core-{base}.log", env)


def _bridge(broker: MosquittoBroker, workdir: Path, kind: str, n: int) -> BridgeProcess:
    env = {
        "CHARGEBUS_MQTT_URL": broker.url,
        "CHARGEBUS_BASE_TOPIC": "siteA",
        "CHARGEBUS_HTTP_INPUT_REMOTE": "true",
    }
    return BridgeProcess("http" if kind == "http" else "modbus", workdir / f"{kind}{n}.log", env)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if find_mosquitto() is None:
        pytest.skip("needs the mosquitto binary (scripts/ensure-mosquitto.sh)")
    workdir = tmp_path_factory.mktemp("scale-out")
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker(workdir / "mosquitto"))
        site_a = stack.enter_context(
            _core(broker, workdir, "siteA", {"CHARGEBUS_HTTP_INPUT_REMOTE": "true"})
        )
        site_b = stack.enter_context(_core(broker, workdir, "siteB", {}))
        bridges = [stack.enter_context(_bridge(broker, workdir, "http", n)) for n in (1, 2)]
        modbus = stack.enter_context(_bridge(broker, workdir, "modbus", 1))
        for core in (site_a, site_b):
            core.wait_ready()
        for bridge in bridges:
            bridge.wait_log("HTTP-input bridge")
            bridge.wait_log("ready")
        yield Deployment(broker, site_a, site_b, bridges, modbus)
        # Stopped by signal, each bridge says how many requests it took.
        for bridge in bridges:
            assert bridge.stop() == 0, bridge.log()


@pytest.fixture
async def apis(deployment: Deployment) -> AsyncIterator[tuple[Api, Api]]:
    async with aiohttp.ClientSession() as session:
        site_a = Api(session, deployment.site_a.http_port)
        site_b = Api(session, deployment.site_b.http_port)
        for api in (site_a, site_b):
            await api.set_params(
                {"max_total_current": MAX_TOTAL, **IMMEDIATE, "devices": [M1, *EVSES]}
            )
        yield site_a, site_b


async def push(api: Api, grid_current: int) -> dict[str, int]:
    """One round of measurements for a site → each EVSE's charging_current as answered.
    Retries while the site's bridges have not yet seen the configuration (404)."""
    deadline = time.monotonic() + 20
    while True:
        status, answer = await api.get(
            api.admin,
            cmd="set_ajax_meter",
            dev_id="M1",
            current=f"{grid_current},{grid_current},{grid_current}",
        )
        if status == 200:
            break
        assert status == 404 and time.monotonic() < deadline, (status, answer)
        await asyncio.sleep(0.05)
    currents = {}
    for evse in EVSES:
        status, answer = await api.post(
            CHARGING, api.admin, cmd="set_ajax_evse", dev_id=evse["dev_id"]
        )
        assert status == 200, answer
        assert set(answer) == CONTROL_KEYS
        currents[str(evse["dev_id"])] = answer["charging_current"]
    return currents


async def settle(
    site_a: Api, grid_a: int, site_b: Api, grid_b: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Feeds both sites until two rounds in a row answer the same (the core may ramp)."""
    last: tuple[dict[str, int], dict[str, int]] | None = None
    deadline = time.monotonic() + 30
    while True:
        now = (await push(site_a, grid_a), await push(site_b, grid_b))
        if now == last:
            return now
        assert time.monotonic() < deadline, f"no steady answer: {last} then {now}"
        last = now
        await asyncio.sleep(0.2)


async def test_each_site_balances_only_its_own_devices(
    deployment: Deployment, apis: tuple[Api, Api]
) -> None:
    site_a, site_b = apis

    a, b = await settle(site_a, BUSY_GRID, site_b, QUIET_GRID)
    # Site A's other loads leave 14 A for its two EVSEs; site B's EVSEs get their maximum.
    assert sum(a.values()) <= MAX_TOTAL - (BUSY_GRID - 2 * EVSE_DRAW), a
    assert all(current < EVSE_MAX for current in a.values()), a
    assert b == {"E1": EVSE_MAX, "E2": EVSE_MAX}

    # And the other way round: only the site whose own meter is busy gives way.
    a, b = await settle(site_a, QUIET_GRID, site_b, BUSY_GRID)
    assert a == {"E1": EVSE_MAX, "E2": EVSE_MAX}
    assert all(current < EVSE_MAX for current in b.values()), b

    # Same device ids, separate installations: each core shows its own meter's reading.
    for api, grid in ((site_a, QUIET_GRID), (site_b, BUSY_GRID)):
        info = await api.ok(cmd="get_dev_info")
        meter = next(d for d in info["devices"] if d["dev_id"] == "M1")
        assert [meter[f"current_l{n}"] for n in (1, 2, 3)] == [grid] * 3, meter


async def test_the_modbus_bridge_runs_as_a_process_of_site_a(deployment: Deployment) -> None:
    broker = deployment.broker
    with MqttObserver(broker.host, broker.port, ["siteA/bridges/#", "siteB/bridges/#"]) as seen:
        status = await seen.wait("siteA/bridges/modbus/status", lambda m: m.payload == b"online")
        assert status.retain
        await seen.roundtrip()
        assert not [m for m in seen.messages if m.topic.startswith("siteB/bridges/")]


async def test_shared_bridges_each_take_some_requests_and_every_one_is_answered_once(
    deployment: Deployment, apis: tuple[Api, Api]
) -> None:
    site_a, _ = apis
    await push(site_a, QUIET_GRID)  # the bridges know the devices
    broker = deployment.broker
    total = 40
    with MqttObserver(broker.host, broker.port, ["siteA/rpc/#"]) as seen:
        limit = asyncio.Semaphore(8)

        async def one(n: int) -> tuple[int, Any]:
            async with limit:
                return await site_a.post(
                    CHARGING, site_a.admin, cmd="set_ajax_evse", dev_id=f"E{n % 2 + 1}"
                )

        answers = await asyncio.gather(*(one(n) for n in range(total)))
        await seen.roundtrip()
        requests = [m.json() for m in seen.messages if m.topic == "siteA/rpc/http-input/request"]
        replies = [m.json() for m in seen.messages if m.topic.startswith("siteA/rpc/reply/")]

    assert all(status == 200 and set(answer) == CONTROL_KEYS for status, answer in answers)
    assert len(requests) == total
    # Exactly one reply per request: the shared subscription gave each to one bridge only.
    assert sorted(r["id"] for r in replies) == sorted(r["id"] for r in requests)
    by_bridge = Counter(r["by"] for r in replies)
    names = {f"{socket.gethostname()}-{bridge.pid}" for bridge in deployment.http_bridges}
    assert set(by_bridge) == names, by_bridge
    assert sum(by_bridge.values()) == total


async def test_bridge_processes_serve_a_device_right_after_set_params(
    deployment: Deployment, apis: tuple[Api, Api]
) -> None:
    """What set_params acknowledged holds for the next request through the bridge processes
    too (issue 14 item 1): the core sends the device's type along with each request."""
    site_a, _ = apis
    try:
        for n in range(40):
            dev_id = f"M{n + 10}"
            await site_a.set_params({"devices": [{"dev_type": "meter_ajax", "dev_id": dev_id}]})
            status, answer = await site_a.get(
                site_a.admin, cmd="set_ajax_meter", dev_id=dev_id, power_w=1
            )
            assert (status, answer) == (200, "ok"), dev_id
    finally:
        for n in range(40):
            await site_a.get(site_a.admin, cmd="del_device", dev_id=f"M{n + 10}")
