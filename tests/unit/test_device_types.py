"""The device type registry."""

from __future__ import annotations

import pytest

from service.app import device_registry
from service.core.device_types import (
    BUILTIN_TYPES,
    DeviceType,
    DeviceTypeRegistry,
    UnknownDeviceType,
    builtin_registry,
)


@pytest.mark.parametrize(
    ("name", "kind", "display"),
    [
        ("evse_ajax", "evse", "HTTP input"),
        ("meter_ajax", "meter", "HTTP input"),
        ("evse_http", "evse", "HTTP input"),
        ("meter_http", "meter", "HTTP input"),
    ],
)
def test_builtin_types(name: str, kind: str, display: str) -> None:
    registry = builtin_registry()
    assert name in registry
    assert registry.get(name).kind == kind
    assert registry.dev_meta()[name] == display


@pytest.mark.parametrize(
    ("name", "kind", "display", "transport"),
    [
        ("evse_powerbrain", "evse", "cFos Power Brain", "modbus"),
        ("meter_powerbrain", "meter", "cFos Power Brain", "modbus"),
        ("meter_sdm630", "meter", "Eastron SDM630 / SDM630MCT", "modbus"),
    ],
)
def test_bridge_types_come_from_the_bridges(
    name: str, kind: str, display: str, transport: str
) -> None:
    # Power Brain specifics are the Modbus profile's, not the core's: the wiring registers
    # them with every other bridge's types.
    assert name not in builtin_registry()
    registry = device_registry()
    assert (registry.get(name).kind, registry.dev_meta()[name]) == (kind, display)
    assert registry.get(name).transport == transport


def test_the_power_brains_cmd_modbus_names_are_its_profiles() -> None:
    registry = device_registry()
    assert dict(registry.get("evse_powerbrain").device_aliases) == {
        "evse": 1,
        "meter1": 2,
        "meter2": 3,
    }
    assert all(not registry.get(n).device_aliases for n in builtin_registry().names())


def test_builtin_kinds_match_name_prefix() -> None:
    for device_type in BUILTIN_TYPES:
        assert device_type.name.startswith(device_type.kind + "_")


def test_dev_meta_and_names_sorted() -> None:
    registry = builtin_registry()
    assert registry.names() == sorted(t.name for t in BUILTIN_TYPES)
    assert list(registry.dev_meta()) == registry.names()


def test_registries_are_independent() -> None:
    a, b = builtin_registry(), builtin_registry()
    a.register(DeviceType("meter_extra", "meter", "Extra", "modbus"))
    assert "meter_extra" in a
    assert "meter_extra" not in b


def test_unknown_type() -> None:
    registry = builtin_registry()
    with pytest.raises(UnknownDeviceType):
        registry.get("evse_nonesuch")
    with pytest.raises(KeyError):
        registry.get("evse_nonesuch")
    assert "evse_nonesuch" not in registry
    assert 5 not in registry


def test_register_returns_type_and_lists_it() -> None:
    registry = DeviceTypeRegistry()
    sdm = DeviceType("meter_sdm630", "meter", "Eastron SDM630 / SDM630MCT", "modbus")
    assert registry.register(sdm) is sdm
    assert registry.get("meter_sdm630") is sdm
    assert registry.dev_meta() == {"meter_sdm630": "Eastron SDM630 / SDM630MCT"}


def test_register_same_type_twice_is_fine() -> None:
    registry = builtin_registry()
    registry.register(DeviceType("evse_ajax", "evse", "HTTP input", "http"))
    assert registry.names().count("evse_ajax") == 1


@pytest.mark.parametrize(
    "other",
    [
        DeviceType("evse_ajax", "meter", "HTTP input", "http"),
        DeviceType("evse_ajax", "evse", "Something else", "http"),
        DeviceType("evse_ajax", "evse", "HTTP input", "modbus"),
    ],
)
def test_register_differently_twice_refused(other: DeviceType) -> None:
    registry = builtin_registry()
    with pytest.raises(ValueError, match="evse_ajax"):
        registry.register(other)
    assert registry.get("evse_ajax").kind == "evse"
    assert registry.get("evse_ajax").display_name == "HTTP input"
