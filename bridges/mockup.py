"""Simulated devices configured in the installation: `evse_mockup` and `meter_mockup`, the
product's "Simulation (VE)" / "Simulation (VM)" types, for trying the load balancing out (or
keeping a configuration written for the product loadable) without hardware.

- An `evse_mockup` has a car plugged in that draws what its command allows, at once, on the
  phases of `used_phases` (all three for 0): state 3 while it may charge, 2 (vehicle present)
  while it may not. Its energy counts up from the power it draws.
- A `meter_mockup` measures the simulated wallboxes together, phase by phase: as a grid
  meter (role 3) it shows the load balancing their draw.

Each device reports every `poll_interval`, an EVSE also right after a new command. The
bridge runs in the service's process on a bus connection of its own (bridges/common): the
commands and the fail-safe are those of any EVSE bridge. The part that simulates is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from bridges.common.bridge import DeviceBridge
from bridges.common.directory import Change, Config
from bridges.common.follower import Control
from service.bus_setup import make_bus
from service.core.contract import EvseConfig
from service.core.device_types import DeviceType
from service.settings import MqttTarget, Settings
from service.topics import Topics

log = logging.getLogger(__name__)

EVSE_MOCKUP = DeviceType("evse_mockup", "evse", "Simulation (VE)", "mockup")
METER_MOCKUP = DeviceType("meter_mockup", "meter", "Simulation (VM)", "mockup")
DEVICE_TYPES = (EVSE_MOCKUP, METER_MOCKUP)
BRIDGE_NAME = "mockup"
VOLTAGE = 230.0
# A vehicle charges at 6 A and more (IEC 61851); below, a wallbox does not start it.
MIN_CHARGING_MA = 6000
STATE_VEHICLE = 2
STATE_CHARGING = 3


def model(dev_type: str, dev_id: str) -> str:
    """The /cnf `model`: manufacturer, device, device version, firmware version, serial."""
    kind = "Simulation (VE)" if dev_type == EVSE_MOCKUP.name else "Simulation (VM)"
    return f"chargebus,{kind},1.0,1.0.0,{dev_id}"


# -- the simulation (pure) -------------------------------------------------------------------


@dataclass
class SimulatedCar:
    """One `evse_mockup`'s plugged-in car."""

    phases: int  # bit mask, L1 = 1
    energy_wh: float = 0.0
    drawn: tuple[int, int, int] = (0, 0, 0)
    since: float | None = None

    def would_draw(self, control: Control | None) -> tuple[int, int, int]:
        """What the car draws per phase under `control`."""
        allowed = control.effective_current if control is not None else 0
        current = allowed if allowed >= MIN_CHARGING_MA else 0
        mask = self.phases or 7
        return (
            current if mask & 1 else 0,
            current if mask & 2 else 0,
            current if mask & 4 else 0,
        )

    def follow(self, control: Control | None, now: float) -> None:
        """Counts the energy drawn until now, then draws what `control` allows."""
        self._count(now)
        self.drawn = self.would_draw(control)

    def _count(self, now: float) -> None:
        if self.since is not None and now > self.since:
            self.energy_wh += self.power_w * (now - self.since) / 3600
        self.since = now

    @property
    def power_w(self) -> float:
        return sum(self.drawn) * VOLTAGE / 1000

    def state(self, dev_id: str, now: float) -> dict[str, Any]:
        self._count(now)
        return {
            "state": STATE_CHARGING if any(self.drawn) else STATE_VEHICLE,
            "current": list(self.drawn),
            "voltage": [VOLTAGE] * 3,
            "power_w": round(self.power_w, 1),
            "total_energy": round(self.energy_wh, 3),
            "model": model(EVSE_MOCKUP.name, dev_id),
        }


def meter_state(dev_id: str, cars: list[SimulatedCar]) -> dict[str, Any]:
    """A `meter_mockup`: the simulated cars' draw together."""
    total = [sum(car.drawn[i] for car in cars) for i in range(3)]
    return {
        "current": total,
        "voltage": [VOLTAGE] * 3,
        "power_w": round(sum(total) * VOLTAGE / 1000, 1),
        "import_wh": round(sum(car.energy_wh for car in cars), 3),
        "export_wh": 0.0,
        "model": model(METER_MOCKUP.name, dev_id),
    }


# -- the bridge --------------------------------------------------------------------------------


@dataclass
class _Device:
    config: Config
    car: SimulatedCar | None  # None for a meter
    due: float = 0.0  # monotonic time of its next report


class MockupBridge(DeviceBridge):
    def __init__(
        self,
        topics: Topics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(topics, BRIDGE_NAME, clock=clock, wall_clock=wall_clock)
        self.clock = clock
        self.wall_clock = wall_clock
        self.devices: dict[str, _Device] = {}
        self._wake = asyncio.Event()
        self.stopping = False

    def serves(self, config: Config) -> bool:
        return config.dev_type in (EVSE_MOCKUP.name, METER_MOCKUP.name)

    def device_changed(self, change: Change) -> None:
        old = self.devices.pop(change.dev_id, None)
        if change.new is None:
            return
        car = None
        if isinstance(change.new, EvseConfig):
            # A changed configuration keeps the car and its energy; its phases may change.
            car = old.car if old is not None and old.car is not None else SimulatedCar(0)
            car.phases = change.new.used_phases
        self.devices[change.dev_id] = _Device(change.new, car)
        log.info("simulating %s (%s)", change.dev_id, change.new.dev_type)
        self._wake.set()

    def command_changed(self, dev_id: str) -> None:
        device = self.devices.get(dev_id)
        if device is None or device.car is None:
            return
        control, _ = self.follower.wanted(dev_id)
        if device.car.would_draw(control) != device.car.drawn:
            # A new current is reported at once, as a wallbox does. (Only then: every state
            # gets a command that answers it, and a report for each would never end.)
            device.due = 0.0
            self._wake.set()

    def report_due(self) -> float:
        """Publishes every report that is due; → seconds until the next one."""
        now = self.clock()
        wall = self.wall_clock()
        cars = [d.car for d in self.devices.values() if d.car is not None]
        # EVSEs first: a meter then shows what they draw now.
        for dev_id, device in sorted(self.devices.items(), key=lambda i: i[1].car is None):
            if device.due > now:
                continue
            if device.car is not None:
                control, failsafe = self.follower.wanted(dev_id)
                self.follower.note_failsafe(dev_id, failsafe)
                device.car.follow(control, wall)
                state = device.car.state(dev_id, wall)
                state["failsafe"] = failsafe
            else:
                state = meter_state(dev_id, cars)
            self.publisher.state(dev_id, state)
            device.due = now + device.config.poll_interval / 1000
        dues = [d.due for d in self.devices.values()]
        return max(0.05, min(dues) - now) if dues else 1.0

    async def run(self) -> None:
        # The flag, not only the cancellation, ends it: asyncio.wait_for on Python 3.11 may
        # return instead of raising when a cancellation meets a wake-up.
        while not self.stopping:
            wait = self.report_due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)


@contextlib.asynccontextmanager
async def mockup_bridge(settings: Settings, target: MqttTarget) -> AsyncIterator[MockupBridge]:
    """The simulated devices' bridge, in the service's process, on a connection of its own."""
    bridge = MockupBridge(Topics(settings.base_topic))
    bus = make_bus(
        settings,
        target,
        f"bridge-{BRIDGE_NAME}",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
    )
    bridge.subscriptions_changed = bus.replace_subscriptions
    async with bus:
        # No status topic of its own: it is part of the service, whose status says it all.
        bridge.publisher.attach(bus, announce=False)
        bridge.follower.restart_grace()
        task = asyncio.create_task(bridge.run(), name="mockup-bridge")
        try:
            yield bridge
        finally:
            bridge.stopping = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            bridge.publisher.detach()
