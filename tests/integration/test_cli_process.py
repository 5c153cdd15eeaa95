"""`chargebus` as a process: a start-up problem is one line and exit code 2 (no traceback, no
log), and a stop says so in the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import data_dir_problem
from tests.broker import BrokerAddress
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration


def chargebus(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        path = tmp_path / "read-only"
        path.mkdir()
        path.chmod(0o555)
        return path
    # Root writes past permission bits; sysfs refuses new files to everyone.
    if data_dir_problem(Path("/sys")) is None:
        pytest.skip("running as root and /sys takes files: no directory root cannot write")
    return Path("/sys")


def assert_one_line(done: subprocess.CompletedProcess[str]) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert len(output.splitlines()) == 1, output
    return output.strip()


def test_a_data_dir_that_is_not_writable_is_one_line(tmp_path: Path) -> None:
    path = unwritable_dir(tmp_path)
    try:
        line = assert_one_line(chargebus("run", "--data-dir", str(path)))
    finally:
        if path.is_relative_to(tmp_path):
            path.chmod(0o755)
    assert line.startswith(f"chargebus run: data dir {path} is not writable (")
    assert "choose another with --data-dir or CHARGEBUS_DATA_DIR" in line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    line = assert_one_line(chargebus("demo", "--data-dir", str(a_file)))
    assert f"data dir {a_file}/demo cannot be created (Not a directory)" in line
    assert a_file.read_text() == "not a directory"


def test_a_bad_flag_value_is_one_line() -> None:
    line = assert_one_line(chargebus("run", "--http-port", "abc"))
    assert line.startswith("chargebus run: bad setting --http-port 'abc'")


def test_a_stop_is_logged(mqtt_broker: BrokerAddress, tmp_path: Path, base_topic: str) -> None:
    env = {
        "CHARGEBUS_MQTT_URL": mqtt_broker.url,
        "CHARGEBUS_BASE_TOPIC": base_topic,
        "CHARGEBUS_ADMIN_PASSWORD": "stop-test-pw",
    }
    with ServiceProcess(tmp_path / "data", tmp_path / "log", env) as service:
        service.wait_ready()
        assert service.kill(signal.SIGTERM) == 0
    lines = service.log().splitlines()
    assert any(line.endswith("SIGTERM: stopping") for line in lines), lines
    assert lines[-1].endswith("INFO chargebus: chargebus run stopped"), lines[-3:]
