"""Virtual meters: devices whose reading the core computes from the installation instead of a
bridge measuring it (the product's "(VM)" device types).

- `meter_virtual_evse_power` — what the EVSEs draw together: the sum of their reported
  currents and power.
- `meter_virtual_available_evse_power` — what the last allocation left for the EVSEs: the
  main group's budget per phase and `avail_evse_power`.
- `meter_virtual_grid_demand` — what the installation takes from the grid: the grid meters
  (role 3) when there are any, else consumption meters (role 1) plus the EVSEs minus
  production meters (role 2).

They are for display (get_dev_info, the `info` topic, Home Assistant): the load balancing
never reads them — it has the same figures first-hand — so their `role` stays 0. Pure: no
I/O, readings built from the state the caller holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from service.core.allocation import Allocation
from service.core.device_types import BUILTIN_TYPES
from service.core.models import EvseConfig, EvseState, MeterConfig, MeterState

GRID_DEMAND: Final = "meter_virtual_grid_demand"
EVSE_POWER: Final = "meter_virtual_evse_power"
AVAILABLE_EVSE_POWER: Final = "meter_virtual_available_evse_power"

# Registered as built-in types (device_types.BUILTIN_TYPES), transport "virtual".
VIRTUAL_TYPE_NAMES: frozenset[str] = frozenset(
    t.name for t in BUILTIN_TYPES if t.transport == "virtual"
)
MODEL = "chargebus,virtual meter"

Reading = tuple[tuple[int, int, int], float]  # (mA per phase, W)
NOTHING: Reading = ((0, 0, 0), 0.0)

Device = EvseConfig | MeterConfig
States = Mapping[str, EvseState | MeterState | None]


def is_virtual(dev_type: str) -> bool:
    return dev_type in VIRTUAL_TYPE_NAMES


def virtual_reading(
    dev_type: str,
    devices: Mapping[str, Device],
    states: States,
    allocation: Allocation | None,
    now: float,
) -> MeterState:
    """The computed state of a virtual meter of `dev_type` (see the module's doc)."""
    if dev_type == AVAILABLE_EVSE_POWER:
        reading = _available(allocation)
    elif dev_type == EVSE_POWER:
        reading = _evses(devices, states)
    elif dev_type == GRID_DEMAND:
        reading = _grid_demand(devices, states)
    else:
        raise ValueError(f"{dev_type!r} is not a virtual meter")
    currents, power = reading
    # Not validated: a sum over many devices may pass a single meter's bounds; it is shown,
    # never balanced on.
    return MeterState.model_construct(
        _fields_set={"ts", "current", "power_w", "model"},
        ts=now,
        current=list(currents),
        power_w=round(power, 1),
        model=MODEL,
    )


def _available(allocation: Allocation | None) -> Reading:
    if allocation is None:
        return NOTHING
    budget = allocation.budget_per_phase.get(0, (0, 0, 0))
    return (budget[0], budget[1], budget[2]), float(allocation.avail_evse_power)


def _evses(devices: Mapping[str, Device], states: States) -> Reading:
    return _sum(
        _evse_reading(st)
        for d in devices.values()
        if isinstance(d, EvseConfig) and d.device_enabled
        and isinstance(st := states.get(d.dev_id), EvseState)
    )  # fmt: skip


def _meters(devices: Mapping[str, Device], states: States, role: int) -> Reading:
    return _sum(
        _meter_reading(st, d.invert)
        for d in devices.values()
        if isinstance(d, MeterConfig) and d.role == role and d.device_enabled
        and not is_virtual(d.dev_type)
        and isinstance(st := states.get(d.dev_id), MeterState)
    )  # fmt: skip


def _grid_demand(devices: Mapping[str, Device], states: States) -> Reading:
    grid_meters = [
        d for d in devices.values()
        if isinstance(d, MeterConfig) and d.role == 3 and not is_virtual(d.dev_type)
    ]  # fmt: skip
    if grid_meters:
        return _meters(devices, states, 3)
    consumed, evses, produced = (
        _meters(devices, states, 1), _evses(devices, states), _meters(devices, states, 2)
    )  # fmt: skip
    currents = tuple(c + e - p for c, e, p in zip(consumed[0], evses[0], produced[0], strict=True))
    return (currents[0], currents[1], currents[2]), consumed[1] + evses[1] - produced[1]


def _evse_reading(state: EvseState) -> Reading:
    c = state.current
    if state.power_w is not None:
        power = state.power_w
    else:
        power = sum(a * v for a, v in zip(c, state.voltage, strict=True)) / 1000
    return (c[0], c[1], c[2]), power


def _meter_reading(state: MeterState, inverted: bool) -> Reading:
    sign = -1 if inverted else 1
    c = [sign * a for a in state.current]
    if state.power_w is not None:
        power = sign * state.power_w
    else:
        power = sum(a * v for a, v in zip(c, state.voltage, strict=True)) / 1000
    return (c[0], c[1], c[2]), power


def _sum(readings: Iterable[Reading]) -> Reading:
    l1 = l2 = l3 = 0
    power = 0.0
    for (a, b, c), watts in readings:
        l1, l2, l3, power = l1 + a, l2 + b, l3 + c, power + watts
    return (l1, l2, l3), power
