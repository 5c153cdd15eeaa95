"""Issue 13, the MQTT side (items 7-10): each test performs the attack through a real
mosquitto running the repository's secured config (mosquitto/mosquitto.conf, mosquitto/acl
and a password file from scripts/make-broker-passwd.sh; see test_secured_broker.py), with
chargebus on its core login, and asserts what the attacker achieved.

"Never applied" is shown without waiting for a timeout: after the refused messages the same
client sends an allowed one, and the core handles one client's messages in order, so once
the allowed one took effect the refused ones had their chance.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service import ha_link
from service.app import RunningService, running_service
from service.core.models import EvseConfig
from service.ha_discovery import discovery_messages
from service.settings import Settings
from tests.integration.conftest import ADMIN_PASSWORD, Api
from tests.integration.test_secured_broker import (
    BASE,
    BRIDGE,
    CORE,
    HOME,
    RoleClient,
    SecuredBroker,
    _require_mosquitto,
    make_passwd,
    marker,
)
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

WAIT = 10.0
E1 = f"{BASE}/devices/E1"
EVSE: dict[str, Any] = {"dev_type": "evse_ajax", "dev_id": "E1", "name": "Garage",
                        "min_charging_cur": 6000, "max_charging_cur": 16000}
METER: dict[str, Any] = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}


@pytest.fixture(scope="module")
def passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_passwd(tmp_path_factory.mktemp("passwd") / "passwd")


@pytest.fixture
def broker(tmp_path: Path, passwd: Path) -> Iterator[SecuredBroker]:
    _require_mosquitto()
    with SecuredBroker(tmp_path / "mosquitto", passwd) as running:
        yield running


def settings_for(broker: SecuredBroker, data_dir: Path) -> Settings:
    return Settings(
        mqtt_url=broker.url_for(CORE), http_host="127.0.0.1", http_port=0, data_dir=data_dir,
        base_topic=BASE, admin_password=ADMIN_PASSWORD, modbus_bridge=False,
    )


def publish_json(client: RoleClient, topic: str, body: Any, *, retain: bool = False) -> None:
    payload = json.dumps(body).encode()
    if retain:
        client._client.publish(topic, payload, qos=1, retain=True).wait_for_publish(WAIT)
    else:
        client.publish(topic, payload)


def evse(running: RunningService) -> EvseConfig:
    device = running.state.installation.devices["E1"]
    assert isinstance(device, EvseConfig)
    return device


async def applied(running: RunningService, what: str, check: Any) -> None:
    await eventually(lambda: bool(check(evse(running))), what)


# -- 7: set takes operational fields only ----------------------------------------------------


async def test_7_set_refuses_every_field_but_the_operational_ones(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    async with running_service(settings_for(broker, tmp_path / "data")) as running:
        await running.bus.wait_connected(WAIT)
        user_id = running.state.new_user_id()
        await running.state.set_user({"id": user_id, "name": "Anna"}, is_admin=True)
        await running.state.set_params({"devices": [METER, {**EVSE, "users": [user_id]}]})
        rejected = running.bus.stats.rejected
        with RoleClient(broker, HOME, []) as home:
            # A Modbus device at an address of the sender's choice; the PIN requirement gone;
            # an allowed field does not carry a refused one through.
            attacks: list[dict[str, Any]] = [
                {"dev_type": "evse_powerbrain", "address": "127.0.0.1:1502"},
                {"address": "127.0.0.1:1502"},
                {"users": []},
                {"max_charging_cur": 10000, "failsafe_current": 32000},
                {"group": 7},
            ]
            for attack in attacks:
                publish_json(home, f"{E1}/set", attack)
            publish_json(home, f"{E1}/set", {"max_charging_cur": 12000, "prio": 3})
            await applied(running, "the allowed set", lambda d: d.max_charging_cur == 12000)
        device = evse(running)
        assert (device.dev_type, device.address, device.users) == ("evse_ajax", "", [user_id])
        assert device.failsafe_current != 32000 and device.prio == 3
        # Each refusal is logged and counted.
        assert running.bus.stats.rejected - rejected >= 5


# -- 8: a retained set is not applied at the next start -------------------------------------


async def test_8_a_retained_set_does_not_undo_the_admins_correction_at_restart(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    settings = settings_for(broker, tmp_path / "data")
    with RoleClient(broker, HOME, []) as home:
        async with running_service(settings) as running:
            await running.bus.wait_connected(WAIT)
            await running.state.set_params({"devices": [METER, EVSE]})
            publish_json(home, f"{E1}/set", {"max_charging_cur": 10000}, retain=True)
            await applied(running, "the live set", lambda d: d.max_charging_cur == 10000)
            # The admin corrects it through /cnf.
            async with aiohttp.ClientSession() as session:
                api = Api(session, running.http_port)
                await api.set_params({"devices": [{"dev_id": "E1", "max_charging_cur": 16000}]})
        async with running_service(settings) as running:
            await running.bus.wait_connected(WAIT)
            # Sent after the core subscribed, so it arrives after the retained one.
            publish_json(home, f"{E1}/set", {"prio": 4})
            await applied(running, "the marker set", lambda d: d.prio == 4)
            assert evse(running).max_charging_cur == 16000
        home._client.publish(f"{E1}/set", b"", qos=1, retain=True).wait_for_publish(WAIT)


# -- 9: homeassistant/status cannot make the core flood the broker --------------------------


async def test_9_a_flood_of_online_announces_at_most_twice_per_interval(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    window = getattr(ha_link, "REANNOUNCE_MIN_S", 5.0)
    async with running_service(settings_for(broker, tmp_path / "data")) as running:
        await running.bus.wait_connected(WAIT)
        await running.state.set_params({"devices": [METER, EVSE]})
        state = running.state
        per_announce = sum(
            len(discovery_messages(BASE, state.installation.serialno, state.device_info(d)))
            for d in state.installation.devices
        )

        def configs(client: RoleClient) -> int:
            with client._lock:
                return sum(1 for t, _ in client.messages if t.endswith("/config"))

        with RoleClient(broker, HOME, ["homeassistant/#"]) as home:
            await eventually(lambda: configs(home) >= per_announce, "the retained configs")
            await asyncio.sleep(0.5)  # the rest of the retained ones, if any
            with home._lock:
                home.messages.clear()
            flood = 200
            for _ in range(flood):
                home._client.publish("homeassistant/status", b"online", qos=0)
            home.publish("homeassistant/status", b"online")  # QoS 1: the flood is out
            started = time.monotonic()
            # Home Assistant is answered: one announcement, at once or when the window ends.
            await eventually(lambda: configs(home) >= per_announce, "a re-announcement")
            # Then look for one window more: any further announcement would show by then.
            await asyncio.sleep(window + 1.0)
            seen = configs(home)
            elapsed = time.monotonic() - started
        print(f"{flood + 1} x online: {seen} discovery messages in {elapsed:.1f} s "
              f"({per_announce} per announcement)")
        assert seen <= 2 * per_announce


# -- 10: a bridge reports its own devices only -----------------------------------------------


def test_10_a_bridge_login_cannot_report_another_devices_state(broker: SecuredBroker) -> None:
    """bridge-modbus may publish the states of E1, E2 and M1 (mosquitto/acl); a faked reading
    for any other device, or for its status under another bridge's name, is dropped."""
    with (
        RoleClient(broker, CORE, [f"{BASE}/#"]) as core,
        RoleClient(broker, BRIDGE, []) as bridge,
    ):
        forged_grid, forged_status, own = marker(), marker(), marker()
        bridge.publish(f"{BASE}/devices/M2/state", forged_grid)
        bridge.publish(f"{BASE}/bridges/http/status", forged_status)
        bridge.publish(f"{BASE}/devices/M1/state", own)
        core.wait_for(f"{BASE}/devices/M1/state", own)
        assert core.got(f"{BASE}/devices/M2/state") == []
        assert core.got(f"{BASE}/bridges/http/status") == []


def test_10_the_quick_start_keeps_its_open_broker_on_loopback() -> None:
    """The embedded broker has no passwords (docs/security.md, "An open broker"): by default
    it, and the API, listen on loopback only."""
    fields = Settings.model_fields  # the defaults, whatever this environment sets
    assert fields["mqtt_url"].default is None  # the embedded broker
    assert fields["embedded_broker_host"].default == "127.0.0.1"
    assert fields["http_host"].default == "127.0.0.1"
