"""The OCPP listener from an attacker's side: unknown ids and wrong passwords are refused as
HTTP answers before any websocket exists, parallel guessing is throttled, hostile frames
close the connection or are answered without harm, TLS (security profile 2) works.

The bridge runs alone on a real mosquitto; the test plays the core by publishing the
retained device configs (with the password's verifier, as the core does)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridges.ocpp.bridge import OcppBridge
from bridges.ocpp.runner import ocpp_bridge
from service.auth import FailureThrottle
from service.core.dev_info import redact_device
from service.core.models import EvseConfig
from service.core.throttle import Rates
from service.settings import Settings
from tests.broker import BrokerAddress
from tests.integration.mqtt_observer import MqttObserver
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

KEY_HEX = "000102030405060708090a0b0c0d0e0f10111213"  # a 20-byte AuthorizationKey as hex


def configure(observer: MqttObserver, base: str, dev_id: str, cp_id: str, password: str) -> None:
    """What the core publishes for an evse_ocpp device (redact_device: verifier, no password)."""
    config = EvseConfig(dev_type="evse_ocpp", dev_id=dev_id, address=cp_id, ocpp_password=password)
    payload = json.dumps(redact_device(config.model_dump()), separators=(",", ":"))
    assert password == "" or password not in payload
    observer.publish(f"{base}/devices/{dev_id}/config", payload, retain=True)


def auth(user: str, password: bytes) -> dict[str, str]:
    token = base64.b64encode(user.encode() + b":" + password).decode()
    return {"Authorization": f"Basic {token}"}


def has_stations(bridge: OcppBridge, count: int) -> Callable[[], bool]:
    return lambda: len(bridge.stations) == count


async def bridge_for(
    mqtt_broker: BrokerAddress,
    base_topic: str,
    throttle: FailureThrottle | None = None,
    **settings: Any,
) -> AsyncIterator[OcppBridge]:
    config = Settings(mqtt_url=mqtt_broker.url, base_topic=base_topic, ocpp_port=0, **settings)
    target = config.mqtt_target()
    assert target is not None
    async with ocpp_bridge(config, target, listen_at_once=True, throttle=throttle) as bridge:
        await bridge.listen()
        yield bridge


@pytest.fixture
async def bridge(
    mqtt_broker: BrokerAddress, base_topic: str, observer: MqttObserver
) -> AsyncIterator[OcppBridge]:
    configure(observer, base_topic, "E1", "OPEN-1", "")
    configure(observer, base_topic, "E2", "LOCKED-1", "s3cret-pass")
    configure(observer, base_topic, "E3", "KEYED-1", KEY_HEX)
    async for running in bridge_for(mqtt_broker, base_topic):
        await eventually(has_stations(running, 3), "the bridge knows the boxes")
        yield running


async def connect(
    bridge: OcppBridge, cp_id: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, aiohttp.ClientWebSocketResponse | None, aiohttp.ClientSession]:
    session = aiohttp.ClientSession()
    url = f"ws://127.0.0.1:{bridge.port}/ocpp/{cp_id}"
    try:
        ws = await session.ws_connect(url, protocols=("ocpp1.6",), headers=headers, **kw)
    except aiohttp.WSServerHandshakeError as exc:
        await session.close()
        return exc.status, None, session
    return 101, ws, session


async def test_unknown_ids_are_refused_before_the_upgrade(bridge: OcppBridge) -> None:
    for cp_id in ("NOBODY", "x" * 200, "%2e%2e", ""):
        status, ws, _ = await connect(bridge, cp_id)
        assert (status, ws) == (404, None), cp_id
    assert bridge.stats.refused_unknown == 4
    assert bridge.stats.connections == 0


async def test_passwords_raw_or_hex_and_nothing_else(bridge: OcppBridge) -> None:
    for cp_id, headers in [
        ("LOCKED-1", None),
        ("LOCKED-1", auth("LOCKED-1", b"wrong")),
        ("LOCKED-1", auth("OTHER", b"s3cret-pass")),  # the user must be the box's id
        ("LOCKED-1", {"Authorization": "Bearer s3cret-pass"}),
        ("KEYED-1", auth("KEYED-1", b"00010203")),
    ]:
        status, ws, session = await connect(bridge, cp_id, headers)
        assert (status, ws) == (401, None), (cp_id, headers)
    assert bridge.stats.refused_auth == 5
    accepted = [
        ("LOCKED-1", auth("LOCKED-1", b"s3cret-pass")),
        # The key as its 40 hex digits, and as the 20 raw bytes (with 0x00 bytes) they stand for.
        ("KEYED-1", auth("KEYED-1", KEY_HEX.encode())),
        ("KEYED-1", auth("KEYED-1", bytes.fromhex(KEY_HEX))),
        ("OPEN-1", None),
    ]
    for cp_id, headers in accepted:
        status, ws, session = await connect(bridge, cp_id, headers)
        assert status == 101 and ws is not None, cp_id
        await ws.close()
        await session.close()


async def test_parallel_guessing_is_throttled(bridge: OcppBridge) -> None:
    async def guess(n: int) -> int:
        status, _, session = await connect(bridge, "LOCKED-1", auth("LOCKED-1", f"g{n}".encode()))
        await session.close()
        return status

    statuses = await asyncio.gather(*(guess(n) for n in range(40)))
    assert statuses.count(429) >= 20, statuses
    assert set(statuses) <= {401, 429}
    # Over the budget even the right password is not checked: 429 with Retry-After.
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{bridge.port}/ocpp/LOCKED-1"
        async with session.get(url, headers=auth("LOCKED-1", b"s3cret-pass")) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            assert "try again" in (await response.json())["error"]


async def test_an_open_box_does_not_lift_the_shared_guess_limit(
    mqtt_broker: BrokerAddress, base_topic: str, observer: MqttObserver
) -> None:
    """Connecting to a box without a password checks no credential: it must not make the
    address trusted (which skips the shared bucket) nor refund its token. Rates where the
    shared bucket binds (10 guesses in all, no refill to speak of) and one address's does not."""
    configure(observer, base_topic, "E1", "OPEN-1", "")
    configure(observer, base_topic, "E2", "LOCKED-1", "s3cret-pass")
    rates = Rates(per_address=0.001, address_burst=100, total=0.001, total_burst=10)
    async for bridge in bridge_for(mqtt_broker, base_topic, FailureThrottle(rates)):
        await eventually(has_stations(bridge, 2), "the bridge knows the boxes")
        status, ws, session = await connect(bridge, "OPEN-1")
        assert status == 101 and ws is not None
        await ws.close()
        await session.close()

        async def guess(running: OcppBridge, n: int) -> int:
            status, _, session = await connect(
                running, "LOCKED-1", auth("LOCKED-1", f"g{n}".encode())
            )
            await session.close()
            return status

        statuses = await asyncio.gather(*(guess(bridge, n) for n in range(40)))
        # As without the open box: at most the shared burst is checked, the rest is refused.
        assert statuses.count(401) <= 10, statuses
        assert statuses.count(429) >= 30, statuses
        assert set(statuses) <= {401, 429}


async def test_plain_http_and_foreign_subprotocols_are_refused(bridge: OcppBridge) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{bridge.port}/ocpp/OPEN-1") as response:
            assert response.status == 400
            assert "websocket" in (await response.json())["error"]
        ws = await session.ws_connect(
            f"ws://127.0.0.1:{bridge.port}/ocpp/OPEN-1", protocols=("ocpp2.0.1",)
        )
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1002
    assert bridge.stats.refused_protocol == 1


async def test_hostile_frames(bridge: OcppBridge, observer: MqttObserver, base_topic: str) -> None:
    _, ws, session = await connect(bridge, "OPEN-1")
    assert ws is not None
    try:
        # Not OCPP at all, a CALL with no payload, an action nobody knows, absurd values:
        # none of it breaks the connection, every CALL with an id is answered.
        for frame in ("not json", "[]", '{"a":1}', "[2]", '[2,"x1","Heartbeat"]'):
            await ws.send_str(frame)
        await ws.send_str('[2,"u1","SelfDestruct",{}]')
        answer = json.loads((await ws.receive()).data)
        assert answer[0] == 4 and answer[1] == "u1" and answer[2] == "NotSupported"
        assert bridge.stats.rejected_frames == 5
        await ws.send_str(
            '[2,"m1","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"garbage",'
            '"sampledValue":[{"value":"1e999","measurand":"Current.Import","phase":"L1"},'
            '{"value":"NaN","measurand":"Power.Active.Import"},{"value":[1]}]}]}]'
        )
        answer = json.loads((await ws.receive()).data)
        assert answer == [3, "m1", {}]
        await ws.send_str('[2,"h1","Heartbeat",{}]')
        answer = json.loads((await ws.receive()).data)
        assert answer[0] == 3 and answer[1] == "h1" and "currentTime" in answer[2]
        state = await observer.wait(
            f"{base_topic}/devices/E1/state", lambda m: m.json().get("com_err") is False
        )
        assert state.json()["current"] == [0, 0, 0]
        # A frame over the limit closes the connection (1009, message too big).
        await ws.send_str('[2,"big","DataTransfer",{"data":"' + "x" * 100_000 + '"}]')
        message = await ws.receive()
        while message.type == aiohttp.WSMsgType.TEXT:
            message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await ws.close()
        await session.close()
    # A binary frame is no OCPP-J: closed with 1003.
    _, ws, session = await connect(bridge, "OPEN-1")
    assert ws is not None
    await ws.send_bytes(b"\x00\x01")
    message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1003
    await session.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_security_profile_2(
    mqtt_broker: BrokerAddress,
    base_topic: str,
    observer: MqttObserver,
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    configure(observer, base_topic, "E2", "LOCKED-1", "s3cret-pass")
    async for bridge in bridge_for(
        mqtt_broker, base_topic, ocpp_tls_cert_file=cert, ocpp_tls_key_file=key
    ):
        await eventually(has_stations(bridge, 1), "the bridge knows the box")
        client_tls = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"wss://127.0.0.1:{bridge.port}/ocpp/LOCKED-1",
                protocols=("ocpp1.6",),
                headers=auth("LOCKED-1", b"s3cret-pass"),
                ssl=client_tls,
            )
            assert ws.protocol == "ocpp1.6"
            await ws.close()
            with pytest.raises(aiohttp.ClientError):
                await session.ws_connect(
                    f"ws://127.0.0.1:{bridge.port}/ocpp/LOCKED-1", protocols=("ocpp1.6",)
                )
