"""Home Assistant MQTT discovery: the retained config messages that make each chargebus
device appear in Home Assistant with its sensors and controls. Pure: no I/O.

Every entity reads the device's retained `{base}/devices/{id}/info` (its get_dev_info
object) and is available while `{base}/status` says `online`. Controls write partial
configurations to `{base}/devices/{id}/set`, the topic chargebus already takes them on.

Units as shown in Home Assistant: currents in A (chargebus's mA divided by 1000 in the
value template), power in W, energy in Wh, voltage in V. The current limit is a `number` in
A, steps of 1 A from 0 to 80 A; its command template multiplies by 1000 so chargebus gets
mA. A limit configured as an expression has no number to show: the template answers
"None", which Home Assistant takes as "unknown" (the number's payload_reset).

Topic layout: `{prefix}/{component}/chargebus_{serialno}_{dev_id}/{key}/config`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from service import __version__
from service.core.dev_info import CP_STATE_NAMES

DEFAULT_PREFIX = "homeassistant"
MANUFACTURER = "chargebus"
UNKNOWN_STATE = "Unknown"
# EvseMilliAmps in service.core.models: the most a limit may be.
MAX_LIMIT_A = 80
ON, OFF = "ON", "OFF"

# Discovery topic levels and object ids allow only these characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of a device: its component, a key unique within the
    device, and the component-specific part of its discovery config."""

    component: str
    key: str
    name: str
    config: dict[str, Any] = field(default_factory=dict)


def field_template(name: str) -> str:
    return f"{{{{ value_json.{name} }}}}"


def milli_template(name: str) -> str:
    """mA → A; round so 1234 mA shows as 1.23 A, not 1.2340000000000002."""
    return f"{{{{ (value_json.{name} / 1000) | round(3) }}}}"


def flag_template(name: str) -> str:
    """A truthy field (bool, or 1/0 as device_enabled is answered) → ON/OFF."""
    return f"{{{{ '{ON}' if value_json.{name} else '{OFF}' }}}}"


def enum_template(name: str, names: dict[int, str]) -> str:
    mapping = ", ".join(f"{k}: '{v}'" for k, v in sorted(names.items()))
    return f"{{{{ {{{mapping}}}.get(value_json.{name}, '{UNKNOWN_STATE}') }}}}"


def number_or_none_template(name: str, divisor: int) -> str:
    """A field that may be an expression (a string): show numbers only, else unknown."""
    return (
        f"{{{{ (value_json.{name} / {divisor}) | round(3) "
        f"if value_json.{name} is number else 'None' }}}}"
    )


def milli_command_template(name: str) -> str:
    """What Home Assistant sends for a number set in A: `{"<name>": <mA>}`."""
    return f'{{"{name}": {{{{ (value * 1000) | round(0) | int }}}}}}'


def _sensor(key: str, name: str, template: str, **extra: Any) -> Entity:
    return Entity("sensor", key, name, {"value_template": template, **extra})


def _power(key: str, name: str, source: str) -> Entity:
    return _sensor(
        key,
        name,
        field_template(source),
        device_class="power",
        state_class="measurement",
        unit_of_measurement="W",
    )


def _energy(key: str, name: str, source: str) -> Entity:
    return _sensor(
        key,
        name,
        field_template(source),
        device_class="energy",
        state_class="total_increasing",
        unit_of_measurement="Wh",
    )


def _currents() -> list[Entity]:
    return [
        _sensor(
            f"current_l{n}",
            f"Current L{n}",
            milli_template(f"current_l{n}"),
            device_class="current",
            state_class="measurement",
            unit_of_measurement="A",
            suggested_display_precision=1,
        )
        for n in (1, 2, 3)
    ]


def _voltages() -> list[Entity]:
    return [
        _sensor(
            f"voltage_l{n}",
            f"Voltage L{n}",
            field_template(f"voltage_l{n}"),
            device_class="voltage",
            state_class="measurement",
            unit_of_measurement="V",
        )
        for n in (1, 2, 3)
    ]


def _binary(key: str, name: str, source: str, **extra: Any) -> Entity:
    return Entity(
        "binary_sensor",
        key,
        name,
        {"value_template": flag_template(source), "payload_on": ON, "payload_off": OFF, **extra},
    )


def _com_err() -> Entity:
    return _binary(
        "com_err",
        "Communication error",
        "com_err",
        device_class="problem",
        entity_category="diagnostic",
    )


def evse_entities() -> list[Entity]:
    states = [*CP_STATE_NAMES.values(), UNKNOWN_STATE]
    return [
        _power("power", "Power", "power_w"),
        _energy("energy", "Energy", "total_energy"),
        *_currents(),
        _sensor(
            "state",
            "State",
            enum_template("state", CP_STATE_NAMES),
            device_class="enum",
            options=states,
        ),
        _sensor(
            "charging_current",
            "Allocated current",
            milli_template("charging_current"),
            device_class="current",
            state_class="measurement",
            unit_of_measurement="A",
            suggested_display_precision=1,
        ),
        _binary("paused", "Paused", "paused"),
        _com_err(),
        Entity(
            "number",
            "max_charging_cur",
            "Current limit",
            {
                "value_template": number_or_none_template("max_charging_cur", 1000),
                "command_template": milli_command_template("max_charging_cur"),
                "device_class": "current",
                "unit_of_measurement": "A",
                "min": 0,
                "max": MAX_LIMIT_A,
                "step": 1,
                "mode": "box",
                "payload_reset": "None",
            },
        ),
        # The switch turns the device on and off for load management (device_enabled). What
        # "off" means is the installation's disable_policy (0: no charging, 1: minimum
        # current, -1: no limit), so it is named for what it sets, not "charging".
        Entity(
            "switch",
            "device_enabled",
            "Load management enabled",
            {
                "value_template": flag_template("device_enabled"),
                "state_on": ON,
                "state_off": OFF,
                "payload_on": json.dumps({"device_enabled": True}),
                "payload_off": json.dumps({"device_enabled": False}),
            },
        ),
    ]


def meter_entities() -> list[Entity]:
    return [
        _power("power", "Power", "power_w"),
        _energy("import", "Import", "import"),
        _energy("export", "Export", "export"),
        *_currents(),
        *_voltages(),
        _com_err(),
    ]


def is_evse(device: dict[str, Any]) -> bool:
    flag = device.get("is_evse")
    if isinstance(flag, bool):
        return flag
    return str(device.get("dev_id", "")).startswith("E")


def entities_for(device: dict[str, Any]) -> list[Entity]:
    return evse_entities() if is_evse(device) else meter_entities()


def node_id(serialno: str, dev_id: str) -> str:
    return _UNSAFE.sub("_", f"chargebus_{serialno}_{dev_id}")


def config_topic(prefix: str, component: str, node: str, key: str) -> str:
    return f"{prefix}/{component}/{node}/{key}/config"


def _device_block(device: dict[str, Any], node: str) -> dict[str, Any]:
    dev_id = str(device["dev_id"])
    kind = "EVSE" if is_evse(device) else "Meter"
    block: dict[str, Any] = {
        "identifiers": [node],
        "name": str(device.get("name") or device.get("label") or f"{kind} {dev_id}"),
        "manufacturer": MANUFACTURER,
        "model": str(device.get("dev_type_name") or device.get("dev_type") or kind),
    }
    return block


def _entity_config(
    entity: Entity, base_topic: str, node: str, dev_id: str, device_block: dict[str, Any]
) -> dict[str, Any]:
    unique_id = f"{node}_{entity.key}"
    object_id = unique_id.lower().replace("-", "_")
    config: dict[str, Any] = {
        "name": entity.name,
        "unique_id": unique_id,
        # object_id for Home Assistant before 2025.10, default_entity_id after (which
        # deprecates object_id); each version drops the key it does not know.
        "object_id": object_id,
        "default_entity_id": f"{entity.component}.{object_id}",
        "state_topic": f"{base_topic}/devices/{dev_id}/info",
        "availability_topic": f"{base_topic}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block,
        "origin": {"name": MANUFACTURER, "sw_version": __version__},
        "qos": 1,
        **entity.config,
    }
    if entity.component in ("number", "switch"):
        config["command_topic"] = f"{base_topic}/devices/{dev_id}/set"
    return config


def _encode(config: dict[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


def discovery_messages(
    base_topic: str,
    serialno: str,
    device: dict[str, Any],
    discovery_prefix: str = DEFAULT_PREFIX,
) -> dict[str, bytes]:
    """topic → retained config payload for every entity of `device` (its info object)."""
    dev_id = str(device["dev_id"])
    node = node_id(serialno, dev_id)
    block = _device_block(device, node)
    return {
        config_topic(discovery_prefix, entity.component, node, entity.key): _encode(
            _entity_config(entity, base_topic, node, dev_id, block)
        )
        for entity in entities_for(device)
    }


def removal_messages(
    base_topic: str,
    serialno: str,
    device: dict[str, Any],
    discovery_prefix: str = DEFAULT_PREFIX,
) -> dict[str, bytes]:
    """An empty retained payload for every topic discovery_messages gives: Home Assistant
    removes the entities, and the broker forgets the configs."""
    return dict.fromkeys(discovery_messages(base_topic, serialno, device, discovery_prefix), b"")
