"""A simulated Eastron SDM630 at the grid connection (no I/O; server.py serves it).

It reads a base load plus whatever the given Power Brains draw, so a load manager reading it
sees the effect of its own commands.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridges.modbus import sdm630_map as sdm
from bridges.sim.car import Currents
from bridges.sim.powerbrain import PowerBrain


class GridMeter:
    def __init__(
        self,
        sources: Sequence[PowerBrain] = (),
        *,
        base_load_ma: Currents = (2000, 2000, 2000),
        voltage_v: float = 230.0,
        unit: int = sdm.UNIT_ID,
    ) -> None:
        self.unit = unit
        self.sources = list(sources)
        self.base_load_ma = base_load_ma
        self.voltage_v = voltage_v
        self.import_kwh = 0.0
        self.export_kwh = 0.0
        self.currents_ma: Currents = base_load_ma
        self.power_w = 0.0
        self._words: dict[int, int] = {}
        self._update(0.0)

    def step(self, dt_s: float) -> None:
        """Takes the sources' draw of their last step; step them first."""
        self._update(dt_s)

    def _update(self, dt_s: float) -> None:
        l1, l2, l3 = self.base_load_ma
        for source in self.sources:
            d1, d2, d3 = source.drawn_ma
            l1, l2, l3 = l1 + d1, l2 + d2, l3 + d3
        self.currents_ma = (l1, l2, l3)
        self.power_w = sum(self.currents_ma) / 1000 * self.voltage_v
        energy_kwh = abs(self.power_w) * max(dt_s, 0.0) / 3.6e6
        if self.power_w >= 0:
            self.import_kwh += energy_kwh
        else:
            self.export_kwh += energy_kwh
        for address in sdm.VOLTAGES:
            self._put(address, self.voltage_v)
        for address, ma in zip(sdm.CURRENTS, self.currents_ma, strict=True):
            self._put(address, ma / 1000)
        self._put(sdm.TOTAL_POWER, self.power_w)
        self._put(sdm.IMPORT_ENERGY, self.import_kwh)
        self._put(sdm.EXPORT_ENERGY, self.export_kwh)

    def _put(self, address: int, value: float) -> None:
        self._words[address], self._words[address + 1] = sdm.encode_float32(value)

    def read(self, address: int, count: int) -> list[int]:
        return [self._words.get(a, 0) for a in range(address, address + count)]

    def write(self, address: int, values: Sequence[int]) -> bool:
        return False  # measurements only
