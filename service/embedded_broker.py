"""The embedded broker, so that `chargebus run` and the demo work with nothing else running:
mosquitto as a managed child process (service/mosquitto_child.py), amqtt in-process only where
no mosquitto is installed. It listens on loopback (CHARGEBUS_EMBEDDED_BROKER_HOST/_PORT)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from service.mosquitto_child import MosquittoPortTaken, find_mosquitto, mosquitto_child
from service.settings import DEFAULT_EMBEDDED_BROKER_PORT, MqttTarget

log = logging.getLogger(__name__)


class BrokerPortTaken(RuntimeError):
    pass


class BrokerUnavailable(RuntimeError):
    """No broker can be started here; the message says what to install or set."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_port(host: str, port: int) -> int:
    """The configured port; if it is taken, say so. Only the default port falls back to a
    free one, so an explicitly configured port is never silently moved."""
    if port == 0:
        return free_port(host)
    if port_is_free(host, port):
        return port
    hint = (
        f"port {port} on {host} is taken, probably by an MQTT broker that is already "
        f"running. To use that broker instead, set CHARGEBUS_MQTT_URL=mqtt://{host}:{port} "
        f"(or --mqtt-url); to move the embedded broker, set CHARGEBUS_EMBEDDED_BROKER_PORT."
    )
    if port != DEFAULT_EMBEDDED_BROKER_PORT:
        raise BrokerPortTaken(hint)
    chosen = free_port(host)
    log.warning("%s Starting the embedded broker on free port %d instead.", hint, chosen)
    return chosen


# Where amqtt, the fallback, differs from mosquitto as the documented recipes meet it.
AMQTT_CAVEATS = (
    "no mosquitto binary found (looked on PATH, in /usr/sbin and /usr/local/sbin): the "
    "embedded broker is amqtt, in-process, which is only good for a first look. With it a "
    "QoS 0 publish directly followed by a disconnect (what mosquitto_pub does by default) may "
    "be lost, a new subscriber may get retained messages of topics it did not subscribe to, "
    "and some messages arrive twice, so several recipes of docs/mqtt.md do not work. Install "
    "mosquitto (scripts/ensure-mosquitto.sh, or apt-get install mosquitto) and start again, "
    "or set CHARGEBUS_MQTT_URL to a broker of your own"
)
# A port found free can be taken before mosquitto binds it; then another is chosen.
_PORT_TRIES = 3


@contextlib.asynccontextmanager
async def embedded_broker(host: str, port: int, workdir: Path) -> AsyncIterator[MqttTarget]:
    """The broker chargebus starts when no broker URL is set: mosquitto as a child process
    (its config in `workdir`), or, where no mosquitto is installed, amqtt with a warning."""
    binary = find_mosquitto()
    if binary is None:
        log.warning("%s", AMQTT_CAVEATS)
        async with amqtt_broker(host, port) as target:
            yield target
        return
    async with contextlib.AsyncExitStack() as stack:
        chosen = await _start_mosquitto(stack, binary, host, port, workdir)
        yield MqttTarget(host=host, port=chosen)


async def _start_mosquitto(
    stack: contextlib.AsyncExitStack, binary: str, host: str, port: int, workdir: Path
) -> int:
    for _ in range(_PORT_TRIES):
        # Raises BrokerPortTaken for a configured port that is taken (not the default one).
        chosen = choose_port(host, port)
        try:
            await stack.enter_async_context(mosquitto_child(binary, host, chosen, workdir))
        except MosquittoPortTaken as exc:
            log.info("embedded broker: %s meanwhile; choosing again", exc)
            continue
        return chosen
    raise BrokerPortTaken(f"no free port for the embedded broker after {_PORT_TRIES} tries")


@contextlib.asynccontextmanager
async def amqtt_broker(host: str, port: int) -> AsyncIterator[MqttTarget]:
    """amqtt in this process: the fallback where mosquitto is not installed."""
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # pragma: no cover - depends on the install extra
        raise BrokerUnavailable(
            "no MQTT URL is configured, no mosquitto is installed and neither is amqtt: "
            "install mosquitto (scripts/ensure-mosquitto.sh) or set CHARGEBUS_MQTT_URL"
        ) from exc
    chosen = choose_port(host, port)
    # amqtt logs every connection at INFO; our own log says what matters.
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{chosen}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    log.info("embedded broker: amqtt on %s:%d", host, chosen)
    try:
        yield MqttTarget(host=host, port=chosen)
    finally:
        await broker.shutdown()
