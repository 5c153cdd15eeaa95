"""`chargebus sim --configure`: the compose demo's simulator configures its devices into a
chargebus that runs as another process, and that chargebus's bridge then polls them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import BrokerAddress, find_free_port
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration

PASSWORD = "sim-configure-pw"


def test_the_simulator_configures_chargebus_and_is_polled(
    mqtt_broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    env = {
        "CHARGEBUS_MQTT_URL": mqtt_broker.url,
        "CHARGEBUS_BASE_TOPIC": base_topic,
        "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
    }
    (tmp_path / "data").mkdir()
    with ServiceProcess(tmp_path / "data", tmp_path / "service.log", env) as service:
        service.wait_ready()
        port, grid_port = find_free_port(), find_free_port()
        sim_env = {**os.environ, "CHARGEBUS_ADMIN_PASSWORD": PASSWORD}
        command = [
            sys.executable, "-m", "service", "sim", "--port", str(port), "--count", "1",
            "--grid-port", str(grid_port), "--configure", service.url,
        ]  # fmt: skip
        with (tmp_path / "sim.log").open("wb") as log:
            sim = subprocess.Popen(command, env=sim_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            devices: dict[str, Any] = {}
            while time.monotonic() < deadline:
                info = service.get(cmd="get_dev_info")
                devices = {d["dev_id"]: d for d in info["devices"]}
                if (
                    {"M1", "E1"} <= set(devices)
                    and devices["E1"]["state"] == 2
                    and not devices["M1"]["com_err"]
                ):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f"not polled in time: {devices}; {service.log()}")
            assert devices["E1"]["address"] == f"127.0.0.1:{port}"
            assert devices["M1"]["dev_type"] == "meter_sdm630"
            assert devices["M1"]["current_l1"] > 0  # the simulated base load
        finally:
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(timeout=15) == 0, (tmp_path / "sim.log").read_text()
