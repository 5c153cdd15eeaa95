"""When the Modbus bridge applies the fail-safe current (bridges/modbus/bridge.py), by its
messages alone: no broker, no device."""

from __future__ import annotations

import json

from bridges.modbus.bridge import ModbusBridge, parse_command
from bridges.modbus.profiles import Control
from service.topics import Topics

BASE = "site"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bridge_with_evse(clock: Clock, failsafe_current: int = 8000) -> ModbusBridge:
    bridge = ModbusBridge(Topics(BASE), clock=clock)
    config = {
        "dev_type": "evse_powerbrain", "dev_id": "E1", "address": "127.0.0.1:4701", "id": 1,
        "failsafe_current": failsafe_current,
    }  # fmt: skip
    bridge.on_message(f"{BASE}/devices/E1/config", json.dumps(config).encode(), True)
    bridge.on_message(f"{BASE}/params", json.dumps({"cycle_time": 1000}).encode(), True)
    return bridge


def command(current: int) -> bytes:
    return json.dumps(
        {"device_enabled": True, "charging_enabled": True, "paused": False,
         "charging_current": current, "ts": 1.0, "state_ts": None}
    ).encode()  # fmt: skip


def test_a_start_before_the_core_status_arrives_writes_nothing() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock)
    assert bridge.wanted(bridge.workers["E1"]) == (None, False)


def test_commands_apply_while_the_core_is_online_and_fresh() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock)
    bridge.on_message(f"{BASE}/status", b"online", True)
    bridge.on_message(f"{BASE}/devices/E1/command", command(12_000), False)
    assert bridge.wanted(bridge.workers["E1"]) == (Control(True, True, False, 12_000), False)


def test_core_offline_means_failsafe_at_once() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock)
    bridge.on_message(f"{BASE}/status", b"online", True)
    bridge.on_message(f"{BASE}/devices/E1/command", command(12_000), False)
    bridge.on_message(f"{BASE}/status", b"offline", False)
    assert bridge.wanted(bridge.workers["E1"]) == (Control(True, True, False, 8000), True)


def test_silence_longer_than_the_staleness_age_means_failsafe() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock, failsafe_current=0)
    bridge.on_message(f"{BASE}/status", b"online", True)
    bridge.on_message(f"{BASE}/devices/E1/command", command(12_000), False)
    clock.now += 3.0  # 3 x cycle_time: still fresh
    assert bridge.wanted(bridge.workers["E1"])[1] is False
    clock.now += 0.1
    control, failsafe = bridge.wanted(bridge.workers["E1"])
    assert failsafe and control is not None and not control.charging_allowed


def test_a_retained_command_is_not_fresh_news() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock)
    bridge.on_message(f"{BASE}/status", b"online", True)
    clock.now += 10
    # After a restart of the bridge's connection, the broker hands out the old command.
    bridge.on_message(f"{BASE}/devices/E1/command", command(16_000), True)
    assert bridge.wanted(bridge.workers["E1"])[1] is True


def test_malformed_commands_are_counted_and_ignored() -> None:
    clock = Clock()
    bridge = bridge_with_evse(clock)
    bridge.on_message(f"{BASE}/devices/E1/command", b"{not json", False)
    bridge.on_message(f"{BASE}/devices/E1/command", b'{"charging_current": 5}', False)
    assert bridge.stats.rejected == 2
    assert bridge.workers["E1"].command is None
    assert parse_command(b"[]") is None
