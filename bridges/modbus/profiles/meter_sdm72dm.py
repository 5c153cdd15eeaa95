"""Eastron SDM72D-M (V1): the SDM630's float32 input registers for total power and energy.

The first SDM72D-M has no per-phase registers (the product lists the V2, which has them,
under `meter_sdm630`): its state gives `power_w` without `current`, which the load balancing
counts on every phase, the safe reading of a total (service/core/meter_power.py).
"""

from __future__ import annotations

import math
from typing import Any

from bridges.modbus.connection import ModbusConnection, ModbusError
from bridges.modbus.profiles import Profile, register
from bridges.modbus.sdm630_map import EXPORT_ENERGY, IMPORT_ENERGY, TOTAL_POWER, float_at
from service.core.device_types import DeviceType

# 0x0034..0x004B: total power, then import and export energy, in one request.
BLOCK_START = TOTAL_POWER
BLOCK_COUNT = EXPORT_ENERGY + 2 - TOTAL_POWER


@register
class Sdm72dmMeter(Profile):
    device_type = DeviceType("meter_sdm72dm", "meter", "Eastron SDM72DM V1", "modbus")
    default_port = 502
    rpc_function = "input"

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        block = await conn.read_input(self.spec.unit, BLOCK_START, BLOCK_COUNT)
        power = float_at(block, TOTAL_POWER, BLOCK_START)
        imported = float_at(block, IMPORT_ENERGY, BLOCK_START)
        exported = float_at(block, EXPORT_ENERGY, BLOCK_START)
        if not all(math.isfinite(v) for v in (power, imported, exported)):
            raise ModbusError(f"{self.spec.dev_id}: the meter answered a value that is no number")
        return {
            "power_w": round(power, 1),
            "import_wh": round(imported * 1000, 1),
            "export_wh": round(exported * 1000, 1),
            "model": "Eastron SDM72DM",
        }
