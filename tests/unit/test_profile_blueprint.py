"""The blueprint profile (bridges/modbus/profiles/_blueprint.py) works as CONTRIBUTING.md says:
it is not loaded as a device type, and a copy of it reads and writes a wallbox."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any, cast

import pytest

from bridges.modbus.connection import Endpoint, ModbusConnection
from bridges.modbus.profiles import PROFILES, Control, DeviceSpec, load_profiles


@pytest.fixture
def blueprint() -> Iterator[ModuleType]:
    before = dict(PROFILES)
    try:
        yield importlib.import_module("bridges.modbus.profiles._blueprint")
    finally:
        # Importing it registered evse_example: other tests must not see it.
        PROFILES.clear()
        PROFILES.update(before)


class FakeWallbox:
    """The blueprint's imaginary register map in memory."""

    def __init__(self) -> None:
        self.registers = {100: 2, 101: 160, 102: 1, 110: 155, 111: 154, 112: 0, 113: 7100}

    async def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        return [self.registers.get(address + i, 0) for i in range(count)]

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        for i, value in enumerate(values):
            self.registers[address + i] = value


def test_the_blueprint_is_not_a_device_type() -> None:
    assert "evse_example" not in load_profiles()


async def test_a_copy_of_the_blueprint_reads_and_writes(blueprint: ModuleType) -> None:
    profile_class = PROFILES["evse_example"]
    profile = profile_class(DeviceSpec("E1", "evse_example", Endpoint.parse("127.0.0.1", 502), 1))
    wallbox = FakeWallbox()
    conn = cast(ModbusConnection, wallbox)
    state: dict[str, Any] = await profile.read_state(conn)
    assert state["state"] == 3 and state["current"] == [15500, 15400, 0]
    assert profile.applied(state) == Control(True, True, False, 16000)
    await profile.apply(conn, Control(True, True, False, 10_000))
    assert (wallbox.registers[101], wallbox.registers[102]) == (100, 1)
    await profile.apply(conn, Control(True, True, True, 10_000))  # paused: off
    assert (wallbox.registers[101], wallbox.registers[102]) == (0, 0)
