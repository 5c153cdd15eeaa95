"""A device's configuration change applies once, without a communication error (issue 14
item 6): the in-process Modbus bridge against a simulated Power Brain that answers slowly
(40 ms per request, so that a change finds a request on the wire)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridges.sim import server
from bridges.sim.car import Car
from bridges.sim.server import SimSite, simulated_site
from tests.broker import find_free_port
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.test_modbus_bridge import device, powerbrain

pytestmark = pytest.mark.integration

ANSWER_DELAY_S = 0.04
STRAY_ANSWER = "without a corresponding request"


@pytest.fixture
async def slow_site(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[SimSite, int]]:
    answer = server._Action.serve

    async def slowly(self: server._Action, *args: Any) -> Any:
        await asyncio.sleep(ANSWER_DELAY_S)
        return await answer(self, *args)

    monkeypatch.setattr(server._Action, "serve", slowly)
    port = find_free_port()
    async with simulated_site("127.0.0.1", [port], None, cars=[Car(phases=3)], tick_s=0.1) as sim:
        yield sim, port


def starts(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith("polling E1 "))


def troubles(caplog: pytest.LogCaptureFixture) -> list[str]:
    """pymodbus's stray answers and the bridge's failed polls (`E1: …` warnings)."""
    return [
        r.getMessage()
        for r in caplog.records
        if STRAY_ANSWER in r.getMessage()
        or (r.name.startswith("bridges.modbus") and r.getMessage().startswith("E1:"))
    ]


async def polling(api: Api) -> None:
    for _ in range(100):
        info = device(await api.ok(cmd="get_dev_info"), "E1")
        if info["state"] in (2, 3):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("E1 is not polled")


async def test_a_change_the_poller_does_not_use_keeps_it_running(
    slow_site: tuple[SimSite, int], api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, port = slow_site
    await api.set_params({**IMMEDIATE, "devices": [powerbrain(port, poll_interval=100)]})
    await polling(api)
    caplog.clear()
    for change in ({"max_charging_cur": 12_000}, {"name": "Carport"}, {"prio": 3},
                   {"failsafe_current": 8000}, {"label": "left"}):  # fmt: skip
        await api.set_params({"devices": [{"dev_id": "E1", **change}]})
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    assert starts(caplog) == 0
    assert troubles(caplog) == []
    info = device(await api.ok(cmd="get_dev_info"), "E1")
    assert info["com_errors"] == 0 and info["name"] == "Carport"


async def test_changes_the_poller_uses_restart_it_cleanly(
    slow_site: tuple[SimSite, int], api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, port = slow_site
    await api.set_params({**IMMEDIATE, "devices": [powerbrain(port, poll_interval=120)]})
    await polling(api)
    caplog.clear()
    for n in range(20):
        await api.set_params({"devices": [{"dev_id": "E1", "poll_interval": 100 + n % 2 * 10}]})
        # At varying points of a poll, so that some changes come with a request on the wire.
        await asyncio.sleep(0.03 + (n % 5) * 0.011)
    await asyncio.sleep(1)
    assert starts(caplog) == 20  # once per change
    assert troubles(caplog) == []
    info = device(await api.ok(cmd="get_dev_info"), "E1")
    assert info["com_errors"] == 0 and info["poll_interval"] == 110
