"""The OCPP bridge through a real mosquitto, with simulated OCPP charge points (the `ocpp`
library in the charge-point role, bridges/sim/ocpp_cp.py) and the service in-process:
boot, a user's RFID, charging, a grid overload, pause and resume, reconnects, the
fail-safe, two connectors, several boxes on one fuse, and the boxes' quirks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridges.ocpp.bridge import OcppBridge
from bridges.ocpp.runner import ocpp_bridge
from bridges.sim.car import Car
from bridges.sim.ocpp_cp import SimChargePoint
from service.app import RunningService, running_service
from service.core.models import EvseState
from service.demo import running_demo
from service.settings import Settings
from tests.broker import BrokerAddress
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

GRID = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}


def ocpp_evse(dev_id: str, cp_id: str, connector: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "dev_type": "evse_ocpp", "dev_id": dev_id, "address": cp_id, "id": connector,
        "min_charging_cur": 6000, "max_charging_cur": 16000, "ocpp_meter_interval": 2,
        **fields,
    }  # fmt: skip


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RunningService]:
    # Port 0: the OCPP listener takes a free port (19520 may be in use on this machine).
    async with running_service(settings.model_copy(update={"ocpp_port": 0})) as running:
        await running.bus.wait_connected(10)
        assert running.ocpp is not None
        running.ocpp.boot_wait_s = 1.0
        yield running


class Boxes:
    """Simulated charge points running against the service's OCPP port until the test ends."""

    def __init__(self, bridge: OcppBridge) -> None:
        self.bridge = bridge
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def url(self) -> str:
        port = await asyncio.wait_for(self.bridge.listen(), 10)
        return f"ws://127.0.0.1:{port}/steve/websocket/"

    async def start(self, cp_id: str, retry_s: float = 0.2, **options: Any) -> SimChargePoint:
        options = {"tick_s": 0.1, "meter_interval": 1.0, **options}
        box = SimChargePoint(cp_id, await self.url(), **options)
        self.tasks.append(asyncio.create_task(box.run(self.stop, retry_s=retry_s)))
        return box

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


@pytest.fixture
async def boxes(service: RunningService) -> AsyncIterator[Boxes]:
    assert service.ocpp is not None
    started = Boxes(service.ocpp)
    try:
        yield started
    finally:
        await started.close()


async def dev_info(api: Api, dev_id: str) -> dict[str, Any]:
    info = await api.ok(cmd="get_dev_info")
    return next(d for d in info["devices"] if d["dev_id"] == dev_id)


async def meter(api: Api, amps: float) -> None:
    ma = int(amps * 1000)
    status, answer = await api.post(
        {"current": [ma, ma, ma], "voltage": [230, 230, 230]},
        api.admin,
        cmd="set_ajax_meter",
        dev_id="M1",
    )
    assert (status, answer) == (200, "ok"), answer


def limit(box: SimChargePoint, connector: int = 1) -> Callable[[], float | None]:
    return lambda: box.connectors[connector].limit_a


async def test_boot_rfid_charge_overload_pause_resume(
    api: Api,
    service: RunningService,
    boxes: Boxes,
    observer: MqttObserver,
    base_topic: str,
    mqtt_broker: BrokerAddress,
) -> None:
    user = {"id": "1001", "name": "Ann", "rfids": [{"id": "CARD-4711"}]}
    status, _ = await api.post(user, api.admin, cmd="set_user")
    assert status == 200
    await api.set_params(
        {"max_total_current": 32000, "cycle_time": 1000, **IMMEDIATE,
         "devices": [GRID, ocpp_evse("E1", "CP-A", users=["1001"])]}
    )  # fmt: skip
    bridge = service.http_input
    assert bridge is not None
    await eventually(lambda: bridge.device_kind("M1") == "meter", "the grid meter is known")
    await meter(api, 0)
    box = await boxes.start("CP-A", cars=[Car(phases=3)])
    await asyncio.wait_for(box.accepted.wait(), 10)
    # Connected: the device says so, and the box was set up once.
    await eventually(lambda: box.changed_keys != [], "the box's measurands are set")
    assert "MeterValuesSampledData" in box.changed_keys
    await eventually(
        lambda: service.state.runtime["E1"].state is not None, "the core has a state of E1"
    )
    info = await dev_info(api, "E1")
    assert info["ocpp"]["status"] == "connected" and info["model"].startswith("chargebus,SimBox")
    # Shown like any EVSE: dev_meta, get_params's OCPP server settings, /metrics, HA discovery.
    params = await api.ok(cmd="get_params")
    assert params["dev_meta"]["evse_ocpp"] == "EVSE with OCPP 1.6"
    assert (params["ocpp_srv_port"], params["ocpp_srv_tls_mode"]) == (0, "off")
    async with api.session.get(api.url.replace("/cnf", "/metrics")) as response:
        assert 'chargebus_device_com_err{dev_id="E1"} 0.0' in await response.text()
    node = f"chargebus_{params['vsn']['serialno']}_E1"
    # Only this site's node: the session broker keeps every other test's discovery too.
    with MqttObserver(mqtt_broker.host, mqtt_broker.port, [f"homeassistant/+/{node}/#"]) as ha:
        await ha.wait(f"homeassistant/sensor/{node}/current_l1/config", timeout=10)

    # A card the core does not know: the box may start, but the limit is 0.
    box.plug(1, id_tag="STRANGER")
    await eventually(lambda: box.connectors[1].limit_a == 0.0, "a refused card gets limit 0")
    assert box.connectors[1].car.drawing_ma == 0
    box.unplug(1)
    await eventually(lambda: box.connectors[1].status == "Available", "unplugged")

    # The user's card: charging at the maximum.
    box.plug(1, id_tag="CARD-4711")
    await eventually(lambda: box.connectors[1].limit_a == 16.0, "the user's card charges")
    await eventually(lambda: box.connectors[1].status == "Charging", "the car charges")

    async def drawn() -> bool:
        info = await dev_info(api, "E1")
        return bool(info["state"] == 3 and info["current_l1"] >= 15000)

    await eventually(drawn, "the core sees the car draw")

    # The grid meter shows an overload: the profile goes down (decreases go out at once).
    profiles_before = len(box.connectors[1].profiles)
    await meter(api, 40)
    await eventually(lambda: (box.connectors[1].limit_a or 99) < 16.0, "the overload cuts E1")
    assert len(box.connectors[1].profiles) > profiles_before
    profile = box.connectors[1].profiles[-1]
    assert profile["charging_profile_purpose"] == "TxDefaultProfile"
    assert profile["charging_schedule"]["charging_rate_unit"] == "A"
    assert profile["charging_profile_id"] == box.connectors[1].profiles[0]["charging_profile_id"]
    assert "start_schedule" in profile["charging_schedule"]
    # Fresh values are asked for after each change (meter values come only every interval).
    assert "MeterValues" in box.triggered

    # Pause (override) and resume: limit 0, then the current again.
    assert await api.ok(cmd="override_device", dev_id="E1", flags="C") == "ok"
    await eventually(lambda: box.connectors[1].limit_a == 0.0, "paused: limit 0")
    await meter(api, 0)
    assert await api.ok(cmd="override_device", dev_id="E1", flags="c") == "ok"
    await eventually(lambda: (box.connectors[1].limit_a or 0) >= 6.0, "resumed")

    # Commands repeat every cycle, but a profile goes out only when the limit changes.
    await eventually(lambda: box.connectors[1].limit_a == 16.0, "back at the maximum")
    settled = len(box.connectors[1].profiles)
    await asyncio.sleep(3.5)
    limits = [p["charging_schedule"]["charging_schedule_period"][0]["limit"]
              for p in box.connectors[1].profiles[settled - 1 :]]  # fmt: skip
    assert len(limits) == len(set(limits)), f"a profile repeated an unchanged limit: {limits}"


async def test_states_are_republished_between_meter_values(
    api: Api, service: RunningService, boxes: Boxes, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params({"cycle_time": 500, **IMMEDIATE, "devices": [ocpp_evse("E1", "CP-Q")]})
    box = await boxes.start("CP-Q", meter_interval=60.0)
    await asyncio.wait_for(box.accepted.wait(), 10)
    topic = f"{base_topic}/devices/E1/state"
    first = await observer.wait(topic, lambda m: m.json().get("com_err") is False)
    # The box sends no meter values (none for 60 s, no transaction): the bridge still
    # reports the healthy connector every cycle, so the core never counts it stale.
    await asyncio.sleep(2.0)
    fresh = [m for m in observer.on(topic) if m.json().get("ts", 0) > first.json()["ts"]]
    assert len(fresh) >= 3
    assert all(m.json()["state"] == 1 and not m.json()["com_err"] for m in fresh)
    info = await dev_info(api, "E1")
    assert not info["com_err"], repr((info, service.state.runtime["E1"]))[-3000:]


async def test_reconnect_replaces_and_boot_is_asked_for(
    api: Api, service: RunningService, boxes: Boxes
) -> None:
    """A box that sends no BootNotification on reconnect is asked for one (TriggerMessage);
    a second connection under the same id replaces the first; the limit is sent again."""
    await api.set_params({"cycle_time": 1000, **IMMEDIATE, "devices": [ocpp_evse("E1", "CP-R")]})
    # The bridge learns of the charge point over the bus: a box that came first would be
    # refused (404), and this one waits long before it tries again.
    assert service.ocpp is not None
    ocpp = service.ocpp
    await eventually(lambda: "CP-R" in ocpp.stations, "the bridge knows CP-R")
    # Replaced, the first box waits long before it tries again (the test is over by then).
    box = await boxes.start("CP-R", retry_s=60, quirks=frozenset({"no_boot_on_reconnect"}))
    await asyncio.wait_for(box.accepted.wait(), 10)
    box.plug(1)
    await eventually(lambda: box.connectors[1].limit_a == 16.0, "charging at 16 A")
    assert box.boots_sent == 1
    box.connectors[1].limit_a = None  # the box forgets its profile while away
    # The same id connects again: the old connection is closed, the box is asked to boot.
    second = await boxes.start("CP-R", quirks=frozenset({"no_boot_on_reconnect"}))
    second.boots_sent = 1  # it booted before: it waits to be asked
    second.connectors[1].car.plug()
    second.connectors[1].status = "Charging"
    await asyncio.wait_for(second.accepted.wait(), 15)
    assert "BootNotification" in second.triggered
    await eventually(lambda: second.connectors[1].limit_a == 16.0, "the limit is sent again")
    assert service.ocpp is not None
    await eventually(lambda: not box.connected.is_set(), "the first connection was replaced")
    assert service.ocpp.stats.connections >= 2


async def test_failsafe_when_the_core_is_gone_and_after_it_returns(
    api: Api, service: RunningService, boxes: Boxes, observer: MqttObserver, base_topic: str
) -> None:
    await api.set_params(
        {"cycle_time": 500, **IMMEDIATE,
         "devices": [ocpp_evse("E1", "CP-F", failsafe_current=8000, max_charging_cur=14000)]}
    )  # fmt: skip
    box = await boxes.start("CP-F")
    await asyncio.wait_for(box.accepted.wait(), 10)
    box.plug(1)
    await eventually(lambda: box.connectors[1].limit_a == 14.0, "charging at the maximum")
    # The core says it is gone (its last will): the bridge applies the fail-safe on its own.
    observer.publish(f"{base_topic}/status", b"offline", retain=False)
    await eventually(lambda: box.connectors[1].limit_a == 8.0, "fail-safe 8 A")
    state = await observer.wait(
        f"{base_topic}/devices/E1/state", lambda m: m.json().get("failsafe") is True
    )
    assert state.json()["com_err"] is False
    observer.publish(f"{base_topic}/status", b"online", retain=False)
    await eventually(lambda: box.connectors[1].limit_a == 14.0, "commands again")


async def test_two_connectors_and_several_boxes_share_a_fuse(
    api: Api, service: RunningService, boxes: Boxes
) -> None:
    """One twin box (connectors 1 and 2) and a single box under a 20 A fuse: the three cars
    share it, each gets its own profile, and their sum never exceeds the fuse."""
    await api.set_params(
        {"max_total_current": 20000, "cycle_time": 1000, **IMMEDIATE,
         "devices": [GRID, ocpp_evse("E1", "TWIN", 1), ocpp_evse("E2", "TWIN", 2),
                     ocpp_evse("E3", "SOLO", 1)]}
    )  # fmt: skip
    bridge = service.http_input
    assert bridge is not None
    await eventually(lambda: bridge.device_kind("M1") == "meter", "the grid meter is known")
    await meter(api, 0)
    twin = await boxes.start("TWIN", connectors=2, cars=[Car(phases=1), Car(phases=1)])
    solo = await boxes.start("SOLO", cars=[Car(phases=1)])
    await asyncio.wait_for(twin.accepted.wait(), 10)
    await asyncio.wait_for(solo.accepted.wait(), 10)
    for box, connector in ((twin, 1), (twin, 2), (solo, 1)):
        box.plug(connector)

    def limits() -> list[float]:
        return [twin.connectors[1].limit_a or 0, twin.connectors[2].limit_a or 0,
                solo.connectors[1].limit_a or 0]  # fmt: skip

    # All three on L1 under a 20 A fuse: 6 A each fits, 16 A each does not.
    await eventually(lambda: all(x >= 6.0 for x in limits()), "all three cars charge")
    assert sum(limits()) <= 20.0, limits()
    assert twin.connectors[1].profiles[-1]["charging_profile_id"] != (
        twin.connectors[2].profiles[-1]["charging_profile_id"]
    )
    info = {d["dev_id"]: d for d in (await api.ok(cmd="get_dev_info"))["devices"]}
    assert info["E1"]["ocpp"]["status"] == info["E3"]["ocpp"]["status"] == "connected"


@pytest.mark.parametrize(
    ("quirks", "check"),
    [
        ("watts_only", lambda p: p["charging_schedule"]["charging_rate_unit"] == "W"),
        ("stack_level_zero", lambda p: p["stack_level"] == 0),
        ("kwh_units,phaseless_current,extra_fields,epoch_timestamps",
         lambda p: p["charging_schedule"]["charging_rate_unit"] == "A"),
        ("slow_replies", lambda p: p["charging_profile_purpose"] == "TxDefaultProfile"),
    ],
)  # fmt: skip
async def test_quirky_boxes_charge(
    api: Api,
    service: RunningService,
    boxes: Boxes,
    quirks: str,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    await api.set_params({"cycle_time": 1000, **IMMEDIATE, "devices": [ocpp_evse("E1", "QB")]})
    box = await boxes.start("QB", quirks=frozenset(quirks.split(",")), cars=[Car(phases=3)])
    await asyncio.wait_for(box.accepted.wait(), 15)
    box.plug(1)
    # W boxes get 230 V x 16 A x 3 = 11040 W, which the simulated box turns back into 16 A.
    await eventually(lambda: round(box.connectors[1].limit_a or 0, 1) == 16.0, "charging", 20)
    assert check(box.connectors[1].profiles[-1]), box.connectors[1].profiles[-1]

    async def drawn() -> bool:
        info = await dev_info(api, "E1")
        return bool(info["state"] == 3 and info["current_l1"] >= 15000 and not info["com_err"])

    await eventually(drawn, "the core sees the current", 20)
    info = await dev_info(api, "E1")
    if "kwh_units" in quirks:
        # kWh on the wire: Wh in the state (30 kWh in the simulated car's counter is not it;
        # the box counts from 0).
        assert 0 <= info["total_energy"] < 1000


async def test_a_box_that_needs_remote_start(
    api: Api, service: RunningService, boxes: Boxes
) -> None:
    await api.set_params(
        {"cycle_time": 1000, **IMMEDIATE,
         "devices": [ocpp_evse("E1", "RS", ocpp_remote_start=True)]}
    )  # fmt: skip
    box = await boxes.start("RS", quirks=frozenset({"needs_remote_start"}))
    await asyncio.wait_for(box.accepted.wait(), 10)
    box.plug(1)
    await eventually(lambda: box.remote_starts == [1], "RemoteStartTransaction sent")
    await eventually(lambda: box.connectors[1].status == "Charging", "the car charges")


async def test_a_deleted_device_leaves_no_profile_behind(
    api: Api, service: RunningService, boxes: Boxes
) -> None:
    await api.set_params({"cycle_time": 1000, **IMMEDIATE, "devices": [ocpp_evse("E1", "DEL")]})
    box = await boxes.start("DEL")
    await asyncio.wait_for(box.accepted.wait(), 10)
    box.plug(1)
    await eventually(lambda: box.connectors[1].limit_a == 16.0, "charging")
    assert await api.ok(cmd="del_device", dev_id="E1") == "ok"
    await eventually(lambda: box.connectors[1].limit_a is None, "profile cleared")
    await eventually(lambda: not box.connected.is_set(), "the box is let go")


async def test_chargebus_sim_ocpp_boxes_connect(api: Api, service: RunningService) -> None:
    """`chargebus sim --ocpp 2` starts two simulated charge points that connect and charge."""
    assert service.ocpp is not None
    bridge = service.ocpp
    await api.set_params(
        {"cycle_time": 1000, **IMMEDIATE,
         "devices": [ocpp_evse("E11", "SIM-OCPP-1"), ocpp_evse("E12", "SIM-OCPP-2")]}
    )  # fmt: skip
    await eventually(lambda: len(bridge.stations) == 2, "the bridge knows both")
    port = await asyncio.wait_for(bridge.listen(), 10)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "sim", "--count", "0", "--grid-port", "0",
        "--ocpp", "2", "--ocpp-url", f"ws://127.0.0.1:{port}/", "--log-level", "WARNING",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        def charging() -> bool:
            return all(
                (c := s.connectors.get(1)) is not None and c.status == "Charging"
                for s in bridge.stations.values()
            )

        await eventually(charging, "both simulated boxes charge", 30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()[-2000:]
    await eventually(lambda: all(s.session is None for s in bridge.stations.values()),
                     "the boxes went away with the simulator")  # fmt: skip


async def test_the_demo_can_include_an_ocpp_charge_point(settings: Settings) -> None:
    demo_settings = settings.model_copy(update={"demo_ocpp": True, "ocpp_port": 0})
    async with running_demo(demo_settings) as (service, _):
        def charging() -> bool:
            state = service.state.runtime["E3"].state
            return isinstance(state, EvseState) and state.state == 3 and state.current[0] > 5000

        await eventually(charging, "the demo's OCPP car charges", 30)
        assert service.state.runtime["E3"].com_err is False


async def test_a_clean_stop_leaves_the_failsafe_or_no_profile_at_all(
    mqtt_broker: BrokerAddress, base_topic: str, observer: MqttObserver
) -> None:
    """Stopping the bridge cleanly leaves each box on its fail-safe current, or, where that
    is 0, without chargebus's profile (a persisted 0 A profile would block later sessions)."""
    for dev_id, cp_id, failsafe in (("E1", "CP-S1", 8000), ("E2", "CP-S2", 0)):
        config = ocpp_evse(dev_id, cp_id, failsafe_current=failsafe)
        observer.publish(f"{base_topic}/devices/{dev_id}/config", json.dumps(config), retain=True)
    observer.publish(f"{base_topic}/status", b"online", retain=True)
    settings = Settings(mqtt_url=mqtt_broker.url, base_topic=base_topic, ocpp_port=0)
    target = settings.mqtt_target()
    assert target is not None
    stop = asyncio.Event()

    async def core_commands() -> None:
        while True:
            for dev_id in ("E1", "E2"):
                observer.publish(f"{base_topic}/devices/{dev_id}/command", json.dumps(
                    {"device_enabled": True, "charging_enabled": True, "paused": False,
                     "charging_current": 12000, "ts": 1.0, "state_ts": None}))  # fmt: skip
            await asyncio.sleep(0.5)

    async with ocpp_bridge(settings, target, listen_at_once=True) as bridge:
        port = await bridge.listen()
        url = f"ws://127.0.0.1:{port}/"
        await eventually(lambda: len(bridge.stations) == 2, "the bridge knows both boxes")
        boxes = [SimChargePoint(cp_id, url, tick_s=0.1) for cp_id in ("CP-S1", "CP-S2")]
        runners = [asyncio.create_task(box.run(stop, retry_s=30)) for box in boxes]
        commands = asyncio.create_task(core_commands())
        try:
            await eventually(
                lambda: all(b.connectors[1].limit_a == 12.0 for b in boxes), "both at 12 A"
            )
        finally:
            commands.cancel()
    try:
        assert boxes[0].connectors[1].limit_a == 8.0
        assert boxes[1].connectors[1].limit_a is None
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)


@pytest.mark.parametrize(
    ("switches", "check"),
    [
        ({"ocpp_profile_purpose": "TxProfile"},
         lambda p, tx: p["charging_profile_purpose"] == "TxProfile" and p["transaction_id"] == tx),
        ({"ocpp_profile_kind": "relative"},
         lambda p, tx: p["charging_profile_kind"] == "Relative"
         and "start_schedule" not in p["charging_schedule"]),
        ({"ocpp_rate_unit": "W", "used_phases": 1},
         lambda p, tx: p["charging_schedule"]["charging_rate_unit"] == "W"
         and p["charging_schedule"]["charging_schedule_period"][0]["number_phases"] == 1),
        ({"ocpp_stack_level": 2}, lambda p, tx: p["stack_level"] == 2),
    ],
)  # fmt: skip
async def test_per_device_switches(
    api: Api,
    service: RunningService,
    boxes: Boxes,
    switches: dict[str, Any],
    check: Callable[[dict[str, Any], int | None], bool],
) -> None:
    await api.set_params(
        {"cycle_time": 1000, **IMMEDIATE, "devices": [ocpp_evse("E1", "SW", **switches)]}
    )
    box = await boxes.start("SW", cars=[Car(phases=1)])
    await asyncio.wait_for(box.accepted.wait(), 10)
    box.plug(1)
    await eventually(lambda: box.connectors[1].status == "Charging", "the car charges", 20)
    await eventually(
        lambda: check(box.connectors[1].profiles[-1], box.connectors[1].transaction_id),
        f"a profile as the switches say ({switches})",
    )


async def test_setup_runs_after_each_boot_but_sets_measurands_once(
    api: Api, service: RunningService, boxes: Boxes
) -> None:
    assert service.ocpp is not None
    bridge = service.ocpp
    await api.set_params({"cycle_time": 1000, **IMMEDIATE, "devices": [ocpp_evse("E1", "BOOT")]})
    box = await boxes.start("BOOT")
    await asyncio.wait_for(box.accepted.wait(), 10)
    station = bridge.stations["BOOT"]
    await eventually(lambda: station.setup_for_boot == 1, "set up after the first boot")
    await eventually(lambda: len(box.changed_keys) == 2, "measurands and interval set")
    assert sorted(box.changed_keys) == ["MeterValueSampleInterval", "MeterValuesSampledData"]
    # The box reboots (its configuration survives): chargebus reads it again, writes nothing.
    assert await box.send_boot()
    await eventually(lambda: station.setup_for_boot == 2, "set up again after the reboot")
    await asyncio.sleep(0.5)
    assert len(box.changed_keys) == 2
