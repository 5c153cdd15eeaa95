"""The test helper that runs `chargebus run` copes with its HTTP port being taken meanwhile."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration


def test_a_port_taken_after_it_was_chosen_means_another_port(tmp_path: Path) -> None:
    env = {"CHARGEBUS_MQTT_URL": "", "CHARGEBUS_EMBEDDED_BROKER_PORT": "0"}
    service = ServiceProcess(tmp_path / "data", tmp_path / "log", env)
    chosen = service.http_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", chosen))
        squatter.listen()
        with service:
            service.wait_ready()
            assert service.http_port != chosen
            assert service.get(cmd="get_params")["max_total_current"] == 32000
    assert f"HTTP port {chosen} on 127.0.0.1 is taken" in service.log()
