"""Blueprint of a Modbus EVSE profile: copy this file to `evse_<vendor>.py` next to it, change
the names, the register addresses and the scaling, and remove the leading underscore of the
file name (modules whose names start with `_` are not loaded: this one is only an example).

One file per `dev_type` is all a new Modbus device needs: `@register` puts the class in the
profile registry, the Modbus bridge polls every configured device of that type, and the
service lists the type in `dev_meta` (service/app.py registers every profile's type).
tests/unit/test_profile_blueprint.py runs this file against a fake wallbox; a real profile
gets a test against a simulator like tests/integration/test_sim_powerbrain.py.

The imaginary wallbox: holding registers, one Modbus id per wallbox.
  100  status: 0 no car, 1 car present, 2 charging, 3 error
  101  charging current limit, 0.1 A (write)
  102  charging enabled, 0/1 (write)
  110..112  phase currents L1..L3, 0.1 A
  113  power, W
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridges.modbus.connection import ModbusConnection
from bridges.modbus.profiles import Control, Profile, register
from service.core.device_types import DeviceType

STATUS, LIMIT, ENABLE, CURRENTS, POWER = 100, 101, 102, 110, 113
# The vendor's status → the contract's `state` (1 waiting, 2 vehicle, 3 charging, 5 error).
CNF_STATE = {0: 1, 1: 2, 2: 3, 3: 5}


@register
class ExampleEvse(Profile):
    # name (the dev_type in configurations), kind, the name dev_meta shows, transport.
    device_type = DeviceType("evse_example", "evse", "Example wallbox (blueprint)", "modbus")
    # The port when the configured address has none.
    default_port = 502

    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        """One poll → the state payload of docs/mqtt.md (without `ts`: the bridge sets it).
        Raise ModbusError when the wallbox does not answer; the bridge reports com_err."""
        block = await conn.read_holding(self.spec.unit, STATUS, 14)
        return {
            "state": CNF_STATE.get(block[0], 5),
            "current": [block[CURRENTS - STATUS + i] * 100 for i in range(3)],  # 0.1 A → mA
            "power_w": block[POWER - STATUS],
            "model": "Example wallbox",
            # Read back, so the bridge rewrites what a restarted wallbox forgot.
            "applied_current": block[LIMIT - STATUS] * 100,
            "applied_enabled": bool(block[ENABLE - STATUS]),
        }

    async def apply(self, conn: ModbusConnection, control: Control) -> None:
        """The core's command (or the fail-safe): the bridge calls this only on a change."""
        on = control.charging_allowed
        await conn.write_registers(
            self.spec.unit, LIMIT, [control.charging_current // 100 if on else 0, int(on)]
        )

    def applied(self, state: Mapping[str, Any]) -> Control | None:
        """What the wallbox reports it applies (from read_state's read-back)."""
        enabled = bool(state["applied_enabled"])
        return Control(True, enabled, False, int(state["applied_current"]) if enabled else 0)
