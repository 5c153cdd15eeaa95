"""The secured broker setup, enforced by a real mosquitto.

The broker runs THIS repository's mosquitto/mosquitto.conf (only the listener, the file paths
and logging rewritten for a temporary directory), mosquitto/acl as it is, and a password file
made by scripts/make-broker-passwd.sh, so what passes here holds for docker-compose.yml.

A denied publish is dropped silently (MQTT 3.1.1 has no way to say no), so "never arrives" is
shown without waiting for a timeout: the same client publishes an allowed marker right after,
and mosquitto delivers one client's messages in order. Once the marker is in, anything denied
would have been in before it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from service.app import running_service
from service.settings import Settings
from tests.broker import MosquittoBroker, find_free_port, find_mosquitto
from tests.integration.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_CONF = REPO / "mosquitto" / "mosquitto.conf"
ACL = REPO / "mosquitto" / "acl"
PASSWD_RECIPE = REPO / "scripts" / "make-broker-passwd.sh"

# BRIDGE: the Modbus bridge's own login; mosquitto/acl lets it report E1, E2 and M1 only.
CORE, BRIDGE, HOME = "chargebus-core", "bridge-modbus", "home-automation"
PASSWORDS = {CORE: "core-pw-1", BRIDGE: "bridge-pw-2", HOME: "home-pw-3"}
PASSWORD_VARS = {
    CORE: "CHARGEBUS_CORE_MQTT_PASSWORD",
    BRIDGE: "CHARGEBUS_BRIDGE_MODBUS_MQTT_PASSWORD",
    HOME: "CHARGEBUS_HA_MQTT_PASSWORD",
}
BASE = "chargebus"  # what mosquitto/acl is written for; the broker is private
WAIT = 10.0

pytestmark = pytest.mark.integration


# -- the config, derived from the real file (pure) ------------------------------------------


@dataclass(frozen=True)
class TlsListener:
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class BrokerPaths:
    passwd: Path
    acl: Path
    data_dir: Path
    log: Path


def derive_config(
    conf: str, port: int, paths: BrokerPaths, tls: TlsListener | None, as_root: bool
) -> str:
    """mosquitto.conf with only what ties it to the container rewritten. Each rewritten line
    must be there exactly once, so a reshaped mosquitto.conf fails here instead of being
    replaced by something else unnoticed."""
    rewrites = {
        r"listener 1883": f"listener {port} 127.0.0.1",
        r"password_file /mosquitto/config/passwd": f"password_file {paths.passwd}",
        r"acl_file /mosquitto/config/acl": f"acl_file {paths.acl}",
        r"persistence_location /mosquitto/data/": f"persistence_location {paths.data_dir}/",
        r"log_dest stdout": f"log_dest file {paths.log}",
    }
    if tls is not None:
        rewrites |= {
            r"#listener 8883": f"listener {tls.port} 127.0.0.1",
            r"#cafile \S+": f"cafile {tls.ca_file}",
            r"#certfile \S+": f"certfile {tls.cert_file}",
            r"#keyfile \S+": f"keyfile {tls.key_file}",
        }
    for pattern, replacement in rewrites.items():
        conf, count = re.subn(rf"^{pattern}$", replacement, conf, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"mosquitto.conf has {count} lines like {pattern!r}, expected 1")
    if as_root:
        # As root, mosquitto would switch to user "mosquitto", who can't read a private
        # temporary directory.
        conf += "\nuser root\n"
    return conf


class SecuredBroker(MosquittoBroker):
    """tests.broker's process handling, with the repository's config instead of its own."""

    def __init__(self, workdir: Path, passwd: Path, tls: TlsListener | None = None) -> None:
        super().__init__(workdir)
        self.passwd = passwd
        self.tls = tls

    def _config(self, port: int) -> str:
        paths = BrokerPaths(self.passwd, ACL, self.workdir / "data", self.log_path)
        paths.data_dir.mkdir(exist_ok=True)
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        return derive_config(MOSQUITTO_CONF.read_text(), port, paths, self.tls, as_root)

    def url_for(self, user: str, *, password: str | None = None) -> str:
        return f"mqtt://{user}:{password or PASSWORDS[user]}@{self.host}:{self.port}"


def make_passwd(target: Path) -> Path:
    """Runs the recipe as a user would, passwords from the environment."""
    env = {**os.environ, **{PASSWORD_VARS[user]: pw for user, pw in PASSWORDS.items()}}
    subprocess.run(
        [str(PASSWD_RECIPE), str(target)], env=env, check=True, capture_output=True, timeout=30
    )
    return target


# -- a paho client logged in as one role ---------------------------------------------------


def _client(user: str | None, password: str | None) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"test-{user}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    if user is not None:
        client.username_pw_set(user, password)
    return client


def connack(host: str, port: int, user: str | None, password: str | None) -> ReasonCode:
    """The broker's answer to a CONNECT with these credentials."""
    client = _client(user, password)
    answers: queue.Queue[ReasonCode] = queue.Queue()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        answers.put(rc)

    client.on_connect = on_connect
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        return answers.get(timeout=WAIT)
    finally:
        client.disconnect()
        client.loop_stop()


class RoleClient:
    """Logs in as `user`, subscribes, records what arrives, publishes at QoS 1."""

    def __init__(self, broker: SecuredBroker, user: str, subscriptions: list[str]) -> None:
        self._client = _client(user, PASSWORDS[user])
        self._broker = broker
        self._subscriptions = subscriptions
        self._ready = threading.Event()
        self._lock = threading.Condition()
        self.connect_result: ReasonCode | None = None
        self.granted: list[ReasonCode] = []
        self.messages: list[tuple[str, bytes]] = []
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connect_result = rc
        if rc.is_failure or not self._subscriptions:
            self._ready.set()
            return
        c.subscribe([(topic, 1) for topic in self._subscriptions])

    def _on_subscribe(
        self, c: mqtt.Client, u: Any, mid: int, codes: list[ReasonCode], p: Any
    ) -> None:
        self.granted = codes
        self._ready.set()

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._lock.notify_all()

    def __enter__(self) -> Self:
        self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(WAIT):
            self.__exit__(None, None, None)
            raise TimeoutError("no CONNACK/SUBACK from the broker")
        assert self.connect_result is not None and not self.connect_result.is_failure
        assert not any(code.is_failure for code in self.granted), self.granted
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        # A denied publish is still acknowledged, so this returns either way.
        self._client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def wait_for(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: (topic, payload) in self.messages, WAIT):
                raise TimeoutError(f"{payload!r} never arrived on {topic}; saw {self.messages}")

    def got(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]


def marker() -> bytes:
    return uuid.uuid4().hex.encode()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_passwd(tmp_path_factory.mktemp("passwd") / "passwd")


def _require_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.fail("no mosquitto binary: run scripts/ensure-mosquitto.sh", pytrace=False)


@pytest.fixture
def broker(tmp_path: Path, passwd: Path) -> Iterator[SecuredBroker]:
    # One per test: the service test's retained status must not meet another test's.
    _require_mosquitto()
    with SecuredBroker(tmp_path / "mosquitto", passwd) as running:
        yield running


# -- logins ----------------------------------------------------------------------------------


def test_anonymous_connect_is_refused(broker: SecuredBroker) -> None:
    assert connack(broker.host, broker.port, None, None).is_failure


def test_wrong_password_is_refused(broker: SecuredBroker) -> None:
    assert connack(broker.host, broker.port, CORE, "not-the-password").is_failure
    assert connack(broker.host, broker.port, "nobody", PASSWORDS[CORE]).is_failure


def test_every_role_logs_in_with_its_password(broker: SecuredBroker) -> None:
    for user, password in PASSWORDS.items():
        assert not connack(broker.host, broker.port, user, password).is_failure, user


# -- the ACL ---------------------------------------------------------------------------------

COMMAND = f"{BASE}/devices/E1/command"
STATE = f"{BASE}/devices/E1/state"
SET = f"{BASE}/devices/E1/set"
INFO = f"{BASE}/devices/E1/info"


def test_home_automation_can_neither_command_nor_report_state(broker: SecuredBroker) -> None:
    with (
        RoleClient(broker, CORE, [f"{BASE}/#"]) as core,
        RoleClient(broker, HOME, []) as home,
    ):
        forged_command, forged_state, allowed = marker(), marker(), marker()
        home.publish(COMMAND, forged_command)
        home.publish(STATE, forged_state)
        home.publish(SET, allowed)
        core.wait_for(SET, allowed)
        assert core.got(COMMAND) == []
        assert core.got(STATE) == []


def test_bridge_reports_state_but_cannot_command(broker: SecuredBroker) -> None:
    with (
        RoleClient(broker, CORE, [f"{BASE}/#"]) as core,
        RoleClient(broker, BRIDGE, []) as bridge,
    ):
        forged_command, state = marker(), marker()
        bridge.publish(COMMAND, forged_command)
        bridge.publish(STATE, state)
        core.wait_for(STATE, state)
        assert core.got(COMMAND) == []


def test_core_commands_reach_the_bridge(broker: SecuredBroker) -> None:
    with (
        RoleClient(broker, BRIDGE, [f"{BASE}/devices/+/command"]) as bridge,
        RoleClient(broker, CORE, []) as core,
    ):
        command = marker()
        core.publish(COMMAND, command)
        bridge.wait_for(COMMAND, command)


def test_home_automation_reads_only_what_is_meant_for_it(broker: SecuredBroker) -> None:
    # A subscription to the whole tree is granted; the ACL filters each message on delivery.
    with (
        RoleClient(broker, HOME, [f"{BASE}/#"]) as home,
        RoleClient(broker, CORE, [f"{BASE}/devices/+/state"]) as core,
        RoleClient(broker, BRIDGE, []) as bridge,
    ):
        state, info = marker(), marker()
        bridge.publish(STATE, state)
        core.wait_for(STATE, state)
        # Published after the broker has routed the state, so it reaches home after it.
        core.publish(INFO, info)
        home.wait_for(INFO, info)
        assert home.got(STATE) == []


# -- chargebus itself against the secured broker ---------------------------------------------


def _settings(url: str, data_dir: Path, ca_file: Path | None = None) -> Settings:
    return Settings(
        mqtt_url=url,
        http_host="127.0.0.1",
        http_port=0,
        data_dir=data_dir,
        base_topic=BASE,
        admin_password="test-admin-pw",
        mqtt_ca_file=ca_file,
    )


async def _status_goes_online_then_offline(broker: SecuredBroker, settings: Settings) -> None:
    status = f"{BASE}/status"
    with RoleClient(broker, HOME, [status]) as home:
        async with running_service(settings) as running:
            await running.bus.wait_connected(WAIT)
            await asyncio.to_thread(home.wait_for, status, b"online")
        # The goodbye on leaving passes the ACL too (core writes status).
        await asyncio.to_thread(home.wait_for, status, b"offline")


async def test_chargebus_core_runs_on_the_secured_broker(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    url = broker.url_for(CORE)
    await _status_goes_online_then_offline(broker, _settings(url, tmp_path / "data"))


async def test_the_in_process_bridges_work_on_the_core_login(
    broker: SecuredBroker, tmp_path: Path
) -> None:
    """`chargebus run` hosts the HTTP-input bridge on the core's login: its states must pass
    the ACL, or set_ajax_evse would never hear the core's answer."""
    settings = _settings(broker.url_for(CORE), tmp_path / "data")
    async with running_service(settings) as running:
        await running.bus.wait_connected(WAIT)
        state = running.state
        await state.set_params({"devices": [{"dev_type": "evse_ajax", "dev_id": "E1"}]})
        bridge = running.http_input
        assert bridge is not None
        await eventually(lambda: bridge.device_kind("E1") == "evse", "the bridge knows E1")
        answer = await bridge.set_ajax_evse("E1", {"state": 2}, from_query=False)
        assert answer["device_enabled"] is True
        assert state.runtime["E1"].state is not None


# -- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsCerts:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_test_ca(directory: Path) -> TlsCerts:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI (the
    `cryptography` package is not a dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl CLI (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=chargebus test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for step in steps:
        subprocess.run([openssl, *map(str, step)], check=True, capture_output=True, timeout=30)
    return TlsCerts(ca_crt, crt, key)


@pytest.fixture
def tls_broker(tmp_path: Path, passwd: Path) -> Iterator[SecuredBroker]:
    _require_mosquitto()
    ca = make_test_ca(tmp_path / "certs")
    tls = TlsListener(find_free_port(), ca.ca_file, ca.cert_file, ca.key_file)
    with SecuredBroker(tmp_path / "mosquitto", passwd, tls) as running:
        yield running


async def test_chargebus_connects_over_tls_with_its_ca_file(
    tls_broker: SecuredBroker, tmp_path: Path
) -> None:
    tls = tls_broker.tls
    assert tls is not None
    url = f"mqtts://{CORE}:{PASSWORDS[CORE]}@127.0.0.1:{tls.port}"
    settings = _settings(url, tmp_path / "data", ca_file=tls.ca_file)
    target = settings.mqtt_target()
    assert target is not None and target.tls
    # The observer stays on the plain listener: status arriving there crossed the TLS one.
    await _status_goes_online_then_offline(tls_broker, settings)


# -- TLS settings (no broker) ----------------------------------------------------------------


def test_tls_files_are_refused_with_a_plain_mqtt_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not checked here")
    with pytest.raises(ValidationError, match="mqtts://"):
        Settings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_ca_file=ca)


def test_a_missing_tls_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        Settings(mqtt_url="mqtts://127.0.0.1", mqtt_ca_file=tmp_path / "absent.crt")


def test_a_client_key_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("not checked here")
    with pytest.raises(ValidationError, match="mqtt_cert_file"):
        Settings(mqtt_url="mqtts://127.0.0.1", mqtt_key_file=key)


def test_derive_config_notices_a_reshaped_mosquitto_conf(tmp_path: Path) -> None:
    paths = BrokerPaths(tmp_path / "p", tmp_path / "a", tmp_path / "d", tmp_path / "l")
    with pytest.raises(ValueError, match="listener 1883"):
        derive_config("listener 1884\n", 1, paths, None, as_root=False)
