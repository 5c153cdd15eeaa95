"""The simulated Power Brain and grid meter, read and written by a real pymodbus client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bridges.modbus import sdm630_map as sdm
from bridges.modbus.powerbrain_map import EVSE_UNIT, METER1_UNIT, METER2_UNIT
from bridges.modbus.register_map import decode, decode_int, encode
from bridges.sim.car import Car, CarState
from bridges.sim.server import SimSite, run_sim, simulated_site
from tests.broker import LOOPBACK, find_free_port
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

WAIT_S = 10.0  # a deadline for conditions, not a measurement


@dataclass
class Running:
    site: SimSite
    wallbox: AsyncModbusTcpClient
    grid: AsyncModbusTcpClient


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    pb_port, grid_port = find_free_port(), find_free_port()
    async with simulated_site(LOOPBACK, [pb_port], grid_port, tick_s=0.05) as site:
        wallbox = AsyncModbusTcpClient(LOOPBACK, port=pb_port, timeout=2, retries=0)
        grid = AsyncModbusTcpClient(LOOPBACK, port=grid_port, timeout=2, retries=0)
        try:
            assert await wallbox.connect()
            assert await grid.connect()
            yield Running(site, wallbox, grid)
        finally:
            wallbox.close()
            grid.close()


async def read(client: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int]:
    response = await client.read_holding_registers(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def write(client: AsyncModbusTcpClient, unit: int, address: int, value: int) -> None:
    response = await client.write_register(address, value, device_id=unit)
    assert not response.isError(), response


async def grid_currents_a(grid: AsyncModbusTcpClient) -> list[float]:
    response = await grid.read_input_registers(
        sdm.BLOCK_START, count=sdm.BLOCK_COUNT, device_id=sdm.UNIT_ID
    )
    assert not response.isError(), response
    return [sdm.float_at(response.registers, a) for a in sdm.CURRENTS]


async def test_identity_registers(running: Running) -> None:
    client = running.wallbox
    for unit in (EVSE_UNIT, METER1_UNIT, METER2_UNIT):
        assert decode("s", await read(client, unit, 8016, 16)) == "cFos Power Brain"
        assert await read(client, unit, 8002, 1) == [1]
        assert decode_int("d", await read(client, unit, 8000, 2)) == -821755904
    assert await read(client, METER1_UNIT, 8002, 10) == [
        1, 257, 256, 0, 256, 0, 26211, 26165, 11619, 13366
    ]


async def test_idle_meter2_answers_like_the_seed(running: Running) -> None:
    client = running.wallbox
    assert decode_int("d", await read(client, METER2_UNIT, 8062, 2)) == -1
    assert decode_int("d", await read(client, METER2_UNIT, 8042, 2)) == 1000
    assert await read(client, METER2_UNIT, 8044, 4) == [1, 230, 230, 230]
    assert decode_int("d", await read(client, METER2_UNIT, 8004, 2)) == 16777216


async def test_write_limit_and_read_back(running: Running) -> None:
    await write(running.wallbox, EVSE_UNIT, 8093, 123)
    assert await read(running.wallbox, EVSE_UNIT, 8093, 1) == [123]
    assert running.site.powerbrains[0].limit_ma == 12_300


async def test_read_only_and_unknown_writes_are_refused(running: Running) -> None:
    response = await running.wallbox.write_register(8092, 2, device_id=EVSE_UNIT)
    assert response.isError()
    response = await running.wallbox.write_register(8048, 2, device_id=EVSE_UNIT)
    assert response.isError()
    response = await running.wallbox.read_holding_registers(8000, count=1, device_id=9)
    assert response.isError()


async def test_consecutive_write_of_phases_and_voltages(running: Running) -> None:
    response = await running.wallbox.write_registers(
        8044, [7, 231, 232, 233], device_id=METER2_UNIT
    )
    assert not response.isError(), response
    assert await read(running.wallbox, METER2_UNIT, 8044, 4) == [7, 231, 232, 233]


async def test_charging_follows_enable_and_limit(running: Running) -> None:
    site, client = running.site, running.wallbox
    pb = site.powerbrains[0]
    pb.plug_in(Car())
    await site.wait_ticks(2)
    assert await read(client, EVSE_UNIT, 8092, 1) == [1]  # B: car present, not enabled
    assert decode_int("d", await read(client, EVSE_UNIT, 8064, 2)) == 0
    energy_before = decode_int("q", await read(client, EVSE_UNIT, 8058, 4))

    await write(client, EVSE_UNIT, 8093, 100)  # 10.0 A
    await write(client, EVSE_UNIT, 8094, 1)

    async def charging() -> bool:
        return await read(client, EVSE_UNIT, 8092, 1) == [2]

    await eventually(charging, "status C")
    for unit in (EVSE_UNIT, METER1_UNIT):
        words = await read(client, unit, 8062, 8)
        assert decode_int("d", words[0:2]) == 6900  # 3 x 10 A x 230 V
        assert [decode_int("d", words[i : i + 2]) for i in (2, 4, 6)] == [100, 100, 100]

    async def energy_counted() -> bool:
        return decode_int("q", await read(client, EVSE_UNIT, 8058, 4)) > energy_before

    # 6.9 kW counts 1 Wh in about half a second of simulated time.
    await eventually(energy_counted, "energy counts up")
    assert decode_int("q", await read(client, METER1_UNIT, 8058, 4)) > 0

    await write(client, EVSE_UNIT, 8094, 0)

    async def stopped() -> bool:
        return await read(client, EVSE_UNIT, 8092, 1) == [1]

    await eventually(stopped, "back to state B")
    assert decode_int("d", await read(client, EVSE_UNIT, 8062, 2)) == 0


async def test_counter_writes_stick(running: Running) -> None:
    site, client = running.site, running.wallbox
    # write=8050q&value=1 and an energy preset, as cmd=modbus sends them (function 16)
    for address, value in ((8050, 1), (8058, 5000)):
        response = await client.write_registers(
            address, encode("q", value), device_id=EVSE_UNIT
        )
        assert not response.isError(), response
    await site.wait_ticks(2)
    assert decode_int("q", await read(client, EVSE_UNIT, 8050, 4)) == 1
    assert decode_int("q", await read(client, EVSE_UNIT, 8058, 4)) == 5000
    await write(client, EVSE_UNIT, 8070, 1)  # reset_pulses
    assert await read(client, EVSE_UNIT, 8050, 6) == [0, 0, 0, 0, 0, 0]
    assert await read(client, EVSE_UNIT, 8070, 1) == [0]
    await write(client, EVSE_UNIT, 8086, 5)  # disconnect_cp is a command, not a setting
    assert await read(client, EVSE_UNIT, 8086, 1) == [0]


async def test_one_phase_relay(running: Running) -> None:
    site, client = running.site, running.wallbox
    site.powerbrains[0].plug_in(Car())
    await write(client, EVSE_UNIT, 8087, 1)
    await write(client, EVSE_UNIT, 8093, 160)
    await write(client, EVSE_UNIT, 8094, 1)

    async def one_phase() -> bool:
        words = await read(client, EVSE_UNIT, 8064, 6)
        return [decode_int("d", words[i : i + 2]) for i in (0, 2, 4)] == [160, 0, 0]

    await eventually(one_phase, "charging on L1 only")


async def test_grid_meter_sees_the_wallbox(running: Running) -> None:
    site = running.site
    assert await grid_currents_a(running.grid) == [2.0, 2.0, 2.0]  # base load
    pb = site.powerbrains[0]
    pb.plug_in(Car())
    await write(running.wallbox, EVSE_UNIT, 8093, 80)
    await write(running.wallbox, EVSE_UNIT, 8094, 1)

    async def grid_rises() -> bool:
        return await grid_currents_a(running.grid) == [10.0, 10.0, 10.0]

    await eventually(grid_rises, "grid current = base + 8 A")
    assert pb.state == CarState.CHARGING


async def test_manual_ticks_without_a_tick_task() -> None:
    port = find_free_port()
    async with simulated_site(
        LOOPBACK, [port], None, cars=[Car(phases=1)], tick_s=None, charging_enabled=True
    ) as site:
        assert site.grid is None
        client = AsyncModbusTcpClient(LOOPBACK, port=port, timeout=2, retries=0)
        try:
            assert await client.connect()
            assert await read(client, EVSE_UNIT, 8092, 1) == [1]
            site.step(3600.0)
            assert await read(client, EVSE_UNIT, 8092, 1) == [2]
            # 16 A x 230 V for an hour on one phase
            assert decode_int("q", await read(client, METER1_UNIT, 8058, 4)) == 3680
            assert decode_int("q", await read(client, METER1_UNIT, 8050, 4)) == 3680
        finally:
            client.close()


async def test_run_sim_serves_until_stopped() -> None:
    base, grid_port = find_free_port(), find_free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_sim(LOOPBACK, base, 1, grid_port, stop))
    client = AsyncModbusTcpClient(LOOPBACK, port=base, timeout=2, retries=0)
    try:
        async def answers() -> bool:
            return await client.connect() and await read(client, EVSE_UNIT, 8092, 1) == [1]

        await eventually(answers, "run_sim answers with a car plugged in")
    finally:
        client.close()
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
