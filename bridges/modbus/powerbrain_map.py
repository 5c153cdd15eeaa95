"""cFos Power Brain register maps (holding registers; the sources are marked per entry).

Sources, marked per entry below:
  [V] the vendor's page "cFos Power Brain Controller - Modbus Registers" (cfos-emobility.de)
  [S] the seed's `cmd=modbus` examples (`read=all` of meter2, the writes to `device=evse`)
  [E] evcc's charger/cfos.go, a client used with real wallboxes
"""

from __future__ import annotations

from bridges.modbus.register_map import RegisterEntry, RegisterKind, RegisterMap


def _e(
    address: int, count: int, kind: RegisterKind, name: str, writable: bool = False
) -> RegisterEntry:
    return RegisterEntry(address, count, kind, name, writable)


COMMON: tuple[RegisterEntry, ...] = (
    _e(8000, 2, "u32", "vendor_id"),  # [V] 0xcf05 in the high word [S]
    _e(8002, 1, "u16", "product_id"),  # [V]
    _e(8003, 1, "u16", "device_id"),  # [V] 0x100; the seed's meters answer 0x101 [S]
    # [V] lists product_version 8004 (2 regs) AND product_build 8005 (1 reg), which overlap.
    # The seed's 16777216 = [256, 0] shows 8004 read as 2 registers, so 8005 is its low word
    # here and has no entry of its own (the seed's read=all has no 8005 key either).
    _e(8004, 2, "u32", "product_version"),
    _e(8006, 1, "u16", "mapping_version"),  # [V]
    _e(8007, 1, "u16", "padding_1"),  # [V]
    _e(8008, 8, "str", "serial_no"),  # [V]
    _e(8016, 16, "str", "name"),  # [V]
    _e(8040, 1, "u16", "slave_id", True),  # [V]
)

S0_METER: tuple[RegisterEntry, ...] = (
    _e(8041, 1, "u16", "input"),  # [V]
    _e(8042, 2, "u32", "pulsesperkwh", True),  # [V]
    _e(8044, 1, "u16", "phases", True),  # [V]; 16-bit per the seed's refused "8044d" [S]
    _e(8045, 1, "u16", "voltage_l1", True),  # [V]
    _e(8046, 1, "u16", "voltage_l2", True),  # [V]
    _e(8047, 1, "u16", "voltage_l3", True),  # [V]
    _e(8050, 4, "i64", "pulses", True),  # [V]
    _e(8054, 2, "u32", "timeperpulse"),  # [V]
    _e(8056, 1, "u16", "level"),  # [V]
    _e(8057, 1, "u16", "meter_flags"),  # [V] padding_2; [E] reads ≠ 0 as "has currents"
    _e(8058, 4, "i64", "energy", True),  # [V] Wh
    _e(8062, 2, "i32", "power"),  # [V] W; signed, -1 = unknown [S]
    _e(8064, 2, "i32", "current_l1"),  # [V] 0.1 A
    _e(8066, 2, "i32", "current_l2"),  # [V]
    _e(8068, 2, "i32", "current_l3"),  # [V]
    _e(8070, 1, "u16", "reset_pulses", True),  # [V] write-only; reads as 0 [S]
    _e(8071, 1, "u16", "reg_8071"),  # [S] in read=all, meaning undocumented
)

METER_EXTRA: tuple[RegisterEntry, ...] = (
    _e(8120, 2, "u32", "reg_8120"),  # [S] in read=all, meaning undocumented
)

EVSE: tuple[RegisterEntry, ...] = (
    _e(8086, 1, "u16", "disconnect_cp", True),  # [E] write 5 to wake a car
    _e(8087, 1, "u16", "relay_select", True),  # [E] 0 = 3-phase, 1 = 1-phase
    _e(8092, 1, "u16", "status"),  # [E] low byte 0 A, 1 B, 2 C, 3 D, 4 E, 5 F
    _e(8093, 1, "u16", "charging_cur_limit", True),  # [V][E] 0.1 A
    _e(8094, 1, "u16", "charging_enable", True),  # [V][E] 1 = enabled
    _e(8096, 15, "str", "last_rfid"),  # [E]
    _e(8112, 1, "u16", "has_meter"),  # [E] ≠ 0: 8057..8068 give the meter's readings
    _e(8113, 1, "u16", "capabilities"),  # [E] bit 8 = phase switching available
)

POWERBRAIN_METER_MAP = RegisterMap(COMMON + S0_METER + METER_EXTRA)

# The EVSE answers the meter block too: the seed writes 8044, 8044..8047 and 8050q to
# device=evse and calls 8044 16-bit "in the map" [S], and [E] reads 8057..8068 of the EVSE's
# attached meter at the EVSE's Modbus id.
POWERBRAIN_EVSE_MAP = RegisterMap(COMMON + S0_METER + EVSE)

# Modbus ids of the built-in devices, all on the wallbox's one TCP endpoint (port 4701) [V][E].
EVSE_UNIT = 1
METER1_UNIT = 2
METER2_UNIT = 3
DEFAULT_PORT = 4701
