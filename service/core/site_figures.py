"""The site's figures for the dashboard's chart: grid and EVSE current per grid phase.

Pure: it reads configuration and the last measured states, nothing else. The dashboard hub
(service/http/events.py) samples it every few seconds and keeps the last minutes.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.core.allocation.model import ROLE_GRID
from service.core.meter_power import power_current, power_only
from service.core.models import (
    EvseConfig,
    EvseState,
    Installation,
    MeterConfig,
    MeterState,
)
from service.core.phases import to_grid

MAIN_GROUP = 0

Phases = tuple[float, float, float]


def _grid_reading(config: MeterConfig, state: MeterState) -> list[int]:
    """A grid meter's reading per grid phase, mA, signed: its currents, or for a meter that
    reports only power the current that power means on each phase (meter_power), as the
    allocation counts it."""
    sign = -1 if config.invert else 1
    if power_only(state):
        current, mask = power_current(state, config.phase_rotation)
        return [sign * current if mask >> p & 1 else 0 for p in range(3)]
    return [sign * c for c in to_grid(config.phase_rotation, state.current)]


def site_currents(
    installation: Installation, states: Mapping[str, EvseState | MeterState | None]
) -> tuple[list[int] | None, list[int]]:
    """(grid, evses): the main group's grid meters (role 3) summed per grid phase, mA, or
    None without one that has reported; and every EVSE's measured current per grid phase,
    summed (negative readings count as 0, as the allocation counts them)."""
    grid: list[int] | None = None
    evses = [0, 0, 0]
    for dev_id, config in installation.devices.items():
        state = states.get(dev_id)
        if state is None or not config.device_enabled:
            continue
        if isinstance(config, MeterConfig) and isinstance(state, MeterState):
            if config.role != ROLE_GRID or config.group != MAIN_GROUP:
                continue
            moved = _grid_reading(config, state)
            grid = [a + b for a, b in zip(grid or [0, 0, 0], moved, strict=True)]
        elif isinstance(config, EvseConfig) and isinstance(state, EvseState):
            positive = [max(0, c) for c in state.current]
            moved = list(to_grid(config.phase_rotation, positive))
            evses = [a + b for a, b in zip(evses, moved, strict=True)]
    return grid, evses


def chart_sample(
    now: float, grid: list[int] | None, evses: list[int]
) -> list[float | None]:
    """One point of the chart: [unix s, grid L1..L3 A (None without a grid meter), EVSEs
    L1..L3 A], rounded to 0.1 A so that the stream stays small."""
    grid_a: list[float | None] = (
        [round(c / 1000, 1) for c in grid] if grid is not None else [None, None, None]
    )
    return [round(now, 1), *grid_a, *(round(c / 1000, 1) for c in evses)]


# EVSE states with a vehicle (2 connected, 3 charging, 4 charging with ventilation); 5 error
# and 6 offline say nothing about it, so a session outlives them.
VEHICLE_STATES = frozenset({2, 3, 4})
NO_VEHICLE = 1


def session_start(
    held: tuple[float, float] | None, info: Mapping[str, object], now: float
) -> tuple[float, float] | None:
    """The (energy counter in Wh, unix s) a charging session began at, kept from `held`,
    begun when a vehicle appears, ended when the EVSE reports none. A session found already
    running (the service or the device just started) begins at the first sight: the page says
    since when it counts."""
    state = info.get("state")
    energy = info.get("total_energy")
    if state == NO_VEHICLE:
        return None
    if held is not None or state not in VEHICLE_STATES or not isinstance(energy, int | float):
        return held
    return (float(energy), round(now))
