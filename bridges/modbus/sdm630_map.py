"""Eastron SDM630 input registers (function 04): IEEE float32, big-endian, high word first."""

from __future__ import annotations

import struct
from collections.abc import Sequence

UNIT_ID = 1  # the meter's factory default Modbus id

VOLTAGE_L1 = 0x0000  # V
VOLTAGE_L2 = 0x0002
VOLTAGE_L3 = 0x0004
CURRENT_L1 = 0x0006  # A
CURRENT_L2 = 0x0008
CURRENT_L3 = 0x000A
TOTAL_POWER = 0x0034  # W, negative when exporting
IMPORT_ENERGY = 0x0048  # kWh
EXPORT_ENERGY = 0x004A  # kWh

VOLTAGES = (VOLTAGE_L1, VOLTAGE_L2, VOLTAGE_L3)
CURRENTS = (CURRENT_L1, CURRENT_L2, CURRENT_L3)

# One read of 0x0000..0x004B covers every value above (76 registers, within Modbus's 125).
BLOCK_START = 0x0000
BLOCK_COUNT = EXPORT_ENERGY + 2 - BLOCK_START


def decode_float32(hi: int, lo: int) -> float:
    value: float = struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
    return value


def encode_float32(x: float) -> tuple[int, int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return hi, lo


def float_at(block: Sequence[int], address: int, start: int = BLOCK_START) -> float:
    """The float32 at `address` in registers read from `start`."""
    i = address - start
    return decode_float32(block[i], block[i + 1])
