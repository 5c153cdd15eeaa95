"""The registry of device types: `dev_type` name → kind, display name and transport.

The core knows only the types of the API itself (the HTTP-input devices that `set_ajax_*`
feeds, and the virtual meters it computes); every bridge brings its own
(bridges/modbus/profiles/*.py, bridges/ocpp/), and the wiring (service/app.py) registers
them, so adding a device is adding a file. `get_params` lists the registry as `dev_meta`.
The names are the cFos product's, so configurations written for it load here.
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
    # Which kind of bridge serves it: "http" (values pushed by set_ajax_*), "modbus" (polled
    # by a Modbus bridge), "ocpp" (an OCPP charge point), … — open: a bridge names its own.
    transport: str
    # Names `cmd=modbus&device=` takes for the first device of this type, with the Modbus id
    # each addresses on that device's endpoint (a Power Brain: evse 1, meter1 2, meter2 3).
    device_aliases: tuple[tuple[str, int], ...] = ()


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
    """The types of the API itself, before any bridge registers its own."""
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
    # Virtual meters: computed by the core from the installation (service/core/virtual_meters.py).
    DeviceType("meter_virtual_grid_demand", "meter", "Grid Demand (VM)", "virtual"),
    DeviceType("meter_virtual_evse_power", "meter", "Consumed EVSE Power (VM)", "virtual"),
    DeviceType(
        "meter_virtual_available_evse_power", "meter", "Power avail. for EVSEs (VM)", "virtual"
    ),
)
