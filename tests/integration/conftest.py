"""Fixtures for tests that run chargebus in-process against a real broker and HTTP port."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.app import RunningService, running_service
from service.core.control_law import NO_WAITS
from service.settings import Settings
from tests.broker import BrokerAddress
from tests.integration.mqtt_observer import MqttObserver

ADMIN_PASSWORD = "test-admin-pw"

# The devices most tests configure through set_params: one HTTP-input wallbox, one grid meter.
GARAGE_EVSE: dict[str, Any] = {
    "dev_type": "evse_ajax",
    "dev_id": "E1",
    "name": "Garage",
    "min_charging_cur": 6000,
    "max_charging_cur": 16000,
}
GRID_METER: dict[str, Any] = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}
# The control law's waits and steps switched off: tests of the plumbing (bus, HTTP, bridges)
# expect a state's command to be the allocation's answer at once. tests/closed_loop tests the
# control law itself on a lagging plant.
IMMEDIATE: dict[str, Any] = {
    **NO_WAITS,
    # A car that was cut counts at its old command until it reports the new one or this
    # many seconds pass; plumbing tests rarely report again.
    "follow_time": 1,
}


@pytest.fixture
def base_topic() -> str:
    # A topic tree of its own per test: the session broker keeps retained messages.
    return f"cbtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(mqtt_broker: BrokerAddress, tmp_path: Path, base_topic: str) -> Settings:
    return Settings(
        mqtt_url=mqtt_broker.url,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=tmp_path / "data",
        base_topic=base_topic,
        admin_password=ADMIN_PASSWORD,
        diag_log_seconds=1.0,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[RunningService]:
    async with running_service(settings) as running:
        await running.bus.wait_connected(10)
        yield running


@pytest.fixture
def observer(mqtt_broker: BrokerAddress, base_topic: str) -> Iterator[MqttObserver]:
    with MqttObserver(mqtt_broker.host, mqtt_broker.port, [f"{base_topic}/#"]) as seen:
        yield seen


Auth = dict[str, str]


def basic_auth(user: str, password: str) -> Auth:
    """An Authorization header as curl --user sends it."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Api:
    """A /cnf client for tests: answers as (status, decoded JSON)."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{port}/cnf"
        self.admin = basic_auth("admin", ADMIN_PASSWORD)

    async def get(self, auth: Auth | None = None, **params: Any) -> tuple[int, Any]:
        async with self.session.get(self.url, params=_strings(params), headers=auth) as resp:
            return resp.status, await resp.json(content_type=None)

    async def post(
        self, body: Any, auth: Auth | None = None, *, raw: bytes | None = None, **params: Any
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.session.post(
            self.url, params=_strings(params), headers=auth, **kwargs
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, **params: Any) -> Any:
        status, answer = await self.get(self.admin, **params)
        assert status == 200, answer
        return answer

    async def set_params(self, body: Any) -> None:
        status, answer = await self.post(body, self.admin, cmd="set_params")
        assert (status, answer) == (200, "ok")


def _strings(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in params.items()}


@pytest.fixture
async def api(service: RunningService) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, service.http_port)
