"""The dashboard's live stream (/ui/events) through a real port, against the real service and
a real mosquitto: a snapshot first, then the changes a bus message causes, no more often than
every ~100 ms, a keepalive, the newest values only for a browser that reads slowly, and the
end of every stream at once when the service stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service.app import RunningService, running_service
from service.http.events import DashboardHub
from service.settings import Settings
from service.topics import Topics
from tests.integration.conftest import GARAGE_EVSE, GRID_METER, IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.sse_client import Event, events, next_event
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def evse_state(current_ma: int, state: int = 3, energy: float = 1000.0) -> bytes:
    return json.dumps(
        {"ts": time.time(), "state": state, "current": [current_ma, current_ma, current_ma],
         "total_energy": energy}
    ).encode()  # fmt: skip


@pytest.fixture
async def site(api: Api) -> Api:
    await api.set_params({**IMMEDIATE, "max_total_current": 32000,
                          "devices": [GARAGE_EVSE, GRID_METER]})  # fmt: skip
    return api


@pytest.fixture
async def stream(service: RunningService) -> AsyncIterator[AsyncIterator[Event]]:
    url = f"http://127.0.0.1:{service.http_port}/ui/events"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        yield events(response)


def infos_of(event: Event) -> dict[str, dict[str, Any]]:
    return {info["dev_id"]: info for info in event.json().get("infos", [])}


async def test_a_snapshot_then_the_change_a_bus_message_causes(
    site: Api, service: RunningService, stream: AsyncIterator[Event], observer: MqttObserver,
    settings: Settings,
) -> None:  # fmt: skip
    snapshot = await next_event(stream, "snapshot")
    body = snapshot.json()
    assert body["params"]["max_total_current"] == 32000
    assert set(infos_of(snapshot)) == {"E1", "M1"}
    assert isinstance(body["history"], list)

    observer.publish(Topics(settings.base_topic).state("E1"), evse_state(7300))
    deadline = time.monotonic() + 10
    seen: dict[str, Any] = {}
    while seen.get("current_l1") != 7300:
        assert time.monotonic() < deadline, f"no update with E1 at 7.3 A; last {seen}"
        update = await next_event(stream, "update")
        seen = infos_of(update).get("E1", {})
    # Deltas: the changed fields and the id, not the whole info again.
    assert seen["dev_id"] == "E1"
    assert "name" not in seen


async def test_updates_come_at_most_every_100_ms_and_carry_the_newest_value(
    site: Api, stream: AsyncIterator[Event], observer: MqttObserver, settings: Settings
) -> None:
    await next_event(stream, "snapshot")
    topic = Topics(settings.base_topic).state("E1")
    arrivals: list[float] = []
    last: dict[str, Any] = {}

    async def read() -> None:
        async for event in stream:
            if event.name == "update":
                arrivals.append(event.at)
                last.update(infos_of(event).get("E1", {}))

    reader = asyncio.create_task(read())
    try:
        # A burst: 60 states within about 0.6 s.
        for current in range(6000, 12000, 100):
            observer.publish(topic, evse_state(current))
            await asyncio.sleep(0.01)
        await eventually(lambda: last.get("current_l1") == 11900, "the last state on the stream")
    finally:
        reader.cancel()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # The hub waits 100 ms between ticks; the client's clock may see two close together
    # when a tick's write waited behind the previous one, never many.
    assert len(arrivals) < 60
    assert sum(1 for gap in gaps if gap < 0.05) <= 2, gaps


async def test_a_keepalive_while_nothing_changes() -> None:
    hub = DashboardHub(keepalive_s=0.2)
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await hub.stream(request, {})

    app.router.add_get("/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/events"
        ) as response:
            stream = events(response)
            assert (await next_event(stream)).name == "snapshot"
            keepalive = await next_event(stream, "", timeout=5)
            assert keepalive.comment == "keepalive"
    finally:
        hub.close()
        await runner.cleanup()


async def test_a_slow_browser_gets_the_newest_values_not_a_queue() -> None:
    """A client that stops reading: the hub keeps at most one event for it, and when it reads
    again it gets one snapshot with the newest values."""
    hub = DashboardHub(min_interval_s=0.01)
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await hub.stream(request, {})

    app.router.add_get("/events", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: hub.clients == 1, "the stream is open")
        # Far more than the sockets' buffers take while nobody reads: 200 ticks of 50 kB.
        for n in range(200):
            pad = f"{n:05d}" * 10_000
            info = {"dev_id": "E1", "n": n, "pad": pad}
            hub.info("E1", json.dumps(info, separators=(",", ":")).encode())
            await asyncio.sleep(0.012)
        assert hub.resyncs >= 1
        # One event (~50 kB here) waits at most, besides the one being written: no queue.
        assert hub.held_bytes <= 60_000
        sock.setblocking(False)
        received = b""
        deadline = time.monotonic() + 10
        while b'"n":199' not in received:
            assert time.monotonic() < deadline, received[-300:]
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            assert chunk, "the stream ended"
            received += chunk
        # It skipped many of the 200 values (what the kernel's buffers held came through):
        # it got a snapshot, not a queue.
        assert received.count(b'"n":') < 150
        assert b"event: snapshot" in received.split(b'"n":0,')[-1]
    finally:
        sock.close()
        hub.close()
        await runner.cleanup()


async def test_streams_end_at_once_when_the_service_stops(settings: Settings) -> None:
    async with aiohttp.ClientSession() as session:
        async with running_service(settings) as service:
            url = f"http://127.0.0.1:{service.http_port}/ui/events"
            response = await session.get(url)
            stream = events(response)
            await next_event(stream, "snapshot")
            started = time.monotonic()
        stopped = time.monotonic() - started
        # aiohttp would wait up to its shutdown timeout (60 s) for an open stream.
        assert stopped < 10, f"the service took {stopped:.1f} s to stop"
        with pytest.raises(EOFError):
            await next_event(stream, timeout=5)
        response.release()


async def test_the_stream_shows_no_more_than_an_anonymous_get_dev_info(
    site: Api, service: RunningService
) -> None:
    anna = {"name": "Anna", "display": False, "rfids": [{"id": "4711"}]}
    status, _ = await site.post(anna, site.admin, cmd="set_user")
    assert status == 200
    users = await site.ok(cmd="get_users")
    await site.set_params({"devices": [{"dev_id": "E1", "users": [users[0]["id"]],
                                        "fixed_rfid": "9999"}]})  # fmt: skip
    url = f"http://127.0.0.1:{service.http_port}/ui/events"
    # Even with the admin's credentials, the stream is the anonymous view.
    async with aiohttp.ClientSession() as session, session.get(url, headers=site.admin) as resp:
        snapshot = await next_event(events(resp), "snapshot")
    raw = snapshot.data
    assert users[0]["id"] not in raw
    assert "4711" not in raw and "9999" not in raw
    e1 = infos_of(snapshot)["E1"]
    assert "users" not in e1 and "fixed_rfid" not in e1
    _, anonymous = await site.get(cmd="get_dev_info")
    shown = {d["dev_id"]: d for d in anonymous["devices"]}["E1"]
    assert set(e1) <= set(shown)
