"""Per-phase figures for a meter that reports its power but no currents.

Such a meter (an HTTP-input meter fed with a smart meter's total, a generic Modbus meter
without current registers) says how much flows, not on which phase. The allocation budgets
per phase, so it must not read "no currents" as "no load", nor spread the power evenly: a
load of 20 A may sit on one phase alone. So the load counts in full on every phase the meter
reports a voltage on (all three when it reports none), as `power / voltage`, at the lowest
of those voltages (the larger current). That over-counts a balanced load; it never
under-counts any phase. A grid meter's share of the EVSEs is then taken off as a whole: see
allocation (`allocation.budgets.Meters.grid_power`).
"""

from __future__ import annotations

import math
from typing import Final

from service.core.models import MeterState
from service.core.phases import ALL_PHASES, ROTATION

NOMINAL_VOLTAGE: Final = 230.0
# A phase reported below this many volts carries nothing (a single-phase meter says 0 V on
# the phases it does not measure).
LIVE_VOLTAGE: Final = 100.0


def power_only(state: MeterState) -> bool:
    """Whether the state gives a power but no currents (its current field is the default)."""
    return state.power_w is not None and "current" not in state.model_fields_set


def power_current(state: MeterState, rotation: int) -> tuple[int, int]:
    """(mA, grid phase mask): the current its power means on each phase of the mask, signed
    as the power is (negative: export), rounded away from zero."""
    assert state.power_w is not None
    volts = state.voltage
    local = sum(1 << i for i in range(3) if volts[i] >= LIVE_VOLTAGE)
    if local:
        voltage = min(volts[i] for i in range(3) if local >> i & 1)
    else:
        # No phase with a voltage: all three, at the nominal voltage.
        local, voltage = ALL_PHASES, NOMINAL_VOLTAGE
    grid = 0
    for i, phase in enumerate(ROTATION[rotation]):
        if local >> i & 1:
            grid |= 1 << phase
    milliamps = state.power_w * 1000 / voltage
    rounded = math.ceil(milliamps) if milliamps >= 0 else math.floor(milliamps)
    return rounded, grid
