"""`chargebus run` with no broker configured: the embedded broker, and a taken port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

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
