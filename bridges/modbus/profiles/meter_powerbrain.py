"""The S0 meters of a cFos Power Brain (Modbus ids 2 and 3 on the wallbox's endpoint)."""

from __future__ import annotations

from typing import Any

from bridges.modbus.connection import ModbusConnection
from bridges.modbus.powerbrain_map import POWERBRAIN_METER_MAP
from bridges.modbus.profiles import register
from bridges.modbus.profiles.evse_powerbrain import PowerBrainDevice, meter_readings
from bridges.modbus.register_map import RegisterMap
from service.core.device_types import DeviceType


@register
class PowerBrainMeter(PowerBrainDevice):
    device_type = DeviceType("meter_powerbrain", "meter", "cFos Power Brain", "modbus")

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        unit = self.spec.unit
        model = await self.model(conn)
        voltages = await conn.read_holding(unit, 8045, 3)
        readings = meter_readings(await conn.read_holding(unit, 8058, 12))
        state: dict[str, Any] = {
            "current": readings["current"],
            "voltage": [float(v) for v in voltages],
            "model": model,
        }
        if "power_w" in readings:
            state["power_w"] = readings["power_w"]
        if "energy_wh" in readings:
            state["import_wh"] = readings["energy_wh"]
        return state

    def register_map(self, unit: int) -> RegisterMap:
        return POWERBRAIN_METER_MAP
