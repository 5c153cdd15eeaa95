"""Serves simulated Power Brains and a grid meter over Modbus TCP (pymodbus servers).

Each Power Brain gets one TCP port with its EVSE (id 1) and meters (ids 2, 3); the grid meter
(SDM630, id 1) a port of its own. A tick task advances cars, meters and counters.

pymodbus keeps its own copy of the registers; the device action below copies the model's
words into it on every read and hands every write to the model before pymodbus stores it, so
writes take effect at once and reads always show the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bridges.modbus import sdm630_map as sdm
from bridges.sim.car import Car, Currents
from bridges.sim.grid_meter import GridMeter
from bridges.sim.powerbrain import PowerBrain

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 0.2


class ServedDevice(Protocol):
    @property
    def unit(self) -> int: ...

    def read(self, address: int, count: int) -> list[int]: ...

    def write(self, address: int, values: Sequence[int]) -> bool: ...


class _Action:
    """pymodbus's per-device hook (SimDevice.action), bound to one model device."""

    def __init__(self, device: ServedDevice) -> None:
        self.device = device

    async def serve(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is None:
            offset = address - start_address
            registers[offset : offset + count] = self.device.read(address, count)
            return None
        if not self.device.write(address, [int(v) for v in set_values]):
            return ExcCodes.ILLEGAL_ADDRESS
        return None


def _sim_device(device: ServedDevice, first: int, end: int) -> SimDevice:
    # One plain register range; unknown addresses inside it read as 0, outside it are illegal.
    block = SimData(address=first, count=end - first, values=0, datatype=DataType.REGISTERS)
    return SimDevice(id=device.unit, simdata=[block], action=_Action(device).serve)


async def _no_such_device(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE


# pymodbus sends requests for ids it doesn't know to id 0; without one it logs a KeyError
# traceback. A gateway's answer for "nobody there" is cleaner.
def _catch_all() -> SimDevice:
    block = SimData(address=0, count=0x10000, values=0, datatype=DataType.REGISTERS)
    return SimDevice(id=0, simdata=[block], action=_no_such_device)


def _powerbrain_devices(pb: PowerBrain) -> list[SimDevice]:
    out = [_catch_all()]
    for device in pb.devices:
        entries = device.regmap.entries()
        out.append(_sim_device(device, entries[0].address, entries[-1].end))
    return out


async def _start_server(host: str, port: int, devices: list[SimDevice]) -> ModbusTcpServer:
    server = ModbusTcpServer(devices, address=(host, port))
    await server.serve_forever(background=True)
    return server


@dataclass
class SimSite:
    powerbrains: list[PowerBrain]
    grid: GridMeter | None
    ticks: int = 0
    _tick_event: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self, dt_s: float) -> None:
        for pb in self.powerbrains:
            pb.step(dt_s)
        if self.grid is not None:
            self.grid.step(dt_s)
        self.ticks += 1
        self._tick_event.set()
        self._tick_event = asyncio.Event()

    async def wait_ticks(self, n: int = 1) -> None:
        """Returns after `n` more ticks of the tick task."""
        target = self.ticks + n
        while self.ticks < target:
            await self._tick_event.wait()


async def _tick_loop(site: SimSite, tick_s: float) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(tick_s)
        now = loop.time()
        site.step(now - last)
        last = now


def _phase_currents(load: int | Currents) -> Currents:
    return (load, load, load) if isinstance(load, int) else load


@contextlib.asynccontextmanager
async def simulated_site(
    host: str,
    powerbrain_ports: list[int],
    grid_port: int | None,
    *,
    base_load_ma: int | Currents = 2000,
    cars: Sequence[Car | None] | None = None,
    tick_s: float | None = DEFAULT_TICK_S,
    charging_enabled: bool = False,
) -> AsyncIterator[SimSite]:
    """Runs the simulated devices until the block exits.

    `cars[i]` is plugged into Power Brain i at the start (None: no car). `tick_s=None` runs no
    tick task: the caller advances time with `site.step(dt)`.
    """
    if cars is not None and len(cars) > len(powerbrain_ports):
        raise ValueError("more cars than Power Brains")
    powerbrains = [
        PowerBrain(serial=f"fcf5-c46d-{0x310C + i:04x}", charging_enabled=charging_enabled)
        for i in range(len(powerbrain_ports))
    ]
    for pb, car in zip(powerbrains, cars or (), strict=False):
        if car is not None:
            pb.plug_in(car)
    grid = None
    if grid_port is not None:
        grid = GridMeter(powerbrains, base_load_ma=_phase_currents(base_load_ma))
    site = SimSite(powerbrains, grid)
    servers: list[ModbusTcpServer] = []
    tick_task: asyncio.Task[None] | None = None
    try:
        for pb, port in zip(powerbrains, powerbrain_ports, strict=True):
            servers.append(await _start_server(host, port, _powerbrain_devices(pb)))
        if grid is not None and grid_port is not None:
            device = _sim_device(grid, sdm.BLOCK_START, sdm.BLOCK_START + sdm.BLOCK_COUNT)
            servers.append(await _start_server(host, grid_port, [_catch_all(), device]))
        if tick_s is not None:
            tick_task = asyncio.create_task(_tick_loop(site, tick_s), name="sim-tick")
        yield site
    finally:
        if tick_task is not None:
            tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick_task
        for server in servers:
            await server.shutdown()  # type: ignore[no-untyped-call]


async def run_sim(
    host: str, base_port: int, count: int, grid_port: int | None, stop: asyncio.Event
) -> None:
    """`chargebus sim`: `count` Power Brains on ports base_port.., each with a car plugged in
    (alternately 3- and 1-phase), and the grid meter on `grid_port`, until `stop` is set."""
    ports = [base_port + i for i in range(count)]
    cars: list[Car | None] = [Car(phases=3 if i % 2 == 0 else 1) for i in range(count)]
    async with simulated_site(host, ports, grid_port, cars=cars):
        log.info(
            "simulated Power Brains on %s ports %s (EVSE id 1, meters 2, 3); grid meter %s",
            host, ports, f"port {grid_port} id {sdm.UNIT_ID}" if grid_port else "off",
        )
        await stop.wait()
