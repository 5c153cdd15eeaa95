"""The cFos Power Brain wallbox (EVSE at Modbus id 1 of its TCP endpoint, port 4701).

Registers (bridges/modbus/powerbrain_map.py): status 8092 (low byte 0 A … 5 F), charging
current limit 8093 in 0.1 A, charging enable 8094, last RFID 8096, and the attached meter's
energy 8058q (Wh), power 8062d (W) and currents 8064d/8066d/8068d (0.1 A).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridges.modbus.connection import ModbusConnection
from bridges.modbus.powerbrain_map import (
    DEFAULT_PORT,
    EVSE_UNIT,
    POWERBRAIN_EVSE_MAP,
    POWERBRAIN_METER_MAP,
)
from bridges.modbus.profiles import Control, Profile, register
from bridges.modbus.register_map import RegisterMap, decode
from service.core.device_types import DeviceType

# IEC 61851 state letter (the status register's low byte) → the /cnf `state` field.
CNF_STATE = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 5}


def signed32(hi: int, lo: int) -> int:
    value = decode("d", [hi, lo])
    assert isinstance(value, int)
    return value


def meter_readings(block: list[int]) -> dict[str, Any]:
    """8058..8069: energy (q, Wh), power (d, W; -1 = unknown), currents (d, 0.1 A)."""
    energy = decode("q", block[0:4])
    power = signed32(block[4], block[5])
    currents = [max(0, signed32(block[6 + 2 * i], block[7 + 2 * i])) * 100 for i in range(3)]
    out: dict[str, Any] = {"current": currents}
    if power >= 0:
        out["power_w"] = power
    if isinstance(energy, int) and energy >= 0:
        out["energy_wh"] = energy
    return out


MANUFACTURER = "cFos"


def model_string(block: list[int]) -> str:
    """Registers 8003..8031 → "manufacturer,device,device version,firmware version,serial",
    the five fields of the API's `model` (clients split it on commas and take the firmware
    and serial number by position). Versions are major.minor in a register's two bytes:
    the device version from device_id (8003), the firmware from product_version (8004, its
    low word the build)."""
    device_id, version, build = block[0], block[1], block[2]
    serial, name = decode("s", block[5:13]), decode("s", block[13:29])
    device = str(name).removeprefix(f"{MANUFACTURER} ").replace(",", " ")
    return ",".join(
        (
            MANUFACTURER,
            device,
            f"{device_id >> 8}.{device_id & 0xFF}",
            f"{version >> 8}.{version & 0xFF}.{build}",
            str(serial).replace(",", " "),
        )
    )


class PowerBrainDevice(Profile):
    """What the wallbox and its meters share: the endpoint's port and the model string."""

    default_port = DEFAULT_PORT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: str | None = None

    async def model(self, conn: ModbusConnection) -> str:
        """The /cnf `model` field, read once (8003..8031 in one request)."""
        if self._model is None:
            self._model = model_string(await conn.read_holding(self.spec.unit, 8003, 29))
        return self._model


@register
class PowerBrainEvse(PowerBrainDevice):
    # The product's cmd=modbus names for a Power Brain's own devices (its first one).
    device_type = DeviceType(
        "evse_powerbrain",
        "evse",
        "cFos Power Brain",
        "modbus",
        device_aliases=(("evse", EVSE_UNIT), ("meter1", 2), ("meter2", 3)),
    )

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        unit = self.spec.unit
        model = await self.model(conn)
        control = await conn.read_holding(unit, 8092, 3)
        meter = await conn.read_holding(unit, 8058, 12)
        rfid = decode("s", await conn.read_holding(unit, 8096, 15))
        readings = meter_readings(meter)
        state: dict[str, Any] = {
            "state": CNF_STATE.get(control[0] & 0xFF, 5),
            "current": readings["current"],
            "model": model,
            "rfid": rfid,
            # Read back: what the wallbox applies now (8093 in 0.1 A, 8094).
            "applied_current": control[1] * 100,
            "applied_enabled": bool(control[2]),
        }
        if "power_w" in readings:
            state["power_w"] = readings["power_w"]
        if "energy_wh" in readings:
            state["total_energy"] = readings["energy_wh"]
        return state

    async def apply(self, conn: ModbusConnection, control: Control) -> None:
        on = control.charging_allowed
        deci_amps = control.charging_current // 100 if on else 0
        # 8093 and 8094 are neighbours and not written to flash: one request, as often as needed.
        await conn.write_registers(self.spec.unit, 8093, [deci_amps, 1 if on else 0])

    def applied(self, state: Mapping[str, Any]) -> Control | None:
        if "applied_current" not in state:
            return None
        enabled = bool(state["applied_enabled"])
        return Control(True, enabled, False, int(state["applied_current"]) if enabled else 0)

    def register_map(self, unit: int) -> RegisterMap:
        return POWERBRAIN_EVSE_MAP if unit == EVSE_UNIT else POWERBRAIN_METER_MAP
