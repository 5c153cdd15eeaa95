"""MeterValues → the state's measurements, leniently: real boxes send values as strings,
kW and kWh, phase labels `L1` or `L1-N` (even `N` for a current), per-phase power without a
total, energy with a phase key, and no measurand (then it is the energy register, in Wh).

The input is the `meter_value` list as the `ocpp` library hands it over (keys in
snake_case). Samples are taken newest last by their timestamps when these parse, else in
the order sent; a timestamp is never used for staleness (the bridge stamps the time of
receipt).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

PHASES = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}
_SCALE = {"W": 1.0, "kW": 1000.0, "Wh": 1.0, "kWh": 1000.0, "A": 1.0, "V": 1.0, "kV": 1000.0,
          "mA": 0.001, "VA": 1.0, "kVA": 1000.0}  # fmt: skip
# The spec's default unit per measurand, when a sample gives none.
_DEFAULT_UNIT = {"Current.Import": "A", "Current.Offered": "A", "Voltage": "V",
                 "Power.Active.Import": "W", "Energy.Active.Import.Register": "Wh",
                 "Power.Offered": "W"}  # fmt: skip
ENERGY = "Energy.Active.Import.Register"


@dataclass
class Readings:
    """What one MeterValues message said; None (or a None phase) for what it did not say."""

    current_a: list[float | None] = field(default_factory=lambda: [None, None, None])
    voltage_v: list[float | None] = field(default_factory=lambda: [None, None, None])
    power_w: float | None = None
    energy_wh: float | None = None
    offered_a: float | None = None
    # Current.Import without a phase: counted on L1.
    phaseless_current: bool = False
    transaction_id: int | None = None

    @property
    def has_current(self) -> bool:
        return any(c is not None for c in self.current_a)


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _timestamp(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _in_order(meter_value: list[Any]) -> list[dict[str, Any]]:
    entries = [e for e in meter_value if isinstance(e, dict)]
    stamps = [_timestamp(e.get("timestamp")) for e in entries]
    known = [s for s in stamps if s is not None]
    if len(known) == len(entries):
        order = sorted(range(len(entries)), key=lambda i: known[i])
        return [entries[i] for i in order]
    return entries


def parse(meter_value: Any, transaction_id: Any = None) -> Readings:
    readings = Readings()
    if isinstance(transaction_id, int) and not isinstance(transaction_id, bool):
        readings.transaction_id = transaction_id
    if not isinstance(meter_value, list):
        return readings
    # Per-phase sums for power and energy sent only per phase.
    phase_power: list[float | None] = [None, None, None]
    phase_energy: list[float | None] = [None, None, None]
    for entry in _in_order(meter_value):
        samples = entry.get("sampled_value")
        if not isinstance(samples, list):
            continue
        for sample in samples:
            if isinstance(sample, dict):
                _take(readings, sample, phase_power, phase_energy)
    if readings.power_w is None and any(p is not None for p in phase_power):
        readings.power_w = sum(p or 0.0 for p in phase_power)
    if readings.energy_wh is None and any(e is not None for e in phase_energy):
        readings.energy_wh = sum(e or 0.0 for e in phase_energy)
    return readings


def _take(
    readings: Readings,
    sample: dict[str, Any],
    phase_power: list[float | None],
    phase_energy: list[float | None],
) -> None:
    measurand = sample.get("measurand") or ENERGY
    unit = sample.get("unit") or _DEFAULT_UNIT.get(str(measurand), "")
    value = _number(sample.get("value"))
    if value is None or not isinstance(measurand, str):
        return
    scale = _SCALE.get(str(unit))
    if scale is None:
        # Hz, Celsius, Percent…: not a quantity chargebus reads.
        return
    value *= scale
    phase_label = sample.get("phase")
    phase = PHASES.get(phase_label) if isinstance(phase_label, str) else None
    if measurand == "Current.Import":
        if phase is not None:
            readings.current_a[phase] = value
        elif phase_label in (None, ""):
            readings.current_a[0] = value
            readings.phaseless_current = True
        # "N" (the neutral's current) and line-line labels are not a phase's draw.
    elif measurand == "Voltage":
        if phase is not None:
            readings.voltage_v[phase] = value
        elif phase_label in (None, ""):
            readings.voltage_v = [value, value, value]
    elif measurand == "Power.Active.Import":
        if phase is None:
            readings.power_w = value
        else:
            phase_power[phase] = value
    elif measurand == ENERGY:
        if phase is None:
            readings.energy_wh = value
        else:
            phase_energy[phase] = value
    elif measurand == "Current.Offered" and phase in (None, 0):
        readings.offered_a = value
