"""The quick start's main job, `chargebus demo` (make run): with nothing else running, load
balancing shows at /cnf?cmd=get_dev_info within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from service.demo import MAIN_FUSE_MA
from tests.broker import find_free_port

pytestmark = pytest.mark.integration


def get_dev_info(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/cnf?cmd=get_dev_info", timeout=2
        ) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_the_demo_balances_two_simulated_wallboxes(tmp_path: Path) -> None:
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
    env["PYTHONFAULTHANDLER"] = "1"
    command = [
        sys.executable, "-m", "service", "demo", "--http-port", str(port),
        "--admin-password", "demo-pw", "--data-dir", str(tmp_path / "data"),
        # The default port is the machine's mosquitto here: the demo must cope by itself.
        "--embedded-broker-port", "1883",
    ]  # fmt: skip
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        devices: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = get_dev_info(port)
            if info is not None:
                devices = {d["dev_id"]: d for d in info["devices"]}
                charging = [d for d in devices.values() if d.get("state") == 3]
                if len(charging) == 2 and all(d["current_l1"] > 0 for d in charging):
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no balancing within 40 s: {devices}\n{log_path.read_text()}")
        e1, e2, grid = devices["E1"], devices["E2"], devices["M1"]
        # Both cars share L1 (E2 is single-phase): neither gets its 16 A, the fuse holds.
        assert e1["lreason"] == "limited" or e2["lreason"] == "limited"
        assert e1["charging_current"] < 16_000 and e2["charging_current"] < 16_000
        assert e1["charging_current"] + e2["charging_current"] <= MAIN_FUSE_MA
        assert not grid["com_err"]
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(timeout=10)
            raise AssertionError(f"the demo did not stop:\n{log_path.read_text()}") from None
        assert code == 0, log_path.read_text()
        assert log_path.read_text().rstrip().endswith("chargebus demo stopped")
