"""Broker fixtures shared by all tests; see tests/broker.py for how a broker is chosen."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

import pytest

from tests.broker import (
    INSTALL_HINT,
    BrokerAddress,
    BrokerError,
    MosquittoBroker,
    broker_from_env,
    docker_engine_answers,
    find_free_port,
    find_mosquitto,
    session_broker,
)


def pytest_configure(config: pytest.Config) -> None:
    # A plain SIGTERM (a CI timeout, `kill`) would end pytest without teardown and leave
    # mosquitto running; as KeyboardInterrupt, pytest stops the brokers on its way out.
    if (signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            and threading.current_thread() is threading.main_thread()):
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _fail(message: str) -> NoReturn:
    """Fails the test with just ``message``: no traceback, no chained exception."""
    raise pytest.fail.Exception(message, pytrace=False) from None


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerAddress]:
    """One broker for the whole run. Tests share it: give each test its own topics, and
    clear retained messages you leave behind. ``mqtt_broker.restart()`` works only on a
    private mosquitto (``mqtt_broker.restartable``)."""
    with contextlib.ExitStack() as stack:
        try:
            address = stack.enter_context(session_broker(tmp_path_factory.mktemp("mosquitto")))
        except BrokerError as exc:
            _fail(f"no MQTT broker for the tests: {exc}")
        yield address


@pytest.fixture
def restartable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A mosquitto of this test's own, with ``.host``, ``.port``, ``.url``, ``.stop()`` and
    ``.start()``: start() after stop() brings it back on the same port, empty."""
    try:
        foreign = broker_from_env()
    except BrokerError as exc:
        _fail(str(exc))
    if foreign is not None:
        pytest.skip(f"MQTT_URL is set ({foreign.host}:{foreign.port}): can't restart that broker")
    binary = find_mosquitto()
    if binary is None:
        if docker_engine_answers():
            pytest.skip("a restartable broker needs the mosquitto binary: "
                        "run scripts/ensure-mosquitto.sh")
        _fail(INSTALL_HINT)
    broker = MosquittoBroker(tmp_path_factory.mktemp("restartable-mosquitto"), binary=binary)
    try:
        broker.start()
    except BrokerError as exc:
        _fail(f"could not start a private mosquitto: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port that was free when the test asked."""
    return find_free_port()
