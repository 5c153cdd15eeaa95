"""The registry of device types: `dev_type` name → kind and display name.

A device profile (bridges/modbus/profiles/*.py, bridges/http_input.py) registers its type
here by name, so adding a device is adding a file. `get_params` lists the registry as
`dev_meta`. The names are the cFos product's, so configurations written for it load here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeviceKind = Literal["evse", "meter"]


@dataclass(frozen=True, slots=True)
class DeviceType:
    name: str
    kind: DeviceKind
    display_name: str
    # "http": values pushed by set_ajax_*; "modbus": polled by a bridge; "virtual": computed.
    transport: Literal["http", "modbus", "virtual"]


class UnknownDeviceType(KeyError):
    pass


class DeviceTypeRegistry:
    def __init__(self) -> None:
        self._types: dict[str, DeviceType] = {}

    def register(self, device_type: DeviceType) -> DeviceType:
        existing = self._types.get(device_type.name)
        if existing is not None and existing != device_type:
            raise ValueError(f"device type {device_type.name!r} registered twice, differently")
        self._types[device_type.name] = device_type
        return device_type

    def get(self, name: str) -> DeviceType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownDeviceType(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def dev_meta(self) -> dict[str, str]:
        return {name: self._types[name].display_name for name in self.names()}


def builtin_registry() -> DeviceTypeRegistry:
    """The types chargebus knows without any optional profile."""
    registry = DeviceTypeRegistry()
    for device_type in BUILTIN_TYPES:
        registry.register(device_type)
    return registry


BUILTIN_TYPES: tuple[DeviceType, ...] = (
    # HTTP input devices: the product calls them *_ajax; *_http are our aliases.
    DeviceType("evse_ajax", "evse", "HTTP input", "http"),
    DeviceType("meter_ajax", "meter", "HTTP input", "http"),
    DeviceType("evse_http", "evse", "HTTP input", "http"),
    DeviceType("meter_http", "meter", "HTTP input", "http"),
    DeviceType("evse_powerbrain", "evse", "cFos Power Brain", "modbus"),
    DeviceType("meter_powerbrain", "meter", "cFos Power Brain", "modbus"),
)
