"""Nothing acknowledged is lost: the service process restarted, also by SIGKILL mid-burst."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.broker import BrokerAddress
from tests.integration.conftest import basic_auth
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration

PASSWORD = "restart-pw"


def _service(tmp_path: Path, broker: BrokerAddress, base_topic: str) -> ServiceProcess:
    return ServiceProcess(
        tmp_path / "data",
        tmp_path / "service.log",
        {
            "CHARGEBUS_MQTT_URL": broker.url,
            "CHARGEBUS_BASE_TOPIC": base_topic,
            "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
        },
    )


async def _burst(url: str, acked: list[str], stop_after: int) -> None:
    """Creates devices, users and soft-meter readings from 4 concurrent clients; records
    what was acknowledged with "ok"."""
    auth = basic_auth("admin", PASSWORD)
    counter = iter(range(1, 100_000))

    async def worker(session: aiohttp.ClientSession) -> None:
        while len(acked) < stop_after:
            n = next(counter)
            if n % 3 == 0:
                params = {"cmd": "set_user"}
                body: object = {"id": f"{n}", "name": f"user{n}"}
                key = f"user:{n}"
            else:
                params = {"cmd": "set_params"}
                body = {
                    "devices": [
                        {
                            "dev_type": "evse_ajax",
                            "dev_id": f"E{n}",
                            "name": f"dev{n}",
                            "soft_meter": n * 10,
                        }
                    ]
                }
                key = f"dev:{n}"
            async with session.post(url, params=params, json=body, headers=auth) as resp:
                if resp.status == 200 and await resp.json() == "ok":
                    acked.append(key)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(4)))


async def test_sigkill_during_a_burst_loses_no_acknowledged_change(
    tmp_path: Path, mqtt_broker: BrokerAddress, base_topic: str
) -> None:
    acked: list[str] = []
    with _service(tmp_path, mqtt_broker, base_topic) as service:
        await asyncio.to_thread(service.wait_ready)
        burst = asyncio.create_task(_burst(service.url, acked, stop_after=10_000))
        while len(acked) < 60:
            await asyncio.sleep(0.01)
        # Killed while requests are in flight.
        assert await asyncio.to_thread(service.kill, signal.SIGKILL) == -signal.SIGKILL
        with pytest.raises(aiohttp.ClientError):
            await burst
    snapshot = list(acked)
    assert len(snapshot) >= 60

    with _service(tmp_path, mqtt_broker, base_topic) as again:
        await asyncio.to_thread(again.wait_ready)
        info = again.get(cmd="get_dev_info")
        devices = {d["dev_id"]: d for d in info["devices"]}
        status = 200
        for key in snapshot:
            kind, n = key.split(":")
            if kind == "dev":
                assert devices[f"E{n}"]["name"] == f"dev{n}"
                assert devices[f"E{n}"]["total_energy"] == int(n) * 10
        users_req = f"{again.url}?cmd=get_users"
        async with (
            aiohttp.ClientSession() as session,
            session.get(users_req, headers=basic_auth("admin", PASSWORD)) as resp,
        ):
            status = resp.status
            users = {u["id"] for u in await resp.json()}
        assert status == 200
        assert {k.split(":")[1] for k in snapshot if k.startswith("user:")} <= users
    # Nothing half-written was left behind to be mistaken for data.
    assert not list((tmp_path / "data").glob(".*.tmp"))


async def test_restart_republishes_and_will_says_offline(
    tmp_path: Path, mqtt_broker: BrokerAddress, base_topic: str
) -> None:
    with MqttObserver(mqtt_broker.host, mqtt_broker.port, [f"{base_topic}/#"]) as observer:
        with _service(tmp_path, mqtt_broker, base_topic) as service:
            await asyncio.to_thread(service.wait_ready)
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    service.url,
                    params={"cmd": "set_params"},
                    json={"devices": [{"dev_type": "meter_ajax", "dev_id": "M1", "role": 3}]},
                    headers=basic_auth("admin", PASSWORD),
                ) as resp,
            ):
                assert resp.status == 200
            await observer.wait(f"{base_topic}/status", lambda m: m.payload == b"online")
            observer.clear()
            service.kill(signal.SIGKILL)
            # The broker publishes the last will when the killed process's socket closes.
            await observer.wait(f"{base_topic}/status", lambda m: m.payload == b"offline")
        observer.clear()
        with _service(tmp_path, mqtt_broker, base_topic) as again:
            await asyncio.to_thread(again.wait_ready)
            await observer.wait(f"{base_topic}/status", lambda m: m.payload == b"online")
            config = await observer.wait(f"{base_topic}/devices/M1/config")
            assert config.json()["role"] == 3
            again.kill(signal.SIGTERM)
            assert again.wait_exit() == 0


def test_corrupt_config_is_reported_not_replaced(
    tmp_path: Path, mqtt_broker: BrokerAddress, base_topic: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    broken = b'{"params": {"max_total_current": "lots"}}'
    (data / "config.json").write_bytes(broken)
    with _service(tmp_path, mqtt_broker, base_topic) as service:
        assert service.wait_exit() == 2
        log = service.log()
    assert "config.json" in log and "corrupt" in log
    assert (data / "config.json").read_bytes() == broken


def test_truncated_config_is_reported(
    tmp_path: Path, mqtt_broker: BrokerAddress, base_topic: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.json").write_bytes(b'{"users": {"1": {"id": "1", "na')
    with _service(tmp_path, mqtt_broker, base_topic) as service:
        assert service.wait_exit() == 2
        assert "users.json" in service.log()
    assert (data / "users.json").read_bytes().endswith(b'"na')
