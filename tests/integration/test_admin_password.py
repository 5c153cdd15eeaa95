"""The admin password as a first-time user meets it: generated and shown by the start that
succeeds, a given one that no longer counts is warned about, and `chargebus admin-password`
sets it on the machine, for a running chargebus too."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from tests.broker import BrokerAddress
from tests.integration.service_process import ServiceProcess

pytestmark = pytest.mark.integration

GENERATED = re.compile(r"generated the admin password: (\S+) ")
DEVICE = {"devices": [{"dev_type": "meter_ajax", "dev_id": "M7", "role": 3}]}


@pytest.fixture
def env(mqtt_broker: BrokerAddress, base_topic: str) -> dict[str, str]:
    return {"CHARGEBUS_MQTT_URL": mqtt_broker.url, "CHARGEBUS_BASE_TOPIC": base_topic}


def http_status(service: ServiceProcess, password: str) -> int:
    """The status of an admin command (set_params) with this password."""
    try:
        assert service.set_params(DEVICE, password) == "ok"
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def admin_password_command(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "admin-password", *args],
        input=stdin,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_start_that_failed_does_not_lose_the_generated_password(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = ServiceProcess(data, tmp_path / "first.log", env)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first.http_port))
        taken.listen()
        with first:
            assert first.wait_exit() == 2
    assert f"HTTP port {first.http_port} on 127.0.0.1 is taken" in first.log()
    assert "generated the admin password" not in first.log()
    assert not (data / "admin.json").exists()

    with ServiceProcess(data, tmp_path / "retry.log", env) as retry:
        retry.wait_ready()
        shown = GENERATED.search(retry.log())
        assert shown is not None, retry.log()
        assert http_status(retry, shown.group(1)) == 200
        assert http_status(retry, shown.group(1) + "x") == 401


def test_a_given_password_that_is_not_the_stored_one_is_warned_about(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"

    def start(password: str, log: str) -> ServiceProcess:
        return ServiceProcess(data, tmp_path / log, {**env, "CHARGEBUS_ADMIN_PASSWORD": password})

    with start("pw-one", "first.log") as first:
        first.wait_ready()
    with start("pw-one", "same.log") as same:
        same.wait_ready()
    assert "is ignored" not in same.log()
    with start("pw-two", "other.log") as other:
        other.wait_ready()
        assert http_status(other, "pw-one") == 200
        assert http_status(other, "pw-two") == 401
        log = other.log()
    assert "WARNING service.auth: the configured admin password" in log
    assert "is ignored" in log and "chargebus admin-password" in log
    assert "pw-two" not in log


def test_admin_password_sets_it_for_a_running_service(env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServiceProcess(data, tmp_path / "log", {**env, "CHARGEBUS_ADMIN_PASSWORD": "old-pw"}) as s:
        s.wait_ready()
        assert http_status(s, "old-pw") == 200
        done = admin_password_command("--data-dir", str(data), stdin="new-admin-pw\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert f"stored in {data / 'admin.json'}" in done.stderr
        assert http_status(s, "new-admin-pw") == 200
        assert http_status(s, "old-pw") == 401

        generated = admin_password_command("--data-dir", str(data), "--generate")
        assert generated.returncode == 0, generated.stderr
        password = generated.stdout.strip()
        assert len(password) >= 12
        assert http_status(s, password) == 200
        assert http_status(s, "new-admin-pw") == 401
    assert "new-admin-pw" not in (data / "admin.json").read_text()
    assert "the admin password was changed on disk" in s.log()


def test_admin_password_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    (tmp_path / "admin.json").write_text("unchanged")
    for args, stdin, expected in (
        (["--data-dir", str(tmp_path)], "abc\n", "the password needs at least 4 characters"),
        (["--data-dir", str(tmp_path / "typo")], "long-enough\n", "does not exist"),
        (["--data-dir", str(tmp_path / "admin.json")], "long-enough\n", "is not a directory"),
    ):
        done = admin_password_command(*args, stdin=stdin)
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1 and expected in done.stderr, done.stderr
    assert (tmp_path / "admin.json").read_text() == "unchanged"
    assert not (tmp_path / "typo").exists()
