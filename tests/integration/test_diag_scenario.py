"""set_diag_logging on a real service: each run is written as a scenario (data/diag/*.json)
that the scenario runner of tests/allocation replays with the same results, and the decision
log explains the runs in the diagnostic log."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.app import RunningService
from service.settings import Settings
from tests.allocation.test_scenarios import run_scenario
from tests.integration.conftest import ADMIN_PASSWORD, GRID_METER, IMMEDIATE, basic_auth
from tests.integration.mqtt_observer import MqttObserver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Long enough for the runs below (the shared fixture stops diagnostic logging after 1 s).
    return settings.model_copy(update={"diag_log_seconds": 60.0})


def evse(dev_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "dev_type": "evse_ajax",
        "dev_id": dev_id,
        "min_charging_cur": 6000,
        "max_charging_cur": 16000,
        "pause_min_time": 0,
        **extra,
    }


async def set_diag_logging(service: RunningService, enable: int) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{service.http_port}/cnf",
        params={"cmd": "set_diag_logging", "enable": str(enable)},
        headers=basic_auth("admin", ADMIN_PASSWORD),
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_recorded_diag_scenario_replays_with_the_same_results(
    service: RunningService, observer: MqttObserver, base_topic: str, settings: Settings
) -> None:
    await set_diag_logging(service, 1)
    await service.state.set_params(
        {
            "max_total_current": 32000,
            "reserve_current": 0,
            **IMMEDIATE,
            "devices": [GRID_METER, evse("E1", used_phases=7), evse("E2", used_phases=1)],
        }
    )

    def publish(dev_id: str, payload: dict[str, Any]) -> None:
        observer.publish(
            f"{base_topic}/devices/{dev_id}/state", json.dumps({**payload, "ts": time.time()})
        )

    # A few runs with changing readings: both charge, then an overload, then E2 leaves.
    publish("E1", {"state": 3, "current": [8000, 8000, 8000]})
    publish("E2", {"state": 3, "current": [7000, 0, 0]})
    for grid in ([17000, 10000, 10000], [40000, 33000, 33000], [30000, 30000, 30000]):
        publish("M1", {"current": grid})
        await asyncio.sleep(0.3)
    publish("E2", {"state": 1, "current": [0, 0, 0]})
    await asyncio.sleep(0.3)
    await observer.wait(
        f"{base_topic}/devices/E1/command",
        lambda m: 6000 <= m.json()["charging_current"] < 14000,
    )
    await set_diag_logging(service, 0)

    diag = Path(settings.data_dir) / "diag"
    files = sorted(diag.glob("*.json"))
    assert len(files) == 1, files
    scenario = json.loads(files[0].read_text())
    steps = scenario["steps"]
    assert len(steps) >= 4
    # The recording saw what happened: E1 limited by the overload, E2 leaving.
    assert any(s["expect"]["E1"]["charging_current"] < 16000 for s in steps)
    assert steps[-1]["expect"]["E2"]["reason"] == "no_vehicle"
    # Each EVSE's input is recorded as the control loop made it, its transitions with it
    # (replayed without them, budgets differ while cars ramp).
    for step in steps:
        for recorded in step["evses"].values():
            assert {"counted_current", "ramp_credit", "draw_spread", "own_ramp"} <= set(
                recorded
            ), recorded
    assert run_scenario(scenario, files[0].name) == len(steps)

    # The replay checks what was recorded: a result the allocation would not give fails it.
    wrong = copy.deepcopy(scenario)
    wrong["steps"][-1]["expect"]["E1"]["charging_current"] += 1000
    with pytest.raises(AssertionError):
        run_scenario(wrong, "altered")

    # The decision log explained the runs in the diagnostic log.
    text = "".join(p.read_text() for p in diag.glob("diag-*.log"))
    assert "service.decisions" in text
    assert "budgets group 0: L1" in text
    assert "E2: " in text and "no_vehicle" in text
