"""The MQTT contract as a home-automation user meets it: Debian's `mosquitto_pub` and
`mosquitto_sub` against the running service (docs/mqtt.md shows these very commands).

The clients run as subprocesses of their own, so the test sees the bus exactly as a shell
user does: their own connections, their default QoS, retained messages as the broker keeps
them. They run asynchronously, because the service under test shares this event loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.app import RunningService
from service.settings import Settings
from tests.broker import BrokerAddress
from tests.integration.conftest import GARAGE_EVSE, Api
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

EVSE = GARAGE_EVSE
COMMAND_KEYS = {
    "device_enabled",
    "charging_enabled",
    "paused",
    "charging_current",
    "ts",
    "state_ts",
}
# How long a client may take to connect, get its answer and exit; generous for a busy CI.
CLIENT_TIMEOUT_S = 10.0
WAIT_S = 10.0
# mosquitto_sub's exit code when -W ran out before -C messages came.
SUB_TIMED_OUT = 27
MISSING_HINT = "run scripts/ensure-mosquitto.sh to install Debian's mosquitto-clients"


def client_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        pytest.fail(f"{name} not found: {MISSING_HINT}", pytrace=False)
    return found


def connection_args(broker: BrokerAddress) -> list[str]:
    args = ["-h", broker.host, "-p", str(broker.port)]
    if broker.username is not None:
        args += ["-u", broker.username]
    if broker.password is not None:
        args += ["-P", broker.password]
    return args


@dataclass(frozen=True)
class ClientRun:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line]


async def run_client(argv: list[str]) -> ClientRun:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{argv[0]} did not finish within {CLIENT_TIMEOUT_S:g} s: {argv}")
    assert process.returncode is not None
    return ClientRun(process.returncode, out.decode(), err.decode())


class Clients:
    """mosquitto_pub / mosquitto_sub aimed at the test broker."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.pub_binary = client_binary("mosquitto_pub")
        self.sub_binary = client_binary("mosquitto_sub")
        self.connection = connection_args(broker)

    async def pub(self, topic: str, message: str, *extra: str) -> None:
        done = await run_client(
            [self.pub_binary, *self.connection, "-t", topic, "-m", message, *extra]
        )
        assert done.returncode == 0, done.stderr

    async def sub(self, topic: str, *extra: str, count: int = 1, wait_s: int = 5) -> ClientRun:
        """`mosquitto_sub -C count -W wait_s -t topic`: the first `count` payloads."""
        return await run_client(
            [
                self.sub_binary,
                *self.connection,
                "-t",
                topic,
                "-C",
                str(count),
                "-W",
                str(wait_s),
                *extra,
            ]
        )

    async def retained(self, topic: str) -> str:
        done = await self.sub(topic)
        assert done.returncode == 0, f"no retained message on {topic}: {done.stderr}"
        return done.stdout.rstrip("\n")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Discovery would leave retained configs under the shared homeassistant/ prefix.
    return settings.model_copy(update={"ha_discovery": False})


@pytest.fixture(autouse=True)
def clear_retained(mqtt_broker: BrokerAddress, base_topic: str) -> Iterator[None]:
    """Set up before the service and torn down after it: the session broker keeps
    retained messages, so everything left under this test's base topic (the core's
    `offline`, configs, commands) is removed once the service has stopped."""
    yield
    subprocess.run(
        [
            client_binary("mosquitto_sub"),
            *connection_args(mqtt_broker),
            "-t",
            f"{base_topic}/#",
            "--retained-only",
            "--remove-retained",
            "-W",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def clients(mqtt_broker: BrokerAddress) -> Clients:
    return Clients(mqtt_broker)


async def device_config(api: Api, dev_id: str) -> dict[str, Any] | None:
    devices = await api.ok(cmd="get_devices")
    return next((d for d in devices if d["dev_id"] == dev_id), None)


async def create_evse(api: Api, clients: Clients, base_topic: str) -> dict[str, Any]:
    await api.set_params({"devices": [EVSE]})
    info: dict[str, Any] = json.loads(await clients.retained(f"{base_topic}/devices/E1/info"))
    assert info["dev_id"] == "E1"
    return info


# -- reading ---------------------------------------------------------------------------------


async def test_status_reads_online(
    service: RunningService, clients: Clients, base_topic: str
) -> None:
    assert await clients.retained(f"{base_topic}/status") == "online"


async def test_verbose_sub_shows_topic_and_payload(
    service: RunningService, api: Api, clients: Clients, base_topic: str
) -> None:
    await create_evse(api, clients, base_topic)
    done = await clients.sub(f"{base_topic}/devices/+/command", "-v")
    assert done.returncode == 0, done.stderr
    topic, _, payload = done.lines()[0].partition(" ")
    assert topic == f"{base_topic}/devices/E1/command"
    command = json.loads(payload)
    assert set(command) == COMMAND_KEYS
    # No state has come from the wallbox yet: the command answers none.
    assert command["state_ts"] is None


async def test_info_is_the_devices_get_dev_info_object(
    service: RunningService, api: Api, clients: Clients, base_topic: str
) -> None:
    info = await create_evse(api, clients, base_topic)
    status, answer = await api.get(cmd="get_dev_info")
    assert status == 200
    via_api = next(d for d in answer["devices"] if d["dev_id"] == "E1")
    for key in ("dev_type", "name", "min_charging_cur", "max_charging_cur", "is_evse"):
        assert info[key] == via_api[key], key
    # Only the admin sees who may charge; the bus is for every reader.
    assert "users" not in info and "fixed_rfid" not in info


# -- changing through `set` ------------------------------------------------------------------


@pytest.mark.parametrize("qos", ["0", "1"])
async def test_set_changes_max_charging_cur(
    service: RunningService, api: Api, clients: Clients, base_topic: str, qos: str
) -> None:
    await create_evse(api, clients, base_topic)

    await clients.pub(
        f"{base_topic}/devices/E1/set", json.dumps({"max_charging_cur": 10000}), "-q", qos
    )

    async def changed_in_config() -> bool:
        config = await device_config(api, "E1")
        return config is not None and config["max_charging_cur"] == 10000

    await eventually(changed_in_config, "get_devices shows max_charging_cur 10000")

    async def changed_in_info() -> bool:
        info = json.loads(await clients.retained(f"{base_topic}/devices/E1/info"))
        return bool(info["max_charging_cur"] == 10000)

    await eventually(changed_in_info, "the retained info shows max_charging_cur 10000")
    config = await device_config(api, "E1")
    assert config is not None
    # Only the field given changed.
    assert config["min_charging_cur"] == EVSE["min_charging_cur"]
    assert config["name"] == EVSE["name"]


async def test_malformed_sets_are_rejected_and_change_nothing(
    service: RunningService, api: Api, clients: Clients, base_topic: str
) -> None:
    before = await create_evse(api, clients, base_topic)
    config_before = await device_config(api, "E1")
    rejected_before = service.bus.stats.rejected_by_reason.get("set", 0)
    bad = [
        ("E1", '{"max_charging_cur": 10000'),  # not JSON
        ("E1", '{"max_charging_cur": 99000}'),  # above 80 A
        ("E1", '{"max_charging_cur": 10000, "colour": "red"}'),  # unknown field: all refused
        ("E1", "[10000]"),  # not an object
        ("E9", '{"max_charging_cur": 10000}'),  # no such device
    ]
    for dev_id, payload in bad:
        await clients.pub(f"{base_topic}/devices/{dev_id}/set", payload)

    async def all_rejected() -> bool:
        return service.bus.stats.rejected_by_reason.get("set", 0) - rejected_before == len(bad)

    await eventually(all_rejected, f"{len(bad)} set messages counted as rejected")
    assert await device_config(api, "E1") == config_before
    assert await device_config(api, "E9") is None
    after = json.loads(await clients.retained(f"{base_topic}/devices/E1/info"))
    assert after["max_charging_cur"] == before["max_charging_cur"] == 16000
    # A set never creates a device: nothing is retained for E9.
    missing = await clients.sub(f"{base_topic}/devices/E9/#", wait_s=1)
    assert missing.returncode == SUB_TIMED_OUT and missing.stdout == ""


async def test_deleted_device_leaves_no_retained_topics(
    service: RunningService, api: Api, clients: Clients, base_topic: str
) -> None:
    await create_evse(api, clients, base_topic)
    assert await api.ok(cmd="del_device", dev_id="E1") == "ok"

    async def all_cleared() -> bool:
        done = await clients.sub(f"{base_topic}/devices/E1/#", "--retained-only", wait_s=1)
        return done.stdout == ""

    await eventually(all_cleared, "config, info and command of E1 cleared")
