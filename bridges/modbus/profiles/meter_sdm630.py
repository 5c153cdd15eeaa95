"""Eastron SDM630 / SDM630MCT: IEEE float32 input registers (bridges/modbus/sdm630_map.py)."""

from __future__ import annotations

import math
from typing import Any

from bridges.modbus.connection import ModbusConnection, ModbusError
from bridges.modbus.profiles import Profile, register
from bridges.modbus.sdm630_map import (
    BLOCK_COUNT,
    BLOCK_START,
    CURRENTS,
    EXPORT_ENERGY,
    IMPORT_ENERGY,
    TOTAL_POWER,
    VOLTAGES,
    float_at,
)
from service.core.device_types import DeviceType


@register
class Sdm630Meter(Profile):
    device_type = DeviceType("meter_sdm630", "meter", "Eastron SDM630 / SDM630MCT", "modbus")
    default_port = 502
    rpc_function = "input"

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        # One request for everything: 76 registers, within Modbus's 125 per read.
        block = await conn.read_input(self.spec.unit, BLOCK_START, BLOCK_COUNT)
        voltages = [float_at(block, a) for a in VOLTAGES]
        amps = [float_at(block, a) for a in CURRENTS]
        power = float_at(block, TOTAL_POWER)
        imported = float_at(block, IMPORT_ENERGY)
        exported = float_at(block, EXPORT_ENERGY)
        if not all(math.isfinite(v) for v in [*voltages, *amps, power, imported, exported]):
            raise ModbusError(f"{self.spec.dev_id}: the meter answered a value that is no number")
        return {
            "voltage": [round(v, 1) for v in voltages],
            "current": [round(a * 1000) for a in amps],
            "power_w": round(power, 1),
            "import_wh": round(imported * 1000, 1),
            "export_wh": round(exported * 1000, 1),
            "model": "Eastron SDM630",
        }
