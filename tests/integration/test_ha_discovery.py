"""Home Assistant MQTT discovery with the service running against the real broker: configs
appear retained, controls work through the topics they name, Home Assistant's birth message
re-announces, and a deleted device's configs are cleared."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service.app import RunningService, running_service
from service.settings import Settings
from tests.broker import BrokerAddress
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, Api
from tests.integration.mqtt_observer import MqttObserver, Seen
from tests.unit.test_ha_discovery import render

pytestmark = pytest.mark.integration

EVSE = GARAGE_EVSE
METER = GRID_METER


@pytest.fixture
def ha_prefix() -> str:
    # The session broker keeps retained configs: a discovery tree of its own per test.
    return f"ha-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(settings: Settings, ha_prefix: str) -> Settings:
    return settings.model_copy(update={"ha_discovery_prefix": ha_prefix})


@pytest.fixture
def ha(mqtt_broker: BrokerAddress, ha_prefix: str, base_topic: str) -> Iterator[MqttObserver]:
    """Sees what Home Assistant would see; clears the retained configs left behind."""
    with MqttObserver(
        mqtt_broker.host, mqtt_broker.port, [f"{ha_prefix}/#", f"{base_topic}/#"]
    ) as seen:
        yield seen
        latest: dict[str, bytes] = {}
        for message in seen.messages:
            latest[message.topic] = message.payload
        for topic, payload in latest.items():
            if topic.startswith(f"{ha_prefix}/") and topic.endswith("/config") and payload:
                seen.publish(topic, b"", retain=True)


def config_topics(ha: MqttObserver, prefix: str, node: str) -> dict[str, Seen]:
    """The latest non-empty config of each discovery topic of one device."""
    found: dict[str, Seen] = {}
    for message in list(ha.messages):
        parts = message.topic.split("/")
        if message.topic.startswith(f"{prefix}/") and len(parts) == 5 and parts[2] == node:
            if message.payload:
                found[message.topic] = message
            else:
                found.pop(message.topic, None)
    return found


def info_of(message: Seen) -> dict[str, Any]:
    return message.json() if message.payload else {}


async def announced_evse(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str
) -> tuple[str, dict[str, Seen]]:
    await api.set_params({"devices": [EVSE]})
    node = f"chargebus_{service.state.installation.serialno}_E1"
    # The switch is the last config of an EVSE: all are out once it is.
    await ha.wait(f"{ha_prefix}/switch/{node}/device_enabled/config")
    await ha.roundtrip()
    return node, config_topics(ha, ha_prefix, node)


async def test_evse_configs_are_announced_retained(
    api: Api,
    service: RunningService,
    ha: MqttObserver,
    ha_prefix: str,
    base_topic: str,
    mqtt_broker: BrokerAddress,
) -> None:
    node, configs = await announced_evse(api, service, ha, ha_prefix)
    components = {topic.split("/")[1] for topic in configs}
    assert components == {"sensor", "binary_sensor", "number", "switch"}
    for message in configs.values():
        config = message.json()
        assert config["state_topic"] == f"{base_topic}/devices/E1/info"
        assert config["availability_topic"] == f"{base_topic}/status"
        assert config["device"]["identifiers"] == [node]
        assert config["device"]["name"] == "Garage"

    # A Home Assistant that connects later gets them from the broker.
    with MqttObserver(mqtt_broker.host, mqtt_broker.port, [f"{ha_prefix}/#"]) as late:
        for topic, message in configs.items():
            seen = await late.wait(topic)
            assert seen.retain
            assert seen.payload == message.payload

    # The availability topic says online while the service runs.
    status = await ha.wait(f"{base_topic}/status")
    assert status.payload == b"online"


async def test_number_command_sets_the_limit(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str
) -> None:
    node, configs = await announced_evse(api, service, ha, ha_prefix)
    number = configs[f"{ha_prefix}/number/{node}/max_charging_cur/config"].json()
    info_topic = number["state_topic"]
    shown = render(number["value_template"], value_json=info_of(await ha.wait(info_topic)))
    assert float(shown) == 16

    # What Home Assistant publishes when the user sets 10 A.
    ha.publish(number["command_topic"], render(number["command_template"], value=10.0))
    changed = await ha.wait(info_topic, lambda m: info_of(m).get("max_charging_cur") == 10_000)
    assert float(render(number["value_template"], value_json=changed.json())) == 10


async def test_switch_turns_the_device_off_and_on(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str
) -> None:
    node, configs = await announced_evse(api, service, ha, ha_prefix)
    switch = configs[f"{ha_prefix}/switch/{node}/device_enabled/config"].json()
    info_topic = switch["state_topic"]

    ha.publish(switch["command_topic"], switch["payload_off"])
    off = await ha.wait(info_topic, lambda m: info_of(m).get("device_enabled") == 0)
    assert render(switch["value_template"], value_json=off.json()) == switch["state_off"]

    ha.clear()
    ha.publish(switch["command_topic"], switch["payload_on"])
    on = await ha.wait(info_topic, lambda m: info_of(m).get("device_enabled") == 1)
    assert render(switch["value_template"], value_json=on.json()) == switch["state_on"]


async def test_home_assistant_online_reannounces(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str
) -> None:
    await api.set_params({"devices": [METER]})
    _, configs = await announced_evse(api, service, ha, ha_prefix)
    meter_node = f"chargebus_{service.state.installation.serialno}_M1"
    meter_configs = config_topics(ha, ha_prefix, meter_node)
    assert f"{ha_prefix}/sensor/{meter_node}/import/config" in meter_configs

    ha.clear()
    ha.publish(f"{ha_prefix}/status", b"online")
    for topic, message in {**configs, **meter_configs}.items():
        again = await ha.wait(topic)
        assert again.payload == message.payload


async def test_state_changes_do_not_reannounce(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str, base_topic: str
) -> None:
    node, _ = await announced_evse(api, service, ha, ha_prefix)
    ha.clear()
    state = {"state": 3, "current": [10_000, 10_000, 10_000], "power_w": 6900}
    ha.publish(f"{base_topic}/devices/E1/state", json.dumps(state))
    await ha.wait(f"{base_topic}/devices/E1/info", lambda m: info_of(m).get("power_w") == 6900)
    # The service publishes in order: a config sent for this state would be here already.
    assert config_topics(ha, ha_prefix, node) == {}


async def test_del_device_clears_its_configs(
    api: Api, service: RunningService, ha: MqttObserver, ha_prefix: str
) -> None:
    _, configs = await announced_evse(api, service, ha, ha_prefix)
    assert await api.ok(cmd="del_device", dev_id="E1") == "ok"
    for topic in configs:
        cleared = await ha.wait(topic, lambda m: m.payload == b"")
        assert cleared.payload == b""


async def test_discovery_can_be_turned_off(
    settings: Settings, mqtt_broker: BrokerAddress, ha_prefix: str, base_topic: str
) -> None:
    quiet = settings.model_copy(update={"ha_discovery": False})
    topics = [f"{ha_prefix}/#", f"{base_topic}/#"]
    with MqttObserver(mqtt_broker.host, mqtt_broker.port, topics) as ha:
        async with running_service(quiet) as running:
            await running.bus.wait_connected(10)
            await running.state.set_params({"devices": [EVSE]})
            ha.publish(f"{ha_prefix}/status", b"online")
            await ha.roundtrip()
            # The service publishes in order: configs for the first change (or the birth
            # message) would have arrived before the info of this second one.
            await running.state.set_params({"devices": [{**EVSE, "name": "renamed"}]})
            await ha.wait(
                f"{base_topic}/devices/E1/info", lambda m: info_of(m).get("name") == "renamed"
            )
        announced = [m for m in ha.messages if m.topic.startswith(f"{ha_prefix}/")]
        assert not [m.topic for m in announced if m.topic.endswith("/config")]
