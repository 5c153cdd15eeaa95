"""`chargebus run` with no broker configured: the embedded broker (mosquitto as a child
process, amqtt only where none is installed), and a taken port."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

import service.embedded_broker as embedded_broker_module
from service.embedded_broker import embedded_broker
from service.mosquitto_child import MosquittoFailed, find_mosquitto, mosquitto_child
from tests.broker import find_free_port
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration


def test_runs_with_the_embedded_broker(tmp_path: Path) -> None:
    port = find_free_port()
    with ServiceProcess(
        tmp_path / "data",
        tmp_path / "log",
        {
            "CHARGEBUS_MQTT_URL": "",
            "CHARGEBUS_EMBEDDED_BROKER_PORT": str(port),
            "CHARGEBUS_ADMIN_PASSWORD": "pw-embedded",
        },
    ) as service:
        service.wait_ready()
        with MqttObserver("127.0.0.1", port, ["chargebus/#"]) as observer:
            assert observer.wait_for("chargebus/status").payload == b"online"
            assert observer.wait_for("chargebus/params").json()["max_total_current"] == 32000
        assert f"mqtt://127.0.0.1:{port} (embedded)" in service.log()
        assert f"http://127.0.0.1:{service.http_port}/cnf" in service.log()


def test_generates_and_logs_an_admin_password_once(tmp_path: Path) -> None:
    env = {"CHARGEBUS_MQTT_URL": "", "CHARGEBUS_EMBEDDED_BROKER_PORT": "0"}
    with ServiceProcess(tmp_path / "data", tmp_path / "log", env) as service:
        service.wait_ready()
        assert "generated the admin password" in service.log()
    with ServiceProcess(tmp_path / "data", tmp_path / "log2", env) as again:
        again.wait_ready()
        assert "generated the admin password" not in again.log()


def test_an_explicitly_configured_taken_port_is_explained(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ServiceProcess(
            tmp_path / "data",
            tmp_path / "log",
            {"CHARGEBUS_MQTT_URL": "", "CHARGEBUS_EMBEDDED_BROKER_PORT": str(port)},
        ) as service:
            assert service.wait_exit() == 2
            log = service.log()
    assert f"port {port} on 127.0.0.1 is taken" in log
    assert f"CHARGEBUS_MQTT_URL=mqtt://127.0.0.1:{port}" in log


def test_the_http_port_is_taken_before_the_broker_starts(tmp_path: Path) -> None:
    # Checked first, so a taken HTTP port stops the process at once: a broker and a bus
    # already started would have to be shut down, and a half-started embedded broker could
    # hold that up for good. Both ports taken: the HTTP port is the one reported.
    with socket.socket() as http_taken, socket.socket() as mqtt_taken:
        for sock in (http_taken, mqtt_taken):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        http_port, mqtt_port = http_taken.getsockname()[1], mqtt_taken.getsockname()[1]
        service = ServiceProcess(
            tmp_path / "data",
            tmp_path / "log",
            {"CHARGEBUS_MQTT_URL": "", "CHARGEBUS_EMBEDDED_BROKER_PORT": str(mqtt_port)},
        )
        service.env["CHARGEBUS_HTTP_PORT"] = str(http_port)
        with service:
            assert service.wait_exit(timeout=10) == 2
        log = service.log()
    assert f"HTTP port {http_port} on 127.0.0.1 is taken" in log
    assert f"port {mqtt_port} on 127.0.0.1 is taken" not in log


# -- mosquitto as a child of chargebus; amqtt only without it --------------------------------


def needs_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary (scripts/ensure-mosquitto.sh installs it)")


def process_status(pid: int) -> tuple[str, int] | None:
    """(command name, parent pid) of a live process; None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
    return None if state in ("Z", "X") else (name, int(ppid))


def broker_pid(log: str) -> int:
    found = re.search(r"embedded broker: mosquitto \(\S+, pid (\d+)\)", log)
    assert found is not None, log
    return int(found.group(1))


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while process_status(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def embedded_env(port: int) -> dict[str, str]:
    return {
        "CHARGEBUS_MQTT_URL": "",
        "CHARGEBUS_EMBEDDED_BROKER_PORT": str(port),
        "CHARGEBUS_ADMIN_PASSWORD": "pw-embedded",
    }


def test_the_embedded_broker_is_mosquitto_as_a_child_process(tmp_path: Path) -> None:
    needs_mosquitto()
    port = find_free_port()
    with ServiceProcess(tmp_path / "data", tmp_path / "log", embedded_env(port)) as service:
        service.wait_ready()
        pid = broker_pid(service.log())
        assert process_status(pid) == ("mosquitto", service.pid)
        config = (tmp_path / "data" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        assert f"listener {port} 127.0.0.1" in config
        assert "set_tcp_nodelay true" in config
        assert "allow_anonymous true" in config
        with MqttObserver("127.0.0.1", port, ["chargebus/status"]) as observer:
            assert observer.wait_for("chargebus/status").payload == b"online"
        assert service.kill(signal.SIGTERM) == 0
    # Stopped with chargebus, after the core's goodbye.
    assert wait_gone(pid, timeout=0)
    assert "amqtt" not in service.log()


def test_a_killed_chargebus_takes_its_broker_along(tmp_path: Path) -> None:
    needs_mosquitto()
    if not sys.platform.startswith("linux"):
        pytest.skip("the broker follows a killed parent through Linux's PR_SET_PDEATHSIG")
    with ServiceProcess(tmp_path / "data", tmp_path / "log", embedded_env(0)) as service:
        service.wait_ready()
        pid = broker_pid(service.log())
        assert process_status(pid) is not None
        service.kill(signal.SIGKILL)
        assert wait_gone(pid), f"mosquitto {pid} outlived chargebus"


async def test_without_mosquitto_amqtt_runs_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded_broker_module, "find_mosquitto", lambda: None)
    with caplog.at_level(logging.WARNING, logger="service.embedded_broker"):
        async with embedded_broker("127.0.0.1", 0, tmp_path / "mosquitto") as target:
            observer = MqttObserver(target.host, target.port, ["fallback/#"])
            await asyncio.to_thread(observer.__enter__)
            try:
                observer.publish("fallback/x", b"served")
                await observer.wait("fallback/x")
            finally:
                await asyncio.to_thread(observer.__exit__, None, None, None)
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "service.embedded_broker" and r.levelno == logging.WARNING
    ]
    assert "no mosquitto binary found" in warning and "amqtt" in warning
    for caveat in ("QoS 0", "did not subscribe to", "twice", "docs/mqtt.md", "CHARGEBUS_MQTT_URL"):
        assert caveat in warning, caveat
    assert not (tmp_path / "mosquitto").exists()


async def test_a_mosquitto_that_cannot_start_is_one_clear_error(tmp_path: Path) -> None:
    # A shell script stands in for the binary: no mosquitto is needed.
    broken = tmp_path / "mosquitto"
    broken.write_text("#!/bin/sh\necho 'Error: something is wrong here' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(MosquittoFailed, match=r"exited with code 3 .*something is wrong here"):
        async with mosquitto_child(str(broken), "127.0.0.1", find_free_port(), tmp_path / "w"):
            pass
    broken.chmod(0o644)  # not executable
    with pytest.raises(MosquittoFailed, match=f"cannot run {broken}: Permission denied"):
        async with mosquitto_child(str(broken), "127.0.0.1", find_free_port(), tmp_path / "w"):
            pass
