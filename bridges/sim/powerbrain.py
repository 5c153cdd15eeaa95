"""Device model of one simulated cFos Power Brain wallbox (no I/O; server.py serves it).

Three Modbus devices on one endpoint, as on the real wallbox's port 4701: the EVSE (id 1, with
its built-in meter's readings), S0 meter 1 (id 2, measuring what the EVSE draws) and S0 meter 2
(id 3, idle: power -1 like the seed's `read=all` answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridges.modbus.powerbrain_map import (
    EVSE_UNIT,
    METER1_UNIT,
    METER2_UNIT,
    POWERBRAIN_EVSE_MAP,
    POWERBRAIN_METER_MAP,
)
from bridges.modbus.register_map import (
    RegisterMap,
    decode_kind,
    encode,
)
from bridges.sim.car import NO_CURRENT, Car, CarState, Currents

DEFAULT_SERIAL = "fcf5-c46d-310c"  # the seed's meter serial
DEFAULT_NAME = "cFos Power Brain"

# Register status, low byte: 0 A (no car), 1 B (car present), 2 C (charging).
_STATUS_BY_CAR_STATE = {CarState.UNPLUGGED: 0, CarState.PLUGGED: 1, CarState.CHARGING: 2}

WriteHook = Callable[[int, int], None]


class RegisterDevice:
    """One Modbus device: its map and 16-bit words; unknown addresses read as 0."""

    def __init__(self, unit: int, regmap: RegisterMap, on_write: WriteHook | None = None) -> None:
        self.unit = unit
        self.regmap = regmap
        self.words: dict[int, int] = {}
        self._on_write = on_write

    def get(self, name: str) -> int | str:
        entry = self.regmap.by_name(name)
        return decode_kind(entry.kind, self.read(entry.address, entry.count))

    def get_int(self, name: str) -> int:
        value = self.get(name)
        assert isinstance(value, int)
        return value

    def set(self, name: str, value: int | str) -> None:
        """Sets a value as the device itself does (no writable check)."""
        entry = self.regmap.by_name(name)
        words = encode(entry.suffix, value, count=entry.count)
        for i, word in enumerate(words):
            self.words[entry.address + i] = word

    def read(self, address: int, count: int) -> list[int]:
        return [self.words.get(a, 0) for a in range(address, address + count)]

    def write(self, address: int, values: Sequence[int]) -> bool:
        """A Modbus write; False (nothing changed) unless every word is in a writable entry."""
        for a in range(address, address + len(values)):
            entry = self.regmap.entry_covering(a)
            if entry is None or not entry.writable:
                return False
        if not all(0 <= v <= 0xFFFF for v in values):
            return False
        for i, word in enumerate(values):
            self.words[address + i] = word
        if self._on_write is not None:
            self._on_write(address, len(values))
        return True


def _touches(address: int, count: int, entry_address: int, entry_count: int) -> bool:
    return address < entry_address + entry_count and entry_address < address + count


@dataclass
class MeterCounter:
    """An S0 meter's running totals; floats so short ticks don't round away."""

    energy_wh: float = 0.0
    pulses: float = 0.0


class PowerBrain:
    def __init__(
        self,
        *,
        serial: str = DEFAULT_SERIAL,
        name: str = DEFAULT_NAME,
        charging_cur_limit_ma: int = 16_000,
        charging_enabled: bool = False,
    ) -> None:
        self.car: Car | None = None
        self.drawn_ma: Currents = NO_CURRENT
        self.power_w = 0
        self.evse = RegisterDevice(EVSE_UNIT, POWERBRAIN_EVSE_MAP, self._evse_written)
        self.meter1 = RegisterDevice(METER1_UNIT, POWERBRAIN_METER_MAP, self._meter1_written)
        self.meter2 = RegisterDevice(METER2_UNIT, POWERBRAIN_METER_MAP, self._meter2_written)
        self._counters = {EVSE_UNIT: MeterCounter(), METER1_UNIT: MeterCounter(),
                          METER2_UNIT: MeterCounter()}
        for device, device_id, phases in (
            (self.evse, 0x100, 7), (self.meter1, 0x101, 7), (self.meter2, 0x101, 1)
        ):
            _init_common(device, device_id, serial, name)
            _init_s0_meter(device, phases)
        self.meter2.set("power", -1)  # idle meter 2: no reading, like the seed's answer
        self.evse.set("meter_flags", 1)  # the EVSE's meter reports currents (evcc reads this)
        self.meter1.set("meter_flags", 1)
        self.evse.set("has_meter", 1)
        self.evse.set("capabilities", 0x100)  # phase switching available
        self.evse.set("charging_cur_limit", charging_cur_limit_ma // 100)
        self.evse.set("charging_enable", int(charging_enabled))

    @property
    def devices(self) -> tuple[RegisterDevice, RegisterDevice, RegisterDevice]:
        return self.evse, self.meter1, self.meter2

    @property
    def limit_ma(self) -> int:
        return self.evse.get_int("charging_cur_limit") * 100

    @property
    def charging_enabled(self) -> bool:
        return self.evse.get_int("charging_enable") != 0

    @property
    def one_phase(self) -> bool:
        return self.evse.get_int("relay_select") == 1

    @property
    def state(self) -> CarState:
        return CarState.UNPLUGGED if self.car is None else self.car.state

    def plug_in(self, car: Car | None = None) -> Car:
        self.car = car if car is not None else Car()
        self.car.plug()
        self._publish_status()
        return self.car

    def unplug(self) -> None:
        if self.car is not None:
            self.car.unplug()
        self.car = None
        self._publish_status()

    def present_rfid(self, rfid: str) -> None:
        self.evse.set("last_rfid", rfid)

    def step(self, dt_s: float) -> None:
        """Advances the wallbox and its car by `dt_s` seconds."""
        if self.car is None:
            self.drawn_ma = NO_CURRENT
        else:
            self.drawn_ma = self.car.step(
                dt_s, self.limit_ma, self.charging_enabled,
                max_phases=1 if self.one_phase else 3,
            )
        volts = [self.evse.get_int(f"voltage_l{i}") for i in (1, 2, 3)]
        self.power_w = round(sum(ma / 1000 * v for ma, v in zip(self.drawn_ma, volts, strict=True)))
        for device in (self.evse, self.meter1):
            self._measure(device, dt_s)
        self._publish_status()

    def _measure(self, device: RegisterDevice, dt_s: float) -> None:
        counter = self._counters[device.unit]
        delta_wh = self.power_w * max(dt_s, 0.0) / 3600
        counter.energy_wh += delta_wh
        per_kwh = device.get_int("pulsesperkwh")
        counter.pulses += delta_wh * per_kwh / 1000
        device.set("energy", int(counter.energy_wh))
        device.set("pulses", int(counter.pulses))
        device.set("power", self.power_w)
        for i, ma in enumerate(self.drawn_ma, start=1):
            device.set(f"current_l{i}", round(ma / 100))
        # Time between S0 pulses at this power: 3.6e9 ms·W per (pulses per Wh ·1000).
        ms = round(3.6e9 / (self.power_w * per_kwh)) if self.power_w > 0 and per_kwh else 0
        device.set("timeperpulse", min(ms, 0xFFFFFFFF))

    def _publish_status(self) -> None:
        self.evse.set("status", _STATUS_BY_CAR_STATE[self.state])

    # Writes of counters take effect in the float totals, or the next tick would undo them.
    def _counter_written(self, device: RegisterDevice, address: int, count: int) -> None:
        counter = self._counters[device.unit]
        regmap = device.regmap
        energy = regmap.by_name("energy")
        if _touches(address, count, energy.address, energy.count):
            counter.energy_wh = float(device.get_int("energy"))
        pulses = regmap.by_name("pulses")
        if _touches(address, count, pulses.address, pulses.count):
            counter.pulses = float(device.get_int("pulses"))
        reset = regmap.by_name("reset_pulses")
        if _touches(address, count, reset.address, reset.count):
            if device.get_int("reset_pulses"):
                counter.pulses = 0.0
                device.set("pulses", 0)
            device.set("reset_pulses", 0)

    def _evse_written(self, address: int, count: int) -> None:
        self._counter_written(self.evse, address, count)
        disconnect = self.evse.regmap.by_name("disconnect_cp")
        if _touches(address, count, disconnect.address, disconnect.count):
            # disconnect_cp is a command, not a setting; a car would wake up here.
            self.evse.set("disconnect_cp", 0)

    def _meter1_written(self, address: int, count: int) -> None:
        self._counter_written(self.meter1, address, count)

    def _meter2_written(self, address: int, count: int) -> None:
        self._counter_written(self.meter2, address, count)


def _init_common(device: RegisterDevice, device_id: int, serial: str, name: str) -> None:
    device.set("vendor_id", 0xCF05_0000)
    device.set("product_id", 1)
    device.set("device_id", device_id)
    device.set("product_version", 0x0100_0000)  # the seed's 16777216
    device.set("mapping_version", 0x0100)  # 1.0
    device.set("serial_no", serial)
    device.set("name", name)
    # The seed's meter 2 answers 41 here; we answer the id it is addressed by.
    device.set("slave_id", device.unit)


def _init_s0_meter(device: RegisterDevice, phases: int) -> None:
    device.set("input", 1)  # as in the seed
    device.set("pulsesperkwh", 1000)
    device.set("phases", phases)
    for i in (1, 2, 3):
        device.set(f"voltage_l{i}", 230)
