"""The S0 meters of a cFos Power Brain (Modbus ids 2 and 3 on the wallbox's endpoint)."""

from __future__ import annotations

from typing import Any

from bridges.modbus.connection import ModbusConnection
from bridges.modbus.powerbrain_map import DEFAULT_PORT, POWERBRAIN_METER_MAP
from bridges.modbus.profiles import Profile, register
from bridges.modbus.profiles.evse_powerbrain import meter_readings, read_model
from bridges.modbus.register_map import RegisterMap
from service.core.device_types import DeviceType


@register
class PowerBrainMeter(Profile):
    device_type = DeviceType("meter_powerbrain", "meter", "cFos Power Brain", "modbus")
    default_port = DEFAULT_PORT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: str | None = None

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        unit = self.spec.unit
        if self._model is None:
            self._model = await read_model(conn, unit)
        voltages = await conn.read_holding(unit, 8045, 3)
        readings = meter_readings(await conn.read_holding(unit, 8058, 12))
        state: dict[str, Any] = {
            "current": readings["current"],
            "voltage": [float(v) for v in voltages],
            "model": self._model,
        }
        if "power_w" in readings:
            state["power_w"] = readings["power_w"]
        if "energy_wh" in readings:
            state["import_wh"] = readings["energy_wh"]
        return state

    def register_map(self, unit: int) -> RegisterMap:
        return POWERBRAIN_METER_MAP
