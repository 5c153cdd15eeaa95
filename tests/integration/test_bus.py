"""The MQTT side of the backbone, against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from service.app import RunningService, running_service
from service.bus import BusError, MqttBus
from service.settings import MqttTarget, Settings
from tests.broker import BrokerAddress
from tests.integration.conftest import ADMIN_PASSWORD, Api
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

EVSE = {"dev_type": "evse_ajax", "dev_id": "E1", "name": "Garage"}
METER = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}


async def until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_status_is_online_and_offline_after_stop(
    settings: Settings, observer: MqttObserver, base_topic: str
) -> None:
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        seen = await observer.wait(f"{base_topic}/status")
        assert seen.payload == b"online"
        params = await observer.wait(f"{base_topic}/params")
        assert params.json()["max_total_current"] == 32000
    offline = await observer.wait(f"{base_topic}/status", lambda m: m.payload == b"offline")
    assert offline.payload == b"offline"


async def test_states_feed_device_info(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    await api.set_params({"devices": [METER]})
    observer.publish(
        f"{base_topic}/devices/M1/state",
        json.dumps(
            {
                "ts": 1700000000.5,
                "import_wh": 12345,
                "export_wh": 10,
                "power_w": 6900,
                "current": [10001, 10002, 10003],
                "voltage": [231, 232, 233],
                "model": "TestModell",
            }
        ),
    )
    observer.publish(
        f"{base_topic}/devices/E1/state",
        json.dumps({"state": 3, "current": [16000, 16000, 0], "total_energy": 777, "model": "Box"}),
    )
    info = await observer.wait(
        f"{base_topic}/devices/M1/info", lambda m: m.json()["import"] == 12345
    )
    meter = info.json()
    assert meter["current_l1"] == 10001 and meter["voltage_l3"] == 233
    assert meter["power_w"] == 6900 and meter["model"] == "TestModell"
    # The info of the run that used the state: one published between the state's arrival and
    # that run shows the state with the verdict before it (lost, phases assumed).
    evse = (
        await observer.wait(
            f"{base_topic}/devices/E1/info",
            lambda m: m.json()["state"] == 3 and m.json()["lreason"] != "com_err",
        )
    ).json()
    assert evse["current_l1"] == 16000 and evse["phases"] == 0b011
    assert evse["total_energy"] == 777
    _, dev_info = await api.get(cmd="get_dev_info")
    assert dev_info["devices"][1]["export"] == 10


@pytest.mark.parametrize(
    ("dev_id", "payload", "reason"),
    [
        ("M1", b"not json", "not JSON"),
        ("M1", b"[1,2]", "not a JSON object"),
        ("M1", b'{"current": [1, 2]}', "current"),
        ("M1", b'{"current": ["a", 2, 3]}', "current"),
        ("E1", b'{"state": 9}', "state"),
        ("E1", b'{"ts": -5}', "ts"),
        ("E7", b'{"state": 1}', "unknown device"),
        ("M1", b"\xff\xfe", "not JSON"),
    ],
)
async def test_malformed_states_are_counted_and_change_nothing(
    api: Api,
    service: RunningService,
    observer: MqttObserver,
    base_topic: str,
    dev_id: str,
    payload: bytes,
    reason: str,
) -> None:
    await api.set_params({"devices": [EVSE]})
    await api.set_params({"devices": [METER]})
    _, before = await api.get(cmd="get_dev_info")
    rejected = service.bus.stats.rejected
    observer.publish(f"{base_topic}/devices/{dev_id}/state", payload)
    await until(lambda: service.bus.stats.rejected == rejected + 1)
    assert reason in service.bus.stats.last_rejection
    _, after = await api.get(cmd="get_dev_info")
    for info in (before, after):
        info["params"].pop("time")
    assert after == before
    # The process still works.
    await api.set_params({"title": "still alive"})


async def test_set_topic_changes_configuration(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"devices": [EVSE]})
    observer.publish(f"{base_topic}/devices/E1/set", json.dumps({"max_charging_cur": 10000}))
    config = await observer.wait(
        f"{base_topic}/devices/E1/config",
        lambda m: m.json()["max_charging_cur"] == 10000,
    )
    assert config.json()["name"] == "Garage"
    stored = json.loads((service.settings.data_dir / "config.json").read_text())
    assert stored["devices"]["E1"]["max_charging_cur"] == 10000

    rejected = service.bus.stats.rejected
    observer.publish(f"{base_topic}/devices/E1/set", json.dumps({"max_charging_cur": -4}))
    observer.publish(f"{base_topic}/devices/E1/set", b"{")
    observer.publish(f"{base_topic}/devices/E9/set", json.dumps({"name": "ghost"}))
    await until(lambda: service.bus.stats.rejected == rejected + 3)
    assert service.state.installation.devices["E1"].model_dump()["max_charging_cur"] == 10000
    assert "E9" not in service.state.installation.devices


async def test_retained_config_of_an_unknown_device_is_cleared(
    settings: Settings, observer: MqttObserver, base_topic: str
) -> None:
    observer.publish(
        f"{base_topic}/devices/E42/config", json.dumps(EVSE | {"dev_id": "E42"}), retain=True
    )
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        cleared = await observer.wait(
            f"{base_topic}/devices/E42/config", lambda m: m.payload == b""
        )
        assert cleared.payload == b""


async def test_broker_restart_restores_retained_topics(
    restartable_broker: object, tmp_path: Path, base_topic: str
) -> None:
    broker = restartable_broker
    host, port, url = broker.host, broker.port, broker.url  # type: ignore[attr-defined]
    settings = Settings(
        mqtt_url=url,
        http_port=0,
        data_dir=tmp_path / "data",
        base_topic=base_topic,
        admin_password=ADMIN_PASSWORD,
    )
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        await running.state.set_params({"devices": [EVSE], "title": "before restart"})
        connects = running.bus.stats.connects
        await asyncio.to_thread(broker.stop)  # type: ignore[attr-defined]
        await until(lambda: not running.bus.connected.is_set(), timeout=10)
        # Changes made while the broker is away must reach it once it is back.
        await running.state.set_params({"title": "while away"})
        await asyncio.to_thread(broker.start)  # type: ignore[attr-defined]
        await until(lambda: running.bus.stats.connects > connects, timeout=20)
        await running.bus.wait_connected(10)
        with MqttObserver(host, port, [f"{base_topic}/#"]) as fresh:
            status = await fresh.wait(f"{base_topic}/status")
            assert status.payload == b"online"
            config = await fresh.wait(f"{base_topic}/devices/E1/config")
            assert config.retain and config.json()["name"] == "Garage"
            params = await fresh.wait(f"{base_topic}/params")
            assert params.retain and params.json()["title"] == "while away"


async def test_subscriptions_change_on_a_live_connection(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    got: list[str] = []
    bus = MqttBus(
        MqttTarget.from_url(mqtt_broker.url),
        client_id=f"test-subs-{uuid.uuid4().hex[:8]}",
        subscriptions=[f"{base_topic}/a"],
        on_message=lambda topic, payload, retained: got.append(topic),
    )
    async with bus:
        await bus.wait_connected(10)
        assert bus.active == {f"{base_topic}/a"}
        bus.replace_subscriptions([f"{base_topic}/b"])
        await until(lambda: bus.active == {f"{base_topic}/b"})
        observer.publish(f"{base_topic}/a", b"1")
        observer.publish(f"{base_topic}/b", b"2")
        await until(lambda: f"{base_topic}/b" in got)
        # One publisher, in order: had `a` still been subscribed, it would have come first.
        assert got == [f"{base_topic}/b"]


async def test_a_publish_waits_for_the_brokers_ack_and_fails_without_a_connection(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    bus = MqttBus(
        MqttTarget.from_url(mqtt_broker.url),
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        subscriptions=[],
        on_message=lambda topic, payload, retained: None,
    )
    with pytest.raises(BusError):
        await bus.publish(f"{base_topic}/x", b"early")
    async with bus:
        await bus.wait_connected(10)
        await bus.publish(f"{base_topic}/x", b"acked", qos=1)
        seen = await observer.wait(f"{base_topic}/x")
        assert seen.payload == b"acked"
        # A burst queued without waiting goes out at flush, in order.
        for i in range(50):
            assert bus.publish_nowait(f"{base_topic}/burst", str(i).encode(), qos=0)
        bus.flush()
        await observer.wait(f"{base_topic}/burst", lambda m: m.payload == b"49")
        assert [m.payload for m in observer.on(f"{base_topic}/burst")] == [
            str(i).encode() for i in range(50)
        ]


async def test_subscriptions_changed_by_a_retained_message_take_effect(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    """A retained message handled as it comes with the SUBACK (a bridge learning its devices
    from their configs) may change the subscriptions before the connection counts as up."""
    observer.publish(f"{base_topic}/config", b"follow b", retain=True)
    got: list[str] = []
    bus: MqttBus

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        got.append(topic)
        if payload == b"follow b":
            bus.replace_subscriptions([f"{base_topic}/config", f"{base_topic}/b"])

    bus = MqttBus(
        MqttTarget.from_url(mqtt_broker.url),
        client_id=f"test-race-{uuid.uuid4().hex[:8]}",
        subscriptions=[f"{base_topic}/config"],
        on_message=on_message,
    )
    async with bus:
        await bus.wait_connected(10)
        await until(lambda: f"{base_topic}/b" in bus.active)
        observer.publish(f"{base_topic}/b", b"2")
        await until(lambda: f"{base_topic}/b" in got)
    observer.publish(f"{base_topic}/config", b"", retain=True)
