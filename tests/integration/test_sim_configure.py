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
from tests.integration.service_process import ChargebusProcess, ServiceProcess

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


# -- when chargebus is not there, or refuses: each attempt logged, a stop within 2 s --------


def start_sim(tmp_path: Path, configure_url: str, env: dict[str, str]) -> ChargebusProcess:
    """`chargebus sim --configure URL` with one Power Brain and a grid meter, to be started
    by `with`."""
    port, grid_port = find_free_port(), find_free_port()
    args = [
        "sim", "--port", str(port), "--count", "1", "--grid-port", str(grid_port),
        "--configure", configure_url,
    ]  # fmt: skip
    return ChargebusProcess(args, tmp_path / "sim.log", env)  # started by `with`


def wait_for_log(process: ChargebusProcess, text: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.log().count(text) >= count:
            return
        assert process.process is not None and process.process.poll() is None, process.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not {count}x in the log within {timeout} s:\n{process.log()}")


def stop_sim(sim: ChargebusProcess) -> str:
    """SIGTERM; the simulator's own watchdog ends it with code 70 and a thread dump when
    stopping takes over 2 s, so code 0 shows a stop within 2 s."""
    code = sim.kill(signal.SIGTERM)
    log = sim.log()
    assert code == 0, log
    assert "stopping took over" not in log
    assert "simulators stopped" in log
    return log


def test_attempts_while_chargebus_is_not_there_are_logged(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{find_free_port()}/cnf"
    with start_sim(tmp_path, nobody, {"CHARGEBUS_ADMIN_PASSWORD": PASSWORD}) as sim:
        wait_for_log(sim, "attempt 2 failed", timeout=20)
        log = stop_sim(sim)
    first = next(line for line in log.splitlines() if "attempt 1 failed" in line)
    assert f"configuring the demo devices at {nobody}" in first
    assert "cannot connect" in first and "not started yet?" in first
    assert "retrying in 1 s" in first


def test_a_wrong_admin_password_is_named(
    mqtt_broker: BrokerAddress, tmp_path: Path, base_topic: str
) -> None:
    env = {
        "CHARGEBUS_MQTT_URL": mqtt_broker.url,
        "CHARGEBUS_BASE_TOPIC": base_topic,
        "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
    }
    with ServiceProcess(tmp_path / "data", tmp_path / "service.log", env) as service:
        service.wait_ready()
        wrong = {"CHARGEBUS_ADMIN_PASSWORD": "not-the-password"}
        with start_sim(tmp_path, service.url, wrong) as sim:
            wait_for_log(sim, "attempt 1 failed")
            log = stop_sim(sim)
        # Nothing was configured with the wrong password.
        assert service.get(cmd="get_dev_info")["devices"] == []
    assert "HTTP 401: CHARGEBUS_ADMIN_PASSWORD is not that chargebus's admin password" in log


def test_without_a_password_the_simulators_run_unconfigured(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{find_free_port()}/cnf"
    with start_sim(tmp_path, nobody, {}) as sim:
        wait_for_log(sim, "simulated Power Brains on")
        log = stop_sim(sim)
    assert "--configure needs its admin password in CHARGEBUS_ADMIN_PASSWORD" in log
    assert "attempt 1" not in log
