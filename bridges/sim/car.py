"""A simulated car at a wallbox (pure, deterministic).

Life cycle: unplugged (1) -> plugged (2) -> charging (3) while the wallbox enables charging with
at least 6 A -> plugged again (2) once the battery is full, until unplugged. The state numbers
are the /cnf API's EVSE states.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MIN_CHARGING_MA = 6000  # IEC 61851: a car may not charge below 6 A


class CarState(IntEnum):
    UNPLUGGED = 1
    PLUGGED = 2
    CHARGING = 3


Currents = tuple[int, int, int]
NO_CURRENT: Currents = (0, 0, 0)


@dataclass
class Car:
    capacity_wh: float = 60_000.0
    energy_wh: float = 30_000.0
    phases: int = 3  # 1 or 3: the phases the car's charger uses, from L1 on
    max_current_ma: int = 16_000
    voltage_v: float = 230.0
    plugged: bool = False
    state: CarState = CarState.UNPLUGGED
    # How fast the charger follows a higher offer (mA per s); None = at once. Real cars take
    # seconds, and a load manager must cope with meters that see the ramp at different times.
    ramp_ma_per_s: float | None = None
    drawing_ma: int = 0

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError("a car charges on 1 or 3 phases")
        self.state = CarState.PLUGGED if self.plugged else CarState.UNPLUGGED

    @property
    def full(self) -> bool:
        return self.energy_wh >= self.capacity_wh

    def plug(self) -> None:
        self.plugged = True
        if self.state == CarState.UNPLUGGED:
            self.state = CarState.PLUGGED

    def unplug(self) -> None:
        self.plugged = False
        self.state = CarState.UNPLUGGED

    def step(self, dt_s: float, limit_ma: int, enabled: bool, *, max_phases: int = 3) -> Currents:
        """Charges for `dt_s` under the wallbox's offer; returns the currents drawn (mA, L1..L3).

        `max_phases` = 1 when the wallbox switched to one phase (relay_select)."""
        if not self.plugged:
            self.state = CarState.UNPLUGGED
            self.drawing_ma = 0
            return NO_CURRENT
        if self.full or not enabled or limit_ma < MIN_CHARGING_MA:
            self.state = CarState.PLUGGED
            self.drawing_ma = 0
            return NO_CURRENT
        self.state = CarState.CHARGING
        current = min(limit_ma, self.max_current_ma)
        if self.ramp_ma_per_s is not None and current > self.drawing_ma:
            start = max(self.drawing_ma, MIN_CHARGING_MA)
            current = min(current, round(start + self.ramp_ma_per_s * max(dt_s, 0.0)))
        self.drawing_ma = current
        phases = min(self.phases, max_phases)
        self.energy_wh = min(
            self.capacity_wh,
            self.energy_wh + current / 1000 * self.voltage_v * phases * max(dt_s, 0.0) / 3600,
        )
        # Filling up during this step still drew current: the car stops (state 2) next step.
        return (current, current if phases == 3 else 0, current if phases == 3 else 0)
