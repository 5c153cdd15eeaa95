"""The bus contract (service/core/contract.py) and the bridge kit (bridges/common/): one
parser for every payload, the device directory, the command follower's fail-safe rule."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridges.common.bridge import DeviceBridge
from bridges.common.directory import Change, Config, DeviceDirectory
from bridges.common.follower import CommandFollower, Control, failsafe_control
from service.control_loop import Sent, _command_json
from service.core.contract import (
    Command,
    EvseConfig,
    MeterConfig,
    ParamsView,
    encode,
    is_online,
    parse_command,
    parse_device_config,
    parse_params,
)
from service.core.models import Params
from service.topics import Topics

BASE = "site"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def config(dev_id: str = "E1", **fields: Any) -> bytes:
    return json.dumps({"dev_type": "evse_test", "dev_id": dev_id, **fields}).encode()


# -- the contract -----------------------------------------------------------------------------


def test_a_config_without_failsafe_current_gets_the_models_default() -> None:
    # The Modbus bridge used to read a missing failsafe_current as 0, the model as 6000.
    parsed = parse_device_config(config())
    assert isinstance(parsed, EvseConfig)
    assert parsed.failsafe_current == EvseConfig.model_fields["failsafe_current"].default == 6000


def test_config_kind_follows_the_id_and_unknown_fields_are_left_out() -> None:
    meter = parse_device_config(
        json.dumps({"dev_type": "meter_x", "dev_id": "M2", "role": 3, "from_v9": 1}).encode()
    )
    assert isinstance(meter, MeterConfig) and meter.role == 3
    assert parse_device_config(b"") is None


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (config(failsafe_current=-5), "failsafe_current"),
        (config(id="1"), "id"),
        (json.dumps({"dev_type": "x", "dev_id": "X1"}).encode(), "dev_id"),
    ],
)
def test_bad_configs_say_what_is_wrong(payload: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_device_config(payload)


@given(
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 80_000),
    st.none() | st.floats(0, 1e10),
)
def test_the_cores_hand_made_command_parses_into_the_contract(
    enabled: bool, allowed: bool, paused: bool, current: int, state_ts: float | None
) -> None:
    sent = Sent(enabled, allowed, paused, current, state_ts)
    command = parse_command(_command_json(sent, 1234.5))
    assert command is not None
    assert (command.device_enabled, command.charging_enabled, command.paused) == (
        enabled,
        allowed,
        paused,
    )
    assert command.charging_current == current
    assert command.state_ts == state_ts and command.ts == 1234.5
    on = enabled and allowed and not paused and current > 0
    assert command.effective_current == (current if on else 0)
    assert Control.from_command(command).effective_current == (current if on else 0)


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"{not json", b'{"charging_current": 5}',
     b'{"device_enabled":true,"charging_enabled":true,"paused":false,"charging_current":-1}'],
)  # fmt: skip
def test_what_is_not_a_command(payload: bytes) -> None:
    assert parse_command(payload) is None


def test_params_view_agrees_with_the_core() -> None:
    view = ParamsView()
    assert view.cycle_time == Params().cycle_time
    assert view.stale_after_s == 3 * Params().cycle_time / 1000
    custom = parse_params(b'{"cycle_time": 1000, "stale_time": 0, "title": "x"}')
    assert custom is not None and custom.stale_after_s == 3.0
    explicit = parse_params(b'{"cycle_time": 1000, "stale_time": 4500}')
    assert explicit is not None and explicit.stale_after_s == 4.5
    assert parse_params(b'{"cycle_time": "fast"}') is None
    assert parse_params(b"nope") is None


def test_status_and_encoding() -> None:
    assert is_online(b"online")
    assert not is_online(b"offline") and not is_online(b"") and not is_online(b"Online")
    assert encode({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'
    command = Command(device_enabled=True, charging_enabled=True, paused=False,
                      charging_current=6000)  # fmt: skip
    assert parse_command(encode(command)) == command


# -- the directory ----------------------------------------------------------------------------


def test_the_directory_reports_each_change_once() -> None:
    directory = DeviceDirectory(lambda c: c.dev_type == "evse_test")
    first = directory.on_config("E1", config(name="a"))
    assert first is not None and first.old is None and first.new is not None
    assert directory.on_config("E1", config(name="a")) is None  # the same again: no change
    changed = directory.on_config("E1", config(name="b"))
    assert changed is not None and changed.old is not None and changed.new is not None
    assert changed.new.name == "b"
    assert directory.on_config("E2", config("E2", dev_type="evse_other")) is None
    gone = directory.on_config("E1", b"")
    assert gone == Change("E1", changed.new, None)
    assert directory.on_config("E1", b"") is None
    assert directory.devices == {}


def test_a_device_whose_type_changes_away_is_removed() -> None:
    directory = DeviceDirectory(lambda c: c.dev_type == "evse_test")
    directory.on_config("E1", config())
    change = directory.on_config("E1", config(dev_type="evse_ajax"))
    assert change is not None and change.old is not None and change.new is None


def test_a_broken_config_drops_the_device_and_says_why() -> None:
    directory = DeviceDirectory(lambda c: True)
    directory.on_config("E1", config())
    change = directory.on_config("E1", b"{broken")
    assert change is not None and change.new is None and change.old is not None
    assert "not JSON" in change.error
    assert directory.get("E1") is None


def test_a_config_under_another_id_is_not_taken() -> None:
    directory = DeviceDirectory(lambda c: True)
    assert directory.on_config("E1", config("E9")) is None


# -- the follower -----------------------------------------------------------------------------


def test_follower_rules() -> None:
    clock = Clock()
    follower = CommandFollower(clock)
    follower.follow("E1", 8000)
    follower.on_params(ParamsView(cycle_time=1000))
    # Before the core's status: nothing.
    assert follower.wanted("E1") == (None, False)
    assert follower.on_core_status(b"online") is True
    assert follower.on_core_status(b"online") is False
    follower.on_command("E1", Control(True, True, False, 12_000), retained=False)
    assert follower.wanted("E1") == (Control(True, True, False, 12_000), False)
    clock.now += 3.0
    assert follower.wanted("E1")[1] is False
    clock.now += 0.1
    assert follower.wanted("E1") == (failsafe_control(8000), True)
    # A retained command is no fresh news.
    follower.on_command("E1", Control(True, True, False, 16_000), retained=True)
    assert follower.wanted("E1")[1] is True
    follower.on_command("E1", Control(True, True, False, 16_000), retained=False)
    assert follower.wanted("E1")[1] is False
    follower.on_core_status(b"offline")
    assert follower.wanted("E1") == (failsafe_control(8000), True)
    assert follower.note_failsafe("E1", True) is True
    assert follower.note_failsafe("E1", True) is False


def test_failsafe_zero_means_no_charging() -> None:
    control = failsafe_control(0)
    assert not control.charging_allowed and control.effective_current == 0


# -- the base bridge --------------------------------------------------------------------------


class Recorder(DeviceBridge):
    def __init__(self, clock: Clock) -> None:
        super().__init__(Topics(BASE), "test", clock=clock)
        self.changes: list[Change] = []
        self.commands: list[str] = []

    def serves(self, config: Config) -> bool:
        return config.dev_type == "evse_test"

    def device_changed(self, change: Change) -> None:
        self.changes.append(change)

    def command_changed(self, dev_id: str) -> None:
        self.commands.append(dev_id)


def command(current: int) -> bytes:
    return json.dumps(
        {"device_enabled": True, "charging_enabled": True, "paused": False,
         "charging_current": current, "ts": 1.0, "state_ts": None}
    ).encode()  # fmt: skip


def test_device_bridge_routes_the_cores_topics() -> None:
    clock = Clock()
    bridge = Recorder(clock)
    assert bridge.subscriptions() == [
        f"{BASE}/devices/+/config",
        f"{BASE}/status",
        f"{BASE}/params",
    ]
    assert bridge.status_topic == f"{BASE}/bridges/test/status"
    bridge.on_message(f"{BASE}/devices/E1/config", config(failsafe_current=7000), True)
    bridge.on_message(f"{BASE}/devices/E2/config", config("E2", dev_type="evse_ajax"), True)
    # The commands of its own devices only.
    assert f"{BASE}/devices/E1/command" in bridge.subscriptions()
    assert f"{BASE}/devices/E2/command" not in bridge.subscriptions()
    assert [c.dev_id for c in bridge.changes] == ["E1"]
    assert bridge.follower.devices["E1"].failsafe_current == 7000
    bridge.on_message(f"{BASE}/status", b"online", True)
    bridge.on_message(f"{BASE}/devices/E1/command", command(10_000), False)
    bridge.on_message(f"{BASE}/devices/E2/command", command(10_000), False)
    assert bridge.commands == ["E1", "E1"]  # the status change, then the command
    assert bridge.follower.wanted("E1") == (Control(True, True, False, 10_000), False)
    bridge.on_message(f"{BASE}/devices/E1/command", b"junk", False)
    bridge.on_message(f"{BASE}/params", b'{"cycle_time": -1}', True)
    bridge.on_message(f"{BASE}/devices/E1/config", b"{junk", True)
    assert bridge.rejected == 3
    assert bridge.changes[-1].new is None and "E1" not in bridge.follower.devices


async def test_the_command_subscriptions_follow_the_devices_served() -> None:
    """Once per burst of configs, on the loop's next turn: the runner hands the list to
    MqttBus.replace_subscriptions."""
    bridge = Recorder(Clock())
    told: list[list[str]] = []
    bridge.subscriptions_changed = told.append
    for dev_id in ("E1", "E2", "E3"):
        bridge.on_message(f"{BASE}/devices/{dev_id}/config", config(dev_id), True)
    bridge.on_message(f"{BASE}/devices/E9/config", config("E9", dev_type="evse_ajax"), True)
    assert told == []
    await asyncio.sleep(0)
    assert len(told) == 1
    commands = [t for t in told[0] if t.endswith("/command")]
    assert commands == [f"{BASE}/devices/E{i}/command" for i in (1, 2, 3)]
    # A config that changes nothing served changes no subscription.
    bridge.on_message(f"{BASE}/devices/E1/config", config("E1", failsafe_current=8000), True)
    await asyncio.sleep(0)
    assert len(told) == 1
    bridge.on_message(f"{BASE}/devices/E2/config", b"", True)
    await asyncio.sleep(0)
    assert len(told) == 2
    assert f"{BASE}/devices/E2/command" not in told[1]
    assert f"{BASE}/devices/E1/command" in told[1]
