"""A meter whose register map comes from its configuration (`modbus_registers`).

Each quantity names its register: `{"address": 40072, "kind": "i32", "scale": 0.1,
"function": "holding"}`; the value read, times `scale`, is the quantity in the state's unit
(power_w W, import_wh/export_wh Wh, current_l1..3 mA, voltage_l1..3 V).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from bridges.modbus.connection import ModbusConnection, ModbusError
from bridges.modbus.profiles import Profile, register
from bridges.modbus.register_map import decode_kind
from service.core.device_types import DeviceType

WIDTH = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "f32": 2}


def register_value(kind: str, registers: list[int]) -> float:
    if kind == "f32":
        value: float = struct.unpack(">f", struct.pack(">HH", *registers))[0]
        return value
    if kind == "u64":
        total = 0
        for word in registers:
            total = (total << 16) | word
        return float(total)
    decoded = decode_kind(kind, registers)  # type: ignore[arg-type]
    assert isinstance(decoded, int)
    return float(decoded)


@register
class GenericMeter(Profile):
    device_type = DeviceType(
        "meter_modbus_generic", "meter", "Modbus meter (register map)", "modbus"
    )

    async def _read(self, conn: ModbusConnection, spec: Mapping[str, Any]) -> float:
        kind = str(spec.get("kind", "u16"))
        address = int(spec["address"])
        count = WIDTH[kind]
        if spec.get("function", "holding") == "input":
            words = await conn.read_input(self.spec.unit, address, count)
        else:
            words = await conn.read_holding(self.spec.unit, address, count)
        return register_value(kind, words) * float(spec.get("scale", 1.0))

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        if not self.spec.registers:
            raise ModbusError(f"{self.spec.dev_id}: no modbus_registers configured")
        values = {name: await self._read(conn, spec) for name, spec in self.spec.registers.items()}
        state: dict[str, Any] = {"model": "Modbus meter"}
        for key in ("power_w", "import_wh", "export_wh"):
            if key in values:
                state[key] = round(values[key], 1)
        currents = [values.get(f"current_l{i}") for i in (1, 2, 3)]
        if any(c is not None for c in currents):
            state["current"] = [round(c or 0.0) for c in currents]
        voltages = [values.get(f"voltage_l{i}") for i in (1, 2, 3)]
        if any(v is not None for v in voltages):
            state["voltage"] = [round(v or 0.0, 1) for v in voltages]
        return state
