"""Interoperability with an independent OCPP implementation: the Node package `ocpp-rpc`
(version locked in tests/interop/package-lock.json) as the charge point, in strict mode, so
every call chargebus sends and every answer it gives is checked against the official OCPP
1.6 JSON schemas by code that shares nothing with the Python `ocpp` library.

Needs node and npm (`npm ci` installs the locked version on first use); skipped, with the
reason, where they are missing or the npm registry cannot be reached."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.app import RunningService, running_service
from service.settings import Settings
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

INTEROP = Path(__file__).resolve().parents[1] / "interop"
LOCKED = "2.2.1"


def node_peer() -> Path:
    """The directory with ocpp-rpc installed as locked; skips when that is not possible."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: the ocpp-rpc interoperability test needs them")
    installed = INTEROP / "node_modules" / "ocpp-rpc" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != LOCKED:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=INTEROP, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"npm ci failed (offline?): {done.stderr.strip()[-300:]}")
    return INTEROP


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RunningService]:
    async with running_service(settings.model_copy(update={"ocpp_port": 0})) as running:
        await running.bus.wait_connected(10)
        yield running


async def test_ocpp_rpc_charge_point_in_strict_mode(api: Api, service: RunningService) -> None:
    peer = node_peer()
    await api.set_params(
        {"cycle_time": 1000, **IMMEDIATE,
         "devices": [{"dev_type": "evse_ocpp", "dev_id": "E1", "address": "NODE-CP", "id": 1,
                      "max_charging_cur": 16000, "ocpp_password": "node-pass"}]}
    )  # fmt: skip
    assert service.ocpp is not None
    bridge = service.ocpp
    await eventually(lambda: "NODE-CP" in bridge.stations, "the bridge knows NODE-CP")
    port = await asyncio.wait_for(bridge.listen(), 10)
    process = await asyncio.create_subprocess_exec(
        "node", "cp.js", f"ws://127.0.0.1:{port}/ocpp", "NODE-CP", "node-pass",
        cwd=peer, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events: list[dict[str, Any]] = [json.loads(line) for line in out.decode().splitlines()]
    summary = events[-1]
    assert summary["kind"] == "summary", (out, err)
    assert summary["errors"] == [], (summary, err.decode()[-2000:])
    assert process.returncode == 0
    kinds = [e["kind"] for e in events]
    assert "strict-failure" not in kinds and "bad-message" not in kinds
    boot = next(e for e in events if e["kind"] == "boot")
    assert boot["status"] == "Accepted"
    profile = next(e["params"] for e in events if e["kind"] == "profile"
                   and e["params"]["csChargingProfiles"]["chargingSchedule"]
                   ["chargingSchedulePeriod"][0]["limit"] >= 6)  # fmt: skip
    charging = profile["csChargingProfiles"]
    assert profile["connectorId"] == 1
    assert charging["chargingProfilePurpose"] == "TxDefaultProfile"
    assert charging["stackLevel"] == 3  # the box's ChargeProfileMaxStackLevel
    assert charging["chargingSchedule"]["chargingRateUnit"] == "A"
    assert charging["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16
    assert any(e["kind"] == "change-configuration" for e in events)
    assert next(e for e in events if e["kind"] == "stop-unknown")["answer"] is not None
