"""Home Assistant MQTT discovery configs: required keys per component (HA's MQTT discovery
docs), topics chargebus really uses, templates that read fields a real info object has, and
control payloads chargebus's `set` really accepts."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest

from service.core import config_edit
from service.core.dev_info import CP_STATE_NAMES, device_info
from service.core.device_types import DeviceTypeRegistry, builtin_registry
from service.core.models import EvseConfig, EvseState, Installation, MeterConfig, MeterState
from service.core.runtime import DeviceRuntime
from service.ha_discovery import (
    discovery_messages,
    enum_template,
    field_template,
    flag_template,
    milli_command_template,
    milli_template,
    number_or_none_template,
    removal_messages,
)

NOW = 1_700_000_000.0
BASE = "chargebus"
SERIAL = "CB-0A1B2C3D"
COMPONENTS = {"sensor", "binary_sensor", "number", "switch"}
# HA's MQTT discovery: what each component cannot do without.
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "number": {"command_topic", "state_topic"},
    "switch": {"command_topic"},
}
COMMON = {
    "name",
    "unique_id",
    "object_id",
    "value_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "device",
}
SAFE = r"[A-Za-z0-9_-]+"


# -- rendering templates as Home Assistant does -------------------------------------------


def render(template: str, **variables: Any) -> str:
    """Renders with Jinja2's immutable sandbox (what HA renders MQTT templates with) when
    Jinja2 is installed; otherwise evaluates the few template forms ha_discovery builds."""
    try:
        sandbox = importlib.import_module("jinja2.sandbox")
    except ImportError:
        return _render_known_form(template, variables)
    return str(sandbox.ImmutableSandboxedEnvironment().from_string(template).render(**variables))


def _render_known_form(template: str, variables: dict[str, Any]) -> str:
    if "value" in variables:
        match = re.fullmatch(r'\{"(\w+)": .*\}', template)
        assert match is not None and template == milli_command_template(match.group(1))
        return json.dumps({match.group(1): round(variables["value"] * 1000)})
    info: dict[str, Any] = variables["value_json"]
    for name, value in info.items():
        if template == field_template(name):
            return str(value)
        if template == milli_template(name):
            return str(round(value / 1000, 3))
        if template == flag_template(name):
            return "ON" if value else "OFF"
        if template == enum_template(name, CP_STATE_NAMES):
            return CP_STATE_NAMES.get(value, "Unknown")
        if template == number_or_none_template(name, 1000):
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            return str(round(value / 1000, 3)) if is_number else "None"
    raise AssertionError(f"template of an unknown form or field: {template}")


# -- real info objects ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> DeviceTypeRegistry:
    return builtin_registry()


def evse_info(
    registry: DeviceTypeRegistry, dev_id: str = "E1", *, measured: bool = True, **config: Any
) -> dict[str, Any]:
    evse = EvseConfig.model_validate(
        {"dev_type": "evse_ajax", "dev_id": dev_id, "name": "garage", **config}
    )
    runtime = DeviceRuntime()
    if measured:
        state = EvseState(
            ts=NOW, state=3, current=[15_900, 16_100, 0], power_w=7400, total_energy=12_345
        )
        runtime.record_state(state, NOW)
    return device_info(evse, runtime, registry, NOW)


def meter_info(
    registry: DeviceTypeRegistry, dev_id: str = "M1", *, measured: bool = True
) -> dict[str, Any]:
    meter = MeterConfig.model_validate({"dev_type": "meter_ajax", "dev_id": dev_id, "role": 3})
    runtime = DeviceRuntime()
    if measured:
        state = MeterState.model_validate(
            {
                "ts": NOW,
                "import_wh": 1_000_000,
                "export_wh": 2_000,
                "power_w": -1500,
                "current": [-2_100, 1_000, 0],
                "voltage": [231.2, 229.0, 230.4],
            }
        )
        runtime.record_state(state, NOW)
    return device_info(meter, runtime, registry, NOW)


def configs(messages: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {topic: json.loads(payload) for topic, payload in messages.items()}


def component_of(topic: str) -> str:
    return topic.split("/")[1]


def by_key(messages: dict[str, bytes]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {topic.split("/")[3]: (component_of(topic), c) for topic, c in configs(messages).items()}


@pytest.fixture
def devices(registry: DeviceTypeRegistry) -> list[dict[str, Any]]:
    return [
        evse_info(registry, "E1"),
        evse_info(registry, "E2", measured=False, name=""),
        meter_info(registry, "M1"),
        meter_info(registry, "M2", measured=False),
    ]


# -- shape ---------------------------------------------------------------------------------


def test_topics_follow_the_discovery_layout(devices: list[dict[str, Any]]) -> None:
    for device in devices:
        for topic in discovery_messages(BASE, SERIAL, device):
            match = re.fullmatch(rf"homeassistant/(\w+)/({SAFE})/({SAFE})/config", topic)
            assert match is not None, topic
            assert match.group(1) in COMPONENTS
            assert match.group(2) == f"chargebus_{SERIAL}_{device['dev_id']}"


def test_every_entity_has_the_keys_its_component_requires(devices: list[dict[str, Any]]) -> None:
    for device in devices:
        for topic, config in configs(discovery_messages(BASE, SERIAL, device)).items():
            required = REQUIRED[component_of(topic)] | COMMON
            assert required <= config.keys(), (topic, required - config.keys())
            assert config["payload_available"] == "online"
            assert config["payload_not_available"] == "offline"
            block = config["device"]
            assert block["identifiers"] == [f"chargebus_{SERIAL}_{device['dev_id']}"]
            assert block["manufacturer"] == "chargebus"
            assert block["name"] and block["model"]


def test_evse_and_meter_have_the_expected_entities(registry: DeviceTypeRegistry) -> None:
    evse = {
        k: c for k, (c, _) in by_key(discovery_messages(BASE, SERIAL, evse_info(registry))).items()
    }
    meter = {
        k: c for k, (c, _) in by_key(discovery_messages(BASE, SERIAL, meter_info(registry))).items()
    }
    assert {
        "power": "sensor",
        "energy": "sensor",
        "current_l1": "sensor",
        "current_l2": "sensor",
        "current_l3": "sensor",
        "state": "sensor",
        "paused": "binary_sensor",
        "max_charging_cur": "number",
        "device_enabled": "switch",
    }.items() <= evse.items()
    assert {
        "power": "sensor",
        "import": "sensor",
        "export": "sensor",
        "current_l1": "sensor",
        "voltage_l3": "sensor",
    }.items() <= meter.items()
    assert not {"number", "switch"} & set(meter.values())


def test_device_block_names_and_models(registry: DeviceTypeRegistry) -> None:
    named = configs(discovery_messages(BASE, SERIAL, evse_info(registry, "E1")))
    unnamed = configs(discovery_messages(BASE, SERIAL, meter_info(registry, "M7")))
    assert {c["device"]["name"] for c in named.values()} == {"garage"}
    assert {c["device"]["name"] for c in unnamed.values()} == {"Meter M7"}
    assert {c["device"]["model"] for c in named.values()} == {
        registry.get("evse_ajax").display_name
    }


def test_ids_are_unique_across_devices(devices: list[dict[str, Any]]) -> None:
    all_configs = [
        c for device in devices for c in configs(discovery_messages(BASE, SERIAL, device)).values()
    ]
    for key in ("unique_id", "object_id", "default_entity_id"):
        values = [c[key] for c in all_configs]
        assert len(values) == len(set(values)), key
    # And across installations: another serial number gives other ids.
    other = configs(discovery_messages(BASE, "CB-FFFFFFFF", devices[0]))
    assert not {c["unique_id"] for c in other.values()} & {c["unique_id"] for c in all_configs}


def test_ids_are_stable(registry: DeviceTypeRegistry) -> None:
    first = discovery_messages(BASE, SERIAL, evse_info(registry))
    again = discovery_messages(BASE, SERIAL, evse_info(registry))
    assert first == again
    ids = {c["unique_id"] for c in configs(first).values()}
    assert f"chargebus_{SERIAL}_E1_power" in ids


def test_payload_does_not_depend_on_measurements(registry: DeviceTypeRegistry) -> None:
    # HaDiscovery republishes only changed payloads: a state change must change nothing.
    assert discovery_messages(BASE, SERIAL, evse_info(registry)) == discovery_messages(
        BASE, SERIAL, evse_info(registry, measured=False)
    )
    assert discovery_messages(BASE, SERIAL, meter_info(registry)) == discovery_messages(
        BASE, SERIAL, meter_info(registry, measured=False)
    )


def test_unsafe_serial_characters_are_replaced(registry: DeviceTypeRegistry) -> None:
    for topic, config in configs(discovery_messages(BASE, "a b/c+#", evse_info(registry))).items():
        assert re.fullmatch(rf"homeassistant/\w+/{SAFE}/{SAFE}/config", topic), topic
        assert re.fullmatch(SAFE, config["unique_id"])


def test_prefix_is_used(registry: DeviceTypeRegistry) -> None:
    topics = discovery_messages(BASE, SERIAL, evse_info(registry), "ha-test/x")
    assert all(t.startswith("ha-test/x/") for t in topics)


# -- topics chargebus really has -----------------------------------------------------------


def test_every_topic_is_one_chargebus_publishes_or_subscribes(
    devices: list[dict[str, Any]],
) -> None:
    for device in devices:
        dev_id = device["dev_id"]
        allowed = {
            "state_topic": {f"{BASE}/devices/{dev_id}/info"},
            "availability_topic": {f"{BASE}/status"},
            "command_topic": {f"{BASE}/devices/{dev_id}/set"},
        }
        for config in configs(discovery_messages(BASE, SERIAL, device)).values():
            topic_keys = [k for k in config if k.endswith("_topic")]
            assert topic_keys
            for key in topic_keys:
                assert config[key] in allowed[key], (key, config[key])


# -- templates read real info fields ------------------------------------------------------


def test_value_templates_name_fields_the_info_has(devices: list[dict[str, Any]]) -> None:
    for device in devices:
        for topic, config in configs(discovery_messages(BASE, SERIAL, device)).items():
            fields = set(re.findall(r"value_json\.(\w+)", config["value_template"]))
            assert fields, topic
            assert fields <= device.keys(), (topic, fields - device.keys())


def test_sensor_templates_render_numbers_and_known_states(
    devices: list[dict[str, Any]],
) -> None:
    for device in devices:
        for topic, config in configs(discovery_messages(BASE, SERIAL, device)).items():
            shown = render(config["value_template"], value_json=device)
            component = component_of(topic)
            if component == "binary_sensor":
                assert shown in (config["payload_on"], config["payload_off"]), topic
            elif component == "switch":
                assert shown in (config["state_on"], config["state_off"]), topic
            elif config.get("device_class") == "enum":
                assert shown in config["options"], topic
            else:
                float(shown)


def test_rendered_values_and_units(registry: DeviceTypeRegistry) -> None:
    evse = evse_info(registry)
    entities = by_key(discovery_messages(BASE, SERIAL, evse))

    def shown(key: str) -> str:
        return render(entities[key][1]["value_template"], value_json=evse)

    assert float(shown("power")) == 7400
    assert float(shown("energy")) == 12_345
    assert float(shown("current_l1")) == pytest.approx(15.9)
    assert entities["current_l1"][1]["unit_of_measurement"] == "A"
    assert shown("state") == "Charging"
    assert shown("paused") == "OFF"
    assert shown("device_enabled") == "ON"
    assert float(shown("max_charging_cur")) == 16

    meter = meter_info(registry)
    m = by_key(discovery_messages(BASE, SERIAL, meter))
    assert float(render(m["import"][1]["value_template"], value_json=meter)) == 1_000_000
    assert float(render(m["export"][1]["value_template"], value_json=meter)) == 2_000
    assert float(render(m["voltage_l1"][1]["value_template"], value_json=meter)) == 231
    assert float(render(m["current_l1"][1]["value_template"], value_json=meter)) == -2.1


def test_disabled_device_switch_shows_off(registry: DeviceTypeRegistry) -> None:
    evse = evse_info(registry, device_enabled=False)
    _, switch = by_key(discovery_messages(BASE, SERIAL, evse))["device_enabled"]
    assert render(switch["value_template"], value_json=evse) == switch["state_off"]


def test_expression_limit_shows_unknown(registry: DeviceTypeRegistry) -> None:
    evse = evse_info(registry, max_charging_cur="16000 - 1000")
    _, number = by_key(discovery_messages(BASE, SERIAL, evse))["max_charging_cur"]
    assert render(number["value_template"], value_json=evse) == number["payload_reset"]


def test_energy_sensors_are_total_increasing_wh(
    registry: DeviceTypeRegistry,
) -> None:
    for device, keys in (
        (evse_info(registry), ["energy"]),
        (meter_info(registry), ["import", "export"]),
    ):
        entities = by_key(discovery_messages(BASE, SERIAL, device))
        for key in keys:
            config = entities[key][1]
            assert config["device_class"] == "energy"
            assert config["state_class"] == "total_increasing"
            assert config["unit_of_measurement"] == "Wh"
        power = entities["power"][1]
        assert (power["device_class"], power["state_class"], power["unit_of_measurement"]) == (
            "power",
            "measurement",
            "W",
        )


# -- controls write what chargebus's set accepts ------------------------------------------


def _apply_set(patch_payload: str) -> EvseConfig:
    inst = Installation.model_validate(
        {"devices": {"E1": {"dev_type": "evse_ajax", "dev_id": "E1"}}}
    )
    patch = json.loads(patch_payload)
    edit = config_edit.apply_device_set(inst, "E1", patch, builtin_registry(), set())
    device = edit.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    return device


def test_number_command_sets_the_limit_in_milliamps(registry: DeviceTypeRegistry) -> None:
    _, number = by_key(discovery_messages(BASE, SERIAL, evse_info(registry)))["max_charging_cur"]
    assert (number["min"], number["max"], number["step"]) == (0, 80, 1)
    assert number["unit_of_measurement"] == "A"
    for value, expected in ((10.0, 10_000), (6, 6_000), (80.0, 80_000), (0.0, 0)):
        payload = render(number["command_template"], value=value)
        assert json.loads(payload) == {"max_charging_cur": expected}
        assert _apply_set(payload).max_charging_cur == expected


def test_switch_payloads_set_device_enabled(registry: DeviceTypeRegistry) -> None:
    _, switch = by_key(discovery_messages(BASE, SERIAL, evse_info(registry)))["device_enabled"]
    assert _apply_set(switch["payload_off"]).device_enabled is False
    assert _apply_set(switch["payload_on"]).device_enabled is True


# -- removal -------------------------------------------------------------------------------


def test_removal_covers_every_discovery_topic(devices: list[dict[str, Any]]) -> None:
    for device in devices:
        removal = removal_messages(BASE, SERIAL, device, "ha-x")
        assert removal.keys() == discovery_messages(BASE, SERIAL, device, "ha-x").keys()
        assert set(removal.values()) == {b""}


def test_removal_needs_only_the_device_id() -> None:
    # A deleted device's info may be gone: its id alone names its topics.
    full = discovery_messages(BASE, SERIAL, {"dev_id": "E5", "is_evse": True})
    assert removal_messages(BASE, SERIAL, {"dev_id": "E5"}).keys() == full.keys()
