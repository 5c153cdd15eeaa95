"""set_ajax_meter / set_ajax_evse through the service's /cnf, the broker and the core.

The bridge is also tested alone on a real bus, with the test playing the core, where exact
control over the commands matters (which request gets which answer, timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from bridges.http_input import HttpInputBridge, InputError, run_http_bridge
from service.app import RunningService
from service.bus import MqttBus
from service.settings import MqttTarget, Settings
from service.topics import Topics
from tests.broker import BrokerAddress, find_free_port
from tests.integration.conftest import ADMIN_PASSWORD, IMMEDIATE, Api, basic_auth
from tests.integration.mqtt_observer import MqttObserver, Seen

pytestmark = pytest.mark.integration

M3 = {"dev_type": "meter_ajax", "dev_id": "M3", "name": "Grid", "role": 3}
E1 = {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7, "min_charging_cur": 6000}
CONTROL_KEYS = ("device_enabled", "charging_enabled", "paused", "charging_current")

# The API's set_ajax_* examples (docs/api.md), verbatim.
SPEC_POST = (
    '{ "model": "TestModell", "import_wh": 12345, "export_wh": 23456, '
    '"voltage": [231, 232, 233], "current": [10001, 10002, 10003] }'
)
SPEC_GET = (
    "cmd=set_ajax_meter&dev_id=M3&model=TestModell&import_wh=12345&export_wh=23456"
    "&voltage=231,232,233&current=10001,10002,10003"
)
SPEC_STATE = {
    "model": "TestModell",
    "import_wh": 12345,
    "export_wh": 23456,
    "voltage": [231, 232, 233],
    "current": [10001, 10002, 10003],
}
EVSE_BODY = {
    "state": 3,
    "max_charging_current": 16000,
    "current": [6000, 6000, 6000],
    "total_energy": 1500,
    "model": "TestBox",
    "rfid": "",
}


async def wait_known(bridge: HttpInputBridge, dev_id: str, timeout: float = 10) -> None:
    """The bridge learns devices from retained configs, a moment after set_params."""
    deadline = time.monotonic() + timeout
    while bridge.device_kind(dev_id) is None:
        assert time.monotonic() < deadline, f"the bridge never learned {dev_id}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def site(api: Api, service: RunningService) -> HttpInputBridge:
    await api.set_params({"max_total_current": 32000, **IMMEDIATE, "devices": [M3]})
    await api.set_params({"devices": [E1]})
    bridge = service.http_input
    assert bridge is not None
    await wait_known(bridge, "M3")
    await wait_known(bridge, "E1")
    return bridge


def states(observer: MqttObserver) -> list[Seen]:
    return [m for m in observer.messages if m.topic.endswith("/state")]


async def nothing_published(observer: MqttObserver) -> None:
    # Whatever the request could have published reached the broker before the probe did.
    await observer.roundtrip()
    assert states(observer) == []


async def post_json(
    api: Api, body: bytes, auth: dict[str, str] | None, **params: str
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(auth or {})}
    async with api.session.post(api.url, params=params, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# -- meters ----------------------------------------------------------------------------------


async def test_spec_curl_example(
    api: Api,
    site: HttpInputBridge,
    observer: MqttObserver,
    base_topic: str,
    service: RunningService,
) -> None:
    # The spec's command line, with this test's host and password.
    process = await asyncio.create_subprocess_exec(
        *["curl", "-s", "-i", "-X", "POST", "-H", "Content-Type: application/json"],
        *["-d", SPEC_POST, "--user", f"admin:{ADMIN_PASSWORD}"],
        f"http://127.0.0.1:{service.http_port}/cnf?cmd=set_ajax_meter&dev_id=M3",
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0
    head, _, body = output.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert json.loads(body) == "ok"

    seen = await observer.wait(f"{base_topic}/devices/M3/state")
    assert {k: v for k, v in seen.json().items() if k != "ts"} == SPEC_STATE
    assert abs(seen.json()["ts"] - time.time()) < 60
    await wait_dev_info(api, "M3", {"import": 12345, "export": 23456, "model": "TestModell"})


async def wait_dev_info(api: Api, dev_id: str, expected: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        info = await api.ok(cmd="get_dev_info")
        device = next(d for d in info["devices"] if d["dev_id"] == dev_id)
        if all(device.get(k) == v for k, v in expected.items()):
            return dict(device)
        assert time.monotonic() < deadline, device
        await asyncio.sleep(0.05)


async def test_post_with_aiohttp(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    status, answer = await post_json(
        api, SPEC_POST.encode(), api.admin, cmd="set_ajax_meter", dev_id="M3"
    )
    assert (status, answer) == (200, "ok")
    seen = await observer.wait(f"{base_topic}/devices/M3/state")
    assert {k: v for k, v in seen.json().items() if k != "ts"} == SPEC_STATE


async def test_get_variant(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    # The spec's query string as written, commas unescaped.
    url = URL(f"{api.url}?{SPEC_GET}", encoded=True)
    async with api.session.get(url, headers=api.admin) as resp:
        assert (resp.status, await resp.json()) == (200, "ok")
    seen = await observer.wait(f"{base_topic}/devices/M3/state")
    assert {k: v for k, v in seen.json().items() if k != "ts"} == SPEC_STATE
    device = await wait_dev_info(api, "M3", {"import": 12345})
    assert (device["current_l1"], device["voltage_l3"]) == (10001, 233)


async def test_form_post(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    async with api.session.post(
        api.url,
        params={"cmd": "set_ajax_meter", "dev_id": "M3"},
        data={"import_wh": "42.00", "current": "1,2,3"},
        headers=api.admin,
    ) as resp:
        assert (resp.status, await resp.json()) == (200, "ok")
    seen = await observer.wait(f"{base_topic}/devices/M3/state")
    assert seen.json()["import_wh"] == 42 and seen.json()["current"] == [1, 2, 3]


async def test_import_vah_and_power(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    body = {"import_vah": 500, "power_w": 2300, "is_va": True}
    status, answer = await api.post(body, api.admin, cmd="set_ajax_meter", dev_id="M3")
    assert (status, answer) == (200, "ok")
    seen = await observer.wait(f"{base_topic}/devices/M3/state")
    assert seen.json()["import_wh"] == 500
    await wait_dev_info(api, "M3", {"import": 500, "power_w": 2300, "is_va": True})


# -- EVSEs -----------------------------------------------------------------------------------


async def test_set_ajax_evse_answers_the_command_for_its_state(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    await api.post({"current": [0, 0, 0]}, api.admin, cmd="set_ajax_meter", dev_id="M3")
    status, answer = await api.post(EVSE_BODY, api.admin, cmd="set_ajax_evse", dev_id="E1")
    assert status == 200, answer
    assert set(answer) == set(CONTROL_KEYS)
    posted = await observer.wait(f"{base_topic}/devices/E1/state")
    ts = posted.json()["ts"]
    assert {k: v for k, v in posted.json().items() if k != "ts"} == EVSE_BODY
    command = await observer.wait(
        f"{base_topic}/devices/E1/command", lambda m: m.json()["state_ts"] == ts
    )
    assert {k: command.json()[k] for k in CONTROL_KEYS} == answer
    assert answer["charging_enabled"] is True and answer["charging_current"] >= 6000


async def test_set_ajax_evse_by_get(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    status, answer = await api.get(
        api.admin,
        cmd="set_ajax_evse",
        dev_id="E1",
        model="TestModell",
        state=2,
        max_charging_current=16000,
        current="0,0,0",
        total_energy=10,
        rfid="",
    )
    assert status == 200, answer
    posted = await observer.wait(f"{base_topic}/devices/E1/state")
    assert posted.json()["state"] == 2 and posted.json()["current"] == [0, 0, 0]
    command = await observer.wait(
        f"{base_topic}/devices/E1/command",
        lambda m: m.json()["state_ts"] == posted.json()["ts"],
    )
    assert {k: command.json()[k] for k in CONTROL_KEYS} == answer


async def test_concurrent_requests_each_get_an_answer(
    api: Api, site: HttpInputBridge, observer: MqttObserver, base_topic: str
) -> None:
    results = await asyncio.gather(
        *(api.post(EVSE_BODY, api.admin, cmd="set_ajax_evse", dev_id="E1") for _ in range(5))
    )
    assert all(status == 200 and set(answer) == set(CONTROL_KEYS) for status, answer in results)
    await observer.roundtrip()
    stamps = [m.json()["ts"] for m in observer.on(f"{base_topic}/devices/E1/state")]
    assert len(stamps) == 5 and len(set(stamps)) == 5


# -- refusals: nothing reaches the bus -------------------------------------------------------


async def test_a_meter_is_not_an_evse(
    api: Api, site: HttpInputBridge, observer: MqttObserver
) -> None:
    observer.clear()
    status, answer = await api.post(EVSE_BODY, api.admin, cmd="set_ajax_evse", dev_id="M3")
    assert status == 400
    assert "EVSE" in answer["error"] and "meter_ajax" in answer["error"]
    status, answer = await api.get(api.admin, cmd="set_ajax_meter", dev_id="E1", import_wh=1)
    assert status == 400 and "meter" in answer["error"]
    await nothing_published(observer)


async def test_unknown_device(api: Api, site: HttpInputBridge, observer: MqttObserver) -> None:
    observer.clear()
    for cmd in ("set_ajax_meter", "set_ajax_evse"):
        status, answer = await api.get(api.admin, cmd=cmd, dev_id="M99")
        assert status == 404 and "M99" in answer["error"]
    await nothing_published(observer)


@pytest.mark.parametrize(
    "params, body, field",
    [
        ({"current": "10001,x,10003"}, None, "current"),
        ({"voltage": "231,232"}, None, "voltage"),
        ({"import_wh": "abc"}, None, "import_wh"),
        ({}, b"{not json", "JSON"),
        ({}, b"[1, 2, 3]", "object"),
        ({}, b'{"import_wh": "12345"}', "import_wh"),
        ({}, b'{"voltage": [231, 232]}', "voltage"),
        ({}, b'{"frequency": 50}', "frequency"),
    ],
)
async def test_malformed_input_is_refused(
    api: Api,
    site: HttpInputBridge,
    observer: MqttObserver,
    params: dict[str, str],
    body: bytes | None,
    field: str,
) -> None:
    observer.clear()
    if body is None:
        status, answer = await api.get(api.admin, cmd="set_ajax_meter", dev_id="M3", **params)
    else:
        status, answer = await post_json(api, body, api.admin, cmd="set_ajax_meter", dev_id="M3")
    assert status == 400
    assert isinstance(answer, dict) and field in answer["error"]
    await nothing_published(observer)


async def test_without_auth(api: Api, site: HttpInputBridge, observer: MqttObserver) -> None:
    observer.clear()
    status, answer = await post_json(
        api, SPEC_POST.encode(), None, cmd="set_ajax_meter", dev_id="M3"
    )
    assert status == 401 and "error" in answer
    wrong = basic_auth("admin", "not-the-password")
    status, _ = await api.post(EVSE_BODY, wrong, cmd="set_ajax_evse", dev_id="E1")
    assert status == 401
    await nothing_published(observer)


# -- the bridge alone, the test playing the core ---------------------------------------------


@contextlib.asynccontextmanager
async def lone_bridge(
    broker: BrokerAddress, base_topic: str, answer_timeout: float = 5.0
) -> AsyncIterator[HttpInputBridge]:
    bridge = HttpInputBridge(Topics(base_topic), answer_timeout=answer_timeout)
    bus = MqttBus(
        MqttTarget(host=broker.host, port=broker.port),
        client_id=f"test-http-{base_topic}",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
    )
    async with bus:
        await bus.wait_connected(10)
        bridge.attach(bus)
        yield bridge


def configure(observer: MqttObserver, base_topic: str, config: dict[str, Any]) -> None:
    topic = f"{base_topic}/devices/{config['dev_id']}/config"
    observer.publish(topic, json.dumps(config), retain=True)


def command(state_ts: float, current: int) -> str:
    return json.dumps(
        {
            "device_enabled": True,
            "charging_enabled": True,
            "paused": False,
            "charging_current": current,
            "ts": time.time(),
            "state_ts": state_ts,
        }
    )


async def test_each_request_gets_the_answer_for_its_own_state(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    async with lone_bridge(mqtt_broker, base_topic) as bridge:
        configure(observer, base_topic, E1)
        await wait_known(bridge, "E1")
        # An old retained command answers neither request.
        observer.publish(f"{base_topic}/devices/E1/command", command(1.0, 9999), retain=True)
        first = asyncio.create_task(bridge.set_ajax_evse("E1", {"state": 2}, from_query=False))
        second = asyncio.create_task(bridge.set_ajax_evse("E1", {"state": 3}, from_query=False))
        state_topic = f"{base_topic}/devices/E1/state"
        await observer.wait(state_topic, lambda m: len(observer.on(state_topic)) == 2)
        ts1, ts2 = (m.json()["ts"] for m in observer.on(state_topic))
        assert ts1 < ts2
        observer.publish(f"{base_topic}/devices/E1/command", command(ts1, 7000), retain=True)
        assert (await first)["charging_current"] == 7000
        assert not second.done()
        observer.publish(f"{base_topic}/devices/E1/command", command(ts2, 8000), retain=True)
        assert (await second)["charging_current"] == 8000
        observer.publish(f"{base_topic}/devices/E1/command", b"", retain=True)


async def test_a_newer_state_answers_older_requests(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    async with lone_bridge(mqtt_broker, base_topic) as bridge:
        configure(observer, base_topic, E1)
        await wait_known(bridge, "E1")
        first = asyncio.create_task(bridge.set_ajax_evse("E1", {"state": 2}, from_query=False))
        second = asyncio.create_task(bridge.set_ajax_evse("E1", {"state": 3}, from_query=False))
        state_topic = f"{base_topic}/devices/E1/state"
        await observer.wait(state_topic, lambda m: len(observer.on(state_topic)) == 2)
        ts2 = observer.on(state_topic)[1].json()["ts"]
        # The core coalesced both states into one run that used the second.
        observer.publish(f"{base_topic}/devices/E1/command", command(ts2, 6500))
        assert (await first)["charging_current"] == 6500
        assert (await second)["charging_current"] == 6500


async def test_no_answer_is_a_timeout_not_a_default(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    async with lone_bridge(mqtt_broker, base_topic, answer_timeout=0.3) as bridge:
        configure(observer, base_topic, E1)
        await wait_known(bridge, "E1")
        with pytest.raises(InputError) as caught:
            await bridge.set_ajax_evse("E1", {"state": 2}, from_query=False)
        assert caught.value.status == 504


async def test_modbus_devices_and_deleted_devices(
    mqtt_broker: BrokerAddress, observer: MqttObserver, base_topic: str
) -> None:
    async with lone_bridge(mqtt_broker, base_topic) as bridge:
        configure(observer, base_topic, {"dev_type": "evse_powerbrain", "dev_id": "E2"})
        configure(observer, base_topic, M3)
        await wait_known(bridge, "M3")
        await observer.roundtrip()
        observer.clear()
        with pytest.raises(InputError) as caught:
            await bridge.set_ajax_evse("E2", {}, from_query=False)
        assert caught.value.status == 400 and "evse_powerbrain" in caught.value.message
        # Deleted: the retained config is cleared.
        observer.publish(f"{base_topic}/devices/M3/config", b"", retain=True)
        while bridge.device_kind("M3") is not None:
            await asyncio.sleep(0.02)
        with pytest.raises(InputError) as caught:
            await bridge.set_ajax_meter("M3", {}, from_query=False)
        assert caught.value.status == 404
        await nothing_published(observer)
        observer.publish(f"{base_topic}/devices/E2/config", b"", retain=True)


# -- the standalone runner (`chargebus bridge http`) -----------------------------------------


async def test_run_http_bridge_needs_the_admin_password(settings: Settings) -> None:
    with pytest.raises(ValueError, match="admin password"):
        await run_http_bridge(settings.model_copy(update={"admin_password": None}), asyncio.Event())


async def test_standalone_bridge_with_the_core(
    api: Api, site: HttpInputBridge, settings: Settings, observer: MqttObserver, base_topic: str
) -> None:
    port = find_free_port()
    stop = asyncio.Event()
    bridge_settings = settings.model_copy(update={"http_port": port})
    runner = asyncio.create_task(run_http_bridge(bridge_settings, stop))
    url = f"http://127.0.0.1:{port}/cnf"
    try:
        async with aiohttp.ClientSession() as session:
            status, answer = await poll_until_known(session, url, api.admin)
            assert (status, answer) == (200, "ok")
            async with session.post(
                url,
                params={"cmd": "set_ajax_evse", "dev_id": "E1"},
                json=EVSE_BODY,
                headers=api.admin,
            ) as resp:
                assert resp.status == 200
                answer = await resp.json()
            # The answer may come back before the observer has seen the state it answers.
            await observer.roundtrip()
            states_e1 = observer.on(f"{base_topic}/devices/E1/state")
            ts = states_e1[-1].json()["ts"]
            seen = await observer.wait(
                f"{base_topic}/devices/E1/command", lambda m: m.json()["state_ts"] == ts
            )
            assert {k: seen.json()[k] for k in CONTROL_KEYS} == answer
            # A form body counts as parameters, as in the service.
            async with session.post(
                url,
                params={"cmd": "set_ajax_meter", "dev_id": "M3"},
                data={"import_wh": "777"},
                headers=api.admin,
            ) as resp:
                assert (resp.status, await resp.json()) == (200, "ok")
            seen = await observer.wait(
                f"{base_topic}/devices/M3/state", lambda m: m.json().get("import_wh") == 777
            )
            async with session.get(
                url, params={"cmd": "set_ajax_meter", "dev_id": "M3", "import_wh": "1"}
            ) as resp:
                assert resp.status == 401
                assert "WWW-Authenticate" in resp.headers
            async with session.get(
                url,
                params={"cmd": "set_ajax_meter", "dev_id": "M3"},
                headers=basic_auth("admin", "wrong"),
            ) as resp:
                assert resp.status == 401
            async with session.get(url, params={"cmd": "get_dev_info"}, headers=api.admin) as resp:
                assert resp.status == 400
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)


async def poll_until_known(
    session: aiohttp.ClientSession, url: str, auth: dict[str, str]
) -> tuple[int, Any]:
    """Until the standalone bridge serves and has learned M3 (a 404 publishes nothing)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            async with session.post(
                url,
                params={"cmd": "set_ajax_meter", "dev_id": "M3"},
                data=SPEC_POST,
                headers={"Content-Type": "application/json", **auth},
            ) as resp:
                if resp.status not in (404, 503):
                    return resp.status, await resp.json()
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, "the standalone bridge did not come up"
        await asyncio.sleep(0.05)
