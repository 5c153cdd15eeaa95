"""The broker fixtures themselves: a real round trip through mosquitto, and a restart."""

from __future__ import annotations

import os
import queue
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.broker import (
    DEFAULT_MQTT_PORT,
    BrokerAddress,
    BrokerError,
    MosquittoBroker,
    broker_from_env,
    find_free_port,
    is_loopback,
    parse_mqtt_url,
)

TIMEOUT = 10.0


class Client:
    """A paho client on its own network thread, collecting what it receives."""

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:
        self.host, self.port = host, port
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2,
                                client_id=f"fixture-test-{uuid.uuid4().hex[:8]}")
        if username is not None:
            self.paho.username_pw_set(username, password)
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Any) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Any) -> None:
        if reason_codes and not any(code.is_failure for code in reason_codes):
            self.subscribed.set()

    def connect(self) -> None:
        self.paho.connect(self.host, self.port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), f"no CONNACK from {self.host}:{self.port}"

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"PUBACK for {topic} missing"

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.paho.subscribe(topic, qos=1)
        assert self.subscribed.wait(TIMEOUT), f"SUBACK for {topic} missing"

    def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)


@contextmanager
def connected(address: BrokerAddress | MosquittoBroker) -> Iterator[Client]:
    username = address.username if isinstance(address, BrokerAddress) else None
    password = address.password if isinstance(address, BrokerAddress) else None
    client = Client(address.host, address.port, username, password)
    client.connect()
    try:
        yield client
    finally:
        client.close()


def _refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _topic() -> str:
    return f"cbtest-fixture/{uuid.uuid4().hex[:10]}/retained"


@pytest.mark.integration
def test_retained_message_reaches_a_later_subscriber(mqtt_broker: BrokerAddress) -> None:
    topic = _topic()
    payload = b'{"power_w": 11000}'
    with connected(mqtt_broker) as publisher:
        publisher.publish(topic, payload, retain=True)
    try:
        with connected(mqtt_broker) as subscriber:
            subscriber.subscribe(topic)
            message = subscriber.next_message()
            assert message.topic == topic
            assert message.payload == payload
            assert message.retain
    finally:
        with connected(mqtt_broker) as cleaner:
            cleaner.publish(topic, b"", retain=True)
    with connected(mqtt_broker) as late:
        late.subscribe(topic)
        with pytest.raises(queue.Empty):
            late.next_message(timeout=0.5)


@pytest.mark.integration
def test_live_message_goes_from_publisher_to_subscriber(mqtt_broker: BrokerAddress) -> None:
    topic = _topic()
    with connected(mqtt_broker) as subscriber, connected(mqtt_broker) as publisher:
        subscriber.subscribe(topic)
        publisher.publish(topic, b"live")
        message = subscriber.next_message()
        assert (message.topic, message.payload, message.retain) == (topic, b"live", False)


@pytest.mark.integration
def test_session_broker_is_on_loopback_and_not_the_system_port(
    mqtt_broker: BrokerAddress,
) -> None:
    assert is_loopback(mqtt_broker.host)
    assert mqtt_broker.url.startswith("mqtt://")
    if mqtt_broker.restartable:  # our own mosquitto, not MQTT_URL's
        assert mqtt_broker.host == "127.0.0.1"
        assert mqtt_broker.port != DEFAULT_MQTT_PORT
        assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"


@pytest.mark.integration
def test_restartable_broker_comes_back_on_the_same_port(
    restartable_broker: MosquittoBroker,
) -> None:
    broker = restartable_broker
    port, url = broker.port, broker.url
    assert url == f"mqtt://127.0.0.1:{port}"
    topic = _topic()
    with connected(broker) as client:
        client.publish(topic, b"before", retain=True)

    broker.stop()
    assert not broker.running
    assert _refuses(broker.host, port)

    broker.start()
    assert broker.running
    assert (broker.port, broker.url) == (port, url)
    with connected(broker) as client:
        client.subscribe(topic)
        # Persistence is off: a restarted broker has forgotten retained messages.
        with pytest.raises(queue.Empty):
            client.next_message(timeout=0.5)
        client.publish(topic, b"after", retain=True)
    with connected(broker) as again:
        again.subscribe(topic)
        assert again.next_message().payload == b"after"


@pytest.mark.integration
def test_a_client_reconnects_after_a_broker_restart(restartable_broker: MosquittoBroker) -> None:
    topic = _topic()
    with connected(restartable_broker) as client:
        client.connected.clear()
        restartable_broker.stop()
        restartable_broker.start()
        # paho's loop reconnects by itself (1 s first back-off).
        assert client.connected.wait(TIMEOUT)
        client.subscribe(topic)
        client.publish(topic, b"back")
        assert client.next_message().payload == b"back"


@pytest.mark.integration
def test_stop_ends_the_process_and_is_idempotent(restartable_broker: MosquittoBroker) -> None:
    pid = restartable_broker.pid
    assert pid is not None
    restartable_broker.stop()
    restartable_broker.stop()
    assert restartable_broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.integration
def test_address_restart_goes_through_the_controller(restartable_broker: MosquittoBroker) -> None:
    address = restartable_broker.address
    old_pid = restartable_broker.pid
    address.restart()
    assert restartable_broker.running
    assert restartable_broker.pid != old_pid
    assert restartable_broker.address == address


def test_a_foreign_broker_cannot_be_restarted() -> None:
    address = parse_mqtt_url("mqtt://127.0.0.1:1999")
    assert not address.restartable
    with pytest.raises(BrokerError, match="can't be restarted"):
        address.restart()


def test_parse_mqtt_url_with_credentials() -> None:
    address = parse_mqtt_url("mqtt://user:p%40ss@127.0.0.1:1884")
    assert (address.host, address.port) == ("127.0.0.1", 1884)
    assert (address.username, address.password) == ("user", "p@ss")
    assert address.url == "mqtt://user:p%40ss@127.0.0.1:1884"
    assert "p@ss" not in repr(address)


def test_parse_mqtt_url_defaults_and_ipv6() -> None:
    assert parse_mqtt_url("mqtt://localhost").port == DEFAULT_MQTT_PORT
    v6 = parse_mqtt_url("tcp://[::1]:1885")
    assert (v6.host, v6.port, v6.username) == ("::1", 1885, None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1883", "mqtt://:1883", "mqtt://h:notaport"])
def test_parse_mqtt_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_mqtt_url(url)


def test_mqtt_url_must_be_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_URL", "mqtt://192.0.2.10:1883")
    with pytest.raises(BrokerError, match="loopback"):
        broker_from_env()
    monkeypatch.setenv("MQTT_URL", "  ")
    assert broker_from_env() is None
    monkeypatch.setenv("MQTT_URL", "mqtt://127.0.0.2:1999")
    assert broker_from_env() == BrokerAddress("127.0.0.2", 1999, "mqtt://127.0.0.2:1999")


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.1") and not is_loopback("10.0.0.1")


def test_find_free_port_can_be_bound(free_port: int) -> None:
    assert 0 < free_port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port))
    assert find_free_port() > 0


def test_free_ports_are_distinct_and_outside_the_range_of_outgoing_connections() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(v) for v in f.read().split())
    ports = [find_free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports), (low, high)
